"""The validation metrics of every epoch, kept for the bundle's meta.json (`validation_history`): whether a run was
still improving when it stopped is what decides if more epochs would help, and the best checkpoint alone hides it."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class ValidationHistory(pl.Callback):
    """One row per validation run: `{"epoch": 1-based, "step": optimiser steps done, "val_*": value, ...}`.
    Saved in checkpoints, so a resumed run keeps the epochs before the interruption."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {name: round(float(value), 6) for name, value in sorted(trainer.callback_metrics.items())
                   if name.startswith("val_")}
        row = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, **metrics}
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]  # a re-run epoch replaces its row

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def monitor_mode(monitor: str) -> str:
    """`min` for a loss, `max` for every other validation metric: how early stopping, the best checkpoint and
    `best_epoch` rank epochs."""
    return "min" if "loss" in monitor else "max"


def best_epoch(rows: list[dict[str, Any]], monitor: str) -> int:
    """The 1-based epoch whose `monitor` (e.g. `val_roc_auc`; a `*loss*` is minimised) is best; the earliest on a
    tie, as the best checkpoint keeps it. What a refit for a fixed number of epochs trains for."""
    scored = [row for row in rows if row.get(monitor) is not None]
    if not scored:
        raise ValueError(f"no validation row holds {monitor!r}: train at least one epoch with validation first")
    sign = 1.0 if monitor_mode(monitor) == "min" else -1.0
    return min(scored, key=lambda row: (sign * row[monitor], row["epoch"]))["epoch"]
