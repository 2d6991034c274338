"""The validation metrics of every epoch, kept for the bundle's meta.json (`validation_history`): whether a run was
still improving when it stopped is what decides if more epochs would help, and the best checkpoint alone hides it."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class ValidationHistory(pl.Callback):
    """One row per validation run: `{"epoch": 1-based, "step": optimiser steps done, "val_*": value, ...}` (with
    `train.checks_per_epoch` k, k rows an epoch).
    Saved in checkpoints, so a resumed run keeps the epochs before the interruption."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {name: round(float(value), 6) for name, value in sorted(trainer.callback_metrics.items())
                   if name.startswith("val_")}
        row = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, **metrics}
        self.rows = [r for r in self.rows if r["step"] != row["step"]] + [row]  # a re-run scoring replaces its row

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def monitor_mode(monitor: str) -> str:
    """`min` for a loss, `max` for every other validation metric: how early stopping, the best checkpoint and
    `best_epoch` rank epochs."""
    return "min" if "loss" in monitor else "max"


def best_row(rows: list[dict[str, Any]], monitor: str) -> dict[str, Any]:
    """The validation row whose `monitor` (e.g. `val_roc_auc`; a `*loss*` is minimised) is best; the earliest on a
    tie, as the best checkpoint keeps it."""
    scored = [row for row in rows if row.get(monitor) is not None]
    if not scored:
        raise ValueError(f"no validation row holds {monitor!r}: train at least one epoch with validation first")
    sign = 1.0 if monitor_mode(monitor) == "min" else -1.0
    return min(scored, key=lambda row: (sign * row[monitor], row["step"]))


def best_epoch(rows: list[dict[str, Any]], monitor: str) -> int:
    """The 1-based epoch of the best row (`best_row`; a scoring inside an epoch counts as that whole epoch): what
    a refit for a whole number of epochs trains for."""
    return best_row(rows, monitor)["epoch"]
