"""What a resumable run was started with, kept beside its checkpoints, so `--resume` cannot continue them under
another config or on other rows (an ensemble's members included: `combine_on`, `member_holdout` or the first
member's epoch count change the rows or the schedule a member trains with).

`<work>/started_with.json` holds the config's values (minus the keys that do not change the trajectory of the
weights: `FREE_KEYS`) and a digest of the training and validation rows."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Config
from ..errors import ConfigError, DataError

FILE = "started_with.json"
# settings a resumed run may change: how batches are built and scored, checkpoint spacing, what happens after the
# weights are trained (calibration, decision, the ensemble's combination) and which other members there are
FREE_KEYS = frozenset({
    "train.num_workers", "train.eval_batch_size", "train.frozen_layer_cache_gib", "train.checkpoint_every_steps", "train.embedding_cache",
    "train.calibration", "train.decision", "model.ensemble.iterations", "model.ensemble.init_picks",
    "model.ensemble.bags", "model.ensemble.members", "model.ensemble.neural_seeds",
})


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in FREE_KEYS:
            out.update(_flat(value, name + "."))
        elif name not in FREE_KEYS:
            out[name] = value
    return out


def rows_digest(*frames: pd.DataFrame) -> str:
    """sha256 over the rows' values and column names, in order (index ignored)."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(json.dumps([str(c) for c in frame.columns]).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def started_with(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame) -> dict[str, Any]:
    return {"config": _flat(cfg.model_dump(mode="json")), "rows": rows_digest(train_df, val_df)}


def check_resume(work: Path, cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, resume: bool) -> None:
    """Resuming: refuse, in one line naming the first differing key (or the rows), when `work` was started with
    another config or on other rows; then (every run) record what this one starts with. A folder from before this
    record existed is resumed as it is."""
    current = started_with(cfg, train_df, val_df)
    path = Path(work) / FILE
    if resume and path.is_file():
        before = json.loads(path.read_text())
        keys = sorted(set(before["config"]) | set(current["config"]))
        changed = [k for k in keys if before["config"].get(k) != current["config"].get(k)]
        fix = "rerun with what it was started with, or with --overwrite (overwrite=True) to start again"
        if changed:
            key = changed[0]
            raise ConfigError(f"--resume: {work} was started with {key}={before['config'].get(key)!r}, this run has "
                              f"{current['config'].get(key)!r}; {fix}")
        if before["rows"] != current["rows"]:
            raise DataError(f"--resume: {work} was started on other training or validation rows; {fix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{FILE}.{os.getpid()}.tmp")  # ranks of one run write the same text: atomic replace
    staging.write_text(json.dumps(current))
    os.replace(staging, path)
