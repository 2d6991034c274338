"""`bsmfusion train` for a classical member (`model.fusion: tfidf_lr | gbdt | catboost`, or any registered classical
kind).

Rows: the featurizers (TF-IDF, SVD), the tabular preprocessing and the models are fitted on the training rows
only; the validation rows choose tfidf_lr's C, stop gbdt's and catboost's boosting (unless `model.classical.cv_folds` chooses on
the training rows), and give the calibration and the decision threshold (`decision.fit_decision`, the same helper
as the neural models) and the validation metrics stored in the bundle.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..data.groups import group_codes
from ..data.preprocess import RowPreprocessor
from ..data.tabular import require_columns
from ..data.validation import split_meta
from ..decision import check_feasible, fit_decision
from ..errors import DataError
from ..evaluation.metrics import classification_metrics
from ..kinds import TrainResult, TrainRun, get_kind
from ..progress import stage
from .member import ClassicalData, ClassicalMember, table_preprocessor
from .storage import save_member, write_classical_bundle
from .tab_features import tab_matrix
from .text_features import render_frame

log = logging.getLogger("bsmfusion.train")


def prepare_labels(cfg: Config, train: pd.DataFrame, val: pd.DataFrame) -> tuple[RowPreprocessor, np.ndarray, np.ndarray]:
    """The entry checks of neural training (empty tables, duplicate ids, overlap, leakage), the tabular
    preprocessing fitted on `train`, and the label ids of both splits."""
    from ..data import validation

    validation.check_splits(train, val, cfg)
    text = list(cfg.data.text) if cfg.model.uses_text else []  # a member registered with uses_text=False reads none
    for frame, name in ((train, "training"), (val, "validation")):
        require_columns(frame, [*text, cfg.data.label], f"{name} data")
    preprocessor = table_preprocessor(cfg, train)
    validation.warn_about_splits(train, val, cfg, preprocessor.label_names)
    y_train, y_val = preprocessor.encode_labels(train), preprocessor.encode_labels(val)
    absent = sorted(set(range(cfg.model.num_classes)) - set(y_train.tolist()))
    if absent:
        raise DataError(f"column '{cfg.data.label}': class {preprocessor.label_names[absent[0]]!r} never occurs in the "
                        "training data; every class needs training rows")
    return preprocessor, y_train, y_val


def prepare(cfg: Config, train: pd.DataFrame, val: pd.DataFrame) -> ClassicalData:
    preprocessor, y_train, y_val = prepare_labels(cfg, train, val)
    groups = group_codes(train, cfg.data.group) if cfg.data.group else None
    def texts(frame: pd.DataFrame) -> list[str]:
        return render_frame(frame, cfg) if cfg.model.uses_text else [""] * len(frame)

    return ClassicalData(preprocessor, texts(train), texts(val),
                         tab_matrix(preprocessor.tabular, train), tab_matrix(preprocessor.tabular, val), y_train, y_val,
                         groups)


def fit_member(cfg: Config, data: ClassicalData) -> tuple[ClassicalMember, dict]:
    """Fit the classical member `cfg.model.fusion` names (its registered `ClassicalMember` class) on the splits."""
    return get_kind(cfg.model.fusion).member_class().fit(cfg, data)


def train_member(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: str | Path,
                 run: TrainRun = TrainRun()) -> TrainResult:
    """Train the classical member `cfg.model.fusion` and write its bundle to `out_dir` (the registry's trainer for
    the classical family; of `run` only `sign_key` is used: a member fits in one go, with nothing to resume or show).

    Returns:
        `TrainResult` (`epochs_run`: 1 for tfidf_lr, the boosting rounds kept for gbdt).
    """
    data = prepare(cfg, train_df, val_df)
    check_feasible(cfg.train.policy, data.y_val)
    kind = cfg.model.fusion
    with stage(f"{kind}: fitting on {len(train_df):,} training rows"):
        model, info = fit_member(cfg, data)
    log.info("%s: %s", cfg.model.fusion, {k: v for k, v in info.items() if not isinstance(v, list)})
    with stage(f"{kind}: scoring {len(val_df):,} validation rows, calibration and threshold"):
        fitted = fit_decision(cfg, data.y_val, model.score_frame(val_df))  # calibration, then the threshold
    threshold = fitted.threshold
    val_metrics = classification_metrics(data.y_val, fitted.scores.probs, threshold)
    meta = {"kind": cfg.model.fusion, "train_rows": len(train_df), "val_rows": len(val_df),
            "validation_precision": model.precision.to_json(), "training": info, **split_meta(train_df, cfg),
            **fitted.meta(), "versions": list(model.packages)}
    with stage(f"{kind}: writing the bundle {out_dir}"):
        write_classical_bundle(out_dir, cfg=cfg, preprocessor=data.preprocessor, threshold=threshold,
                               metrics={"validation": val_metrics}, meta=meta,
                               payload=lambda folder: save_member(model, folder), files=fitted.files(),
                               sign_key=run.sign_key)
    return TrainResult(Path(out_dir), threshold, val_metrics, int(info.get("rounds", 1)), out_of_fold=model.out_of_fold)
