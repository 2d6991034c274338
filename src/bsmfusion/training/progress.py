"""Training progress for logs: the Lightning callback that replaces the TQDM bar when the output is not a
terminal (nohup, CI, SLURM), writing one plain line every `log_every` seconds through `bsmfusion.progress`:

    train: epoch 2/3, 85/120 steps (71%), 31.2 samples/s, ETA 1m 12s, val_roc_auc 0.8123

plus one after every validation and a last one when training ends. Only rank 0 writes."""
from __future__ import annotations

import math
import sys
from typing import TextIO

import pytorch_lightning as pl

from ..progress import DEFAULT_LOG_EVERY, Progress, is_terminal


def use_terminal_bar() -> bool:
    """Lightning's live bar only when both stdout and stderr are terminals; otherwise `LogProgress` lines."""
    return is_terminal(sys.stdout) and is_terminal(sys.stderr)


class LogProgress(pl.Callback):
    """Epoch, optimiser steps done of the run's total, samples/s, ETA and the last value of `monitor` (the
    validation metric early stopping watches, named `shown_as`), as plain lines on `stream` (default stderr).

    The step total is Lightning's `estimated_stepping_batches` (epochs × steps per epoch): early stopping may end
    the run before it, the ETA is then an upper bound. samples/s counts training rows over wall time since the
    start, validation included. A resumed run counts from its checkpoint's step."""

    def __init__(self, monitor: str | None = None, *, log_every: float = DEFAULT_LOG_EVERY,
                 stream: TextIO | None = None, shown_as: str | None = None):
        self.monitor = monitor
        self.shown_as = shown_as or monitor  # `holdout_roc_auc` when the "validation" rows are a holdout
        self.log_every = log_every
        self.stream = stream
        self.progress: Progress | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        total = trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else None
        self.progress = Progress("train", total, unit="steps", rate_unit="samples", stream=self.stream,
                                 log_every=self.log_every, interactive=False, done=trainer.global_step)
        self._set_epoch(trainer)

    def _set_epoch(self, trainer) -> None:
        self.progress.lead = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.progress is None:
            return
        self._set_epoch(trainer)
        self.progress.update(trainer.global_step, items=len(batch))

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.progress is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is not None:
            self.progress.tail = f"{self.shown_as} {float(value):.4f}"
        self.progress.write()  # one line per validation, whatever the interval

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
