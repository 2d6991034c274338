"""`bsmfusion train` for every model kind: read the tables, apply `train.max_train_samples`, say which class is
positive (`data.labels`; on stderr with progress on), and hand the rows to the trainer the kind registry names for
`model.fusion` (`kinds.get_kind(...).train`): a torch fusion
(`training.fit.train_neural`), a classical member (`classical.train.train_member`) or the ensemble
(`ensemble.train.train_ensemble`, which trains its members through the registry too). No trainer calls back here.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..config import Config
from ..data.io import as_frame
from ..data.labels import describe_positive
from ..kinds import TrainResult, TrainRun, get_kind
from ..progress import phase_lines, say
from .estimate import before_training


def train(cfg: Config, train_data: str | Path | pd.DataFrame, val_data: str | Path | pd.DataFrame,
          out_dir: str | Path, run: TrainRun | None = None, **settings) -> TrainResult:
    """Train the model `cfg` describes and write its bundle to `out_dir`.

    Args:
        cfg: a validated config; `model.fusion` picks the kind.
        train_data: training rows (a DataFrame or a .csv / .parquet / .jsonl path).
        val_data: validation rows (early stopping, calibration, the threshold; ensemble weights).
        out_dir: the bundle folder; checkpoints go to `<out_dir>.work/` until training succeeds.
        run: how the run goes (`kinds.TrainRun`: resume, progress, keep_work, log_every, callbacks, sign_key);
            `settings` replace single fields, e.g. `train(cfg, tr, va, out, progress=False)`. With `progress`,
            stderr gets a rough time estimate first and one line per phase (`progress.say`). Without a
            `sign_key`, `BSMFUSION_SIGN_KEY` (a PEM file's path or PEM text) signs the bundle when set.

    Returns:
        `kinds.TrainResult`.
    """
    from ..bundle import private_key
    from ..signing import SIGN_KEY_ENV, from_env

    run = TrainRun.of(run, **settings)
    source, _ = from_env(run.sign_key, "sign_key", SIGN_KEY_ENV)
    if source is not None:
        private_key(run.sign_key, env=True)  # read now: a bad key fails before training, not when the bundle is written
        run = TrainRun.of(run, sign_key=source)  # as given (a path or PEM text: plain data, as multi-process runs need)
    kind = get_kind(cfg.model.fusion)
    train_df, val_df = as_frame(train_data), as_frame(val_data)
    if cfg.train.max_train_samples and len(train_df) > cfg.train.max_train_samples:
        train_df = train_df.sample(n=cfg.train.max_train_samples, random_state=cfg.train.seed).reset_index(drop=True)
    positive = describe_positive(cfg, train_df)  # a data.positive_label that is no label fails here, before training
    with phase_lines(run.progress and os.environ.get("RANK", "0") == "0"):  # one process of a multi-process run
        if positive:
            say(positive)
        for line in before_training(cfg, train_df):
            say(line)
        return kind.train(cfg, train_df, val_df, Path(out_dir), run)
