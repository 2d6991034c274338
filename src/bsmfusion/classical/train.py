"""`bsmfusion train` for `model.fusion: tfidf_lr | gbdt | ensemble` (called by `training.fit.train`).

Rows: the featurizers (TF-IDF, SVD), the tabular preprocessing and the models are fitted on the training rows
only; the validation rows choose tfidf_lr's C, stop gbdt's boosting, and give the calibration and the decision
threshold (`decision.fit_decision`, the same helper as the neural models) and the validation metrics stored in the
bundle.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..data.preprocess import RowPreprocessor
from ..data.groups import group_codes
from ..data.tabular import require_columns
from ..data.validation import split_meta
from ..errors import DataError
from ..decision import fit_decision
from ..evaluation.metrics import classification_metrics
from ..models.kinds import ENSEMBLE
from ..progress import DEFAULT_LOG_EVERY
from .member import ClassicalMember, table_preprocessor
from .storage import save_member, write_classical_bundle
from .tab_features import tab_matrix
from .text_features import render_frame

log = logging.getLogger("bsmfusion.train")


@dataclass
class ClassicalData:
    """Both splits, featurised as far as every member shares: rendered threads, tabular matrices, label ids."""

    preprocessor: RowPreprocessor
    train_texts: list[str]
    val_texts: list[str]
    train_tab: np.ndarray
    val_tab: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    train_groups: np.ndarray | None = None  # `data.group` codes: cross-validation folds keep each group whole


def prepare_labels(cfg: Config, train: pd.DataFrame, val: pd.DataFrame) -> tuple[RowPreprocessor, np.ndarray, np.ndarray]:
    """The entry checks of neural training (empty tables, duplicate ids, overlap, leakage), the tabular
    preprocessing fitted on `train`, and the label ids of both splits."""
    from ..data import validation

    validation.check_splits(train, val, cfg)
    for frame, name in ((train, "training"), (val, "validation")):
        require_columns(frame, [*cfg.data.text, cfg.data.label], f"{name} data")
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
    return ClassicalData(preprocessor, render_frame(train, cfg), render_frame(val, cfg),
                         tab_matrix(preprocessor.tabular, train), tab_matrix(preprocessor.tabular, val), y_train, y_val,
                         groups)


def sample_weights(cfg: Config, labels: np.ndarray) -> np.ndarray | None:
    """Per-row weights from `train.class_weight` (gbdt; tfidf_lr passes the setting to scikit-learn)."""
    from .tfidf_lr import class_weight_dict

    setting = class_weight_dict(cfg.train.class_weight, cfg.model.num_classes)
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(labels, minlength=cfg.model.num_classes).astype(np.float64)
        per_class = len(labels) / (cfg.model.num_classes * np.maximum(counts, 1.0))
    else:
        per_class = np.array([setting[k] for k in range(cfg.model.num_classes)])
    return per_class[labels]


def fit_member(cfg: Config, data: ClassicalData) -> tuple[ClassicalMember, dict[str, Any]]:
    """Fit `cfg.model.fusion` (tfidf_lr or gbdt) on the prepared splits."""
    args = (cfg, data.preprocessor.tabular, data.train_texts, data.train_tab, data.y_train, data.val_texts,
            data.val_tab, data.y_val)
    if cfg.model.fusion == "tfidf_lr":
        from .tfidf_lr import fit_tfidf_lr

        return fit_tfidf_lr(*args, groups=data.train_groups)
    from .gbdt import fit_gbdt

    return fit_gbdt(*args, sample_weight=sample_weights(cfg, data.y_train), groups=data.train_groups)


def train_classical(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: str | Path, *,
                    resume: bool = False, progress: bool = False, log_every: float = DEFAULT_LOG_EVERY, callbacks=()):
    """Train a classical member (or an ensemble) and write its bundle to `out_dir`.

    Args:
        cfg: the config; `model.fusion` is `tfidf_lr`, `gbdt` or `ensemble`.
        train_df: training rows (fit everything).
        val_df: validation rows (C, early stopping, ensemble weights, calibration, threshold).
        out_dir: the bundle folder to write.
        resume: ensemble only: resume the neural members from their last checkpoints.
        progress: ensemble only: the neural members' progress (`training.fit.train`).
        log_every: ensemble only: seconds between the neural members' progress lines when not on a terminal.
        callbacks: ensemble only: extra Lightning callbacks for the neural members' training.

    Returns:
        `training.fit.TrainResult` (`epochs_run`: 1 for tfidf_lr, the boosting rounds kept for gbdt).
    """
    from ..training.fit import TrainResult

    if cfg.model.fusion == ENSEMBLE:
        from .ensemble import train_ensemble

        return train_ensemble(cfg, train_df, val_df, out_dir, resume=resume, progress=progress, log_every=log_every,
                              callbacks=callbacks)
    data = prepare(cfg, train_df, val_df)
    model, info = fit_member(cfg, data)
    log.info("%s: %s", cfg.model.fusion, {k: v for k, v in info.items() if not isinstance(v, list)})
    fitted = fit_decision(cfg, data.y_val, model.score_frame(val_df))  # calibration, then the threshold
    threshold = fitted.threshold
    val_metrics = classification_metrics(data.y_val, fitted.scores.probs, threshold)
    meta = {"kind": model.kind, "train_rows": len(train_df), "val_rows": len(val_df),
            "validation_precision": model.precision.to_json(), "training": info, **split_meta(train_df, cfg),
            **fitted.meta()}
    write_classical_bundle(out_dir, cfg=cfg, preprocessor=data.preprocessor, threshold=threshold,
                           metrics={"validation": val_metrics}, meta=meta, payload=lambda folder: save_member(model, folder),
                           files=fitted.files())
    return TrainResult(Path(out_dir), threshold, val_metrics, int(info.get("rounds", 1)))
