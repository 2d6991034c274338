"""Checks at the entry of training: empty tables, duplicate ids, train/validation overlap, label leakage.

Errors are `DataError`s with one line naming the column, row and fix; doubtful-but-usable inputs are logged
as warnings (logger ``bsmfusion``), which the CLI prints as ``warning: ...``.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ..config import Config
from ..errors import DataError, show
from .tabular import category_key, numeric_column

log = logging.getLogger("bsmfusion")
LEAKAGE_AUC = 0.99


def check_not_empty(frame: pd.DataFrame, name: str) -> None:
    if frame is None or len(frame) == 0:
        raise DataError(f"the {name} data has no rows; pass a table with a header and at least one data row")


def check_unique_ids(frame: pd.DataFrame, cfg: Config, name: str) -> None:
    column = cfg.data.id
    if column is None or column not in frame.columns:
        return
    duplicated = frame[column].duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated)[:2].tolist()
        raise DataError(
            f"column '{column}' in the {name} data: id {show(frame[column].iloc[rows[0]])} appears more than once "
            f"(rows {rows[0]} and {rows[1]}); ids must be unique, or unset data.id"
        )


def warn_on_overlap(train: pd.DataFrame, val: pd.DataFrame, cfg: Config) -> int:
    """Warn when validation rows also appear in training (same id, or identical text and features)."""
    column = cfg.data.id
    if column is not None and column in train.columns and column in val.columns:
        shared = set(train[column]).intersection(val[column])
        what = f"share {len(shared)} id(s) in column '{column}'"
    else:
        features = [c for c in (*cfg.data.text, *cfg.data.numeric, *cfg.data.categorical) if c in train.columns and c in val.columns]
        key = lambda f: set(map(tuple, f[features].astype(str).itertuples(index=False, name=None)))  # noqa: E731
        shared = key(train).intersection(key(val))
        what = f"share {len(shared)} identical row(s)"
    if shared:
        log.warning("training and validation data %s: validation metrics and the threshold will be optimistic", what)
    return len(shared)


def warn_on_leakage(train: pd.DataFrame, val: pd.DataFrame, cfg: Config, label_names: list[str]) -> list[str]:
    """Warn, naming the column, when one feature alone separates the validation labels with ROC-AUC ≥ 0.99."""
    if len(label_names) != 2:
        return []
    positive = label_names[1]
    y_val = np.array([category_key(v) == positive for v in val[cfg.data.label]], dtype=int)
    if y_val.min() == y_val.max():
        return []
    flagged = []
    for column in cfg.data.numeric:
        values = numeric_column(val, column)
        score = np.where(np.isnan(values), np.nanmedian(values) if np.isfinite(values).any() else 0.0, values)
        score = np.nan_to_num(score, posinf=1e300, neginf=-1e300)
        auc = roc_auc_score(y_val, score)
        if max(auc, 1 - auc) >= LEAKAGE_AUC:
            flagged.append(column)
    y_train = np.array([category_key(v) == positive for v in train[cfg.data.label]], dtype=float)
    for column in cfg.data.categorical:
        keys_train = [category_key(v) for v in train[column]]
        means = pd.Series(y_train).groupby(pd.Series(keys_train, dtype=object).fillna("<missing>")).mean()
        keys_val = pd.Series([category_key(v) for v in val[column]], dtype=object).fillna("<missing>")
        score = keys_val.map(means).fillna(y_train.mean()).to_numpy()
        auc = roc_auc_score(y_val, score)
        if max(auc, 1 - auc) >= LEAKAGE_AUC:
            flagged.append(column)
    for column in flagged:
        log.warning("column '%s' alone separates the validation labels (ROC-AUC >= %.2f): check it is not derived "
                    "from the label (leakage); remove it from the features if it is", column, LEAKAGE_AUC)
    return flagged


def check_splits(train: pd.DataFrame, val: pd.DataFrame, cfg: Config) -> None:
    """The errors every trainer raises before fitting anything: empty tables, duplicate ids."""
    for frame, name in ((train, "training"), (val, "validation")):
        check_not_empty(frame, name)
        check_unique_ids(frame, cfg, name)


def warn_about_splits(train: pd.DataFrame, val: pd.DataFrame, cfg: Config, label_names: list[str]) -> None:
    """The warnings every trainer gives once the label names are known: shared rows, shared groups, leakage."""
    from .groups import group_digests, warn_on_group_overlap

    warn_on_overlap(train, val, cfg)
    if cfg.data.group:
        warn_on_group_overlap(group_digests(train, cfg.data.group), val, cfg.data.group, "validation")
    warn_on_leakage(train, val, cfg, label_names)


def split_meta(train: pd.DataFrame, cfg: Config) -> dict:
    """What a bundle keeps about its training split for later checks: digests (not values) of its groups."""
    from .groups import group_digests

    if not cfg.data.group:
        return {}
    import secrets

    salt = secrets.token_hex(8)
    return {"training_groups_salt": salt, "training_groups_sha256": sorted(group_digests(train, cfg.data.group, salt))}

