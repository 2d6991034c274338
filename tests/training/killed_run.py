"""Helper run as a subprocess by the resume tests: train with a callback that SIGKILLs the process at a given
optimiser step. bsmfusion itself holds no fault injection; the tests pass this callback in (`train(callbacks=...)`).

Usage: python tests/training/killed_run.py CONFIG TRAIN_CSV VAL_CSV OUT STEP
"""
from __future__ import annotations

import os
import signal
import sys

import pytorch_lightning as pl


class KillAfterStep(pl.Callback):
    """SIGKILL this process at the end of the first batch whose optimiser step count reaches `step`, before that
    batch's checkpoint callbacks (Lightning runs `ModelCheckpoint` last): the last checkpoint is an earlier one."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(config: str, train_csv: str, val_csv: str, out: str, step: str) -> None:
    from bsmfusion.config import load_config
    from bsmfusion.workflows.train import train

    train(load_config(config), train_csv, val_csv, out, progress=False, callbacks=[KillAfterStep(int(step))])


if __name__ == "__main__":
    main(*sys.argv[1:])
