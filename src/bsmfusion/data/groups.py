"""Groups (a buyer, a seller, an account) that recur across rows: overlap warnings and group-disjoint splits.

A model that recognises a person it saw in training looks better on that person's other threads than it will on
new people. `data.group` names the column; training warns when a group of the validation data also appears in
training, `evaluate` warns for the test data (the bundle keeps SHA-256 digests of the training groups, not the
values, salted per bundle), and `bsmfusion split` writes train/val/test files that share no group.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from ..errors import DataError

log = logging.getLogger("bsmfusion")


def _key(value) -> str | None:
    """A group value as text; missing values belong to no group (each such row stands alone)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 7 and 7.0 (a CSV column with gaps) are the same person
    return str(value)


def _require_column(frame: pd.DataFrame, column: str) -> None:
    if column not in frame.columns:
        raise DataError(f"column '{column}' (data.group) is missing from the data; add it or unset data.group")


def group_digests(frame: pd.DataFrame, column: str, salt: str = "") -> set[str]:
    """SHA-256 (first 16 hex digits) of `salt` + every distinct non-missing group value of `column`. A bundle uses a
    random salt of its own, so its digests cannot be matched against a list of hashed ids made elsewhere; low-entropy
    ids (numbers) can still be recovered by trying every value with that salt: this is not anonymisation."""
    _require_column(frame, column)
    keys = {_key(v) for v in frame[column]}
    return {hashlib.sha256((salt + k).encode("utf-8")).hexdigest()[:16] for k in keys if k is not None}


def warn_on_group_overlap(training_digests: set[str], frame: pd.DataFrame, column: str, name: str,
                          salt: str = "") -> int:
    """Warn when groups of `frame` (validation or test data) also appear in training; return how many."""
    if column not in frame.columns:
        return 0
    shared = len(training_digests & group_digests(frame, column, salt))
    if shared:
        log.warning("%d group(s) in column '%s' appear in both the training and the %s data: a model that recognises "
                    "them looks better than it is; split by group (bsmfusion split --group %s)", shared, column, name, column)
    return shared


def group_codes(frame: pd.DataFrame, column: str) -> np.ndarray:
    """`N` int64 group ids (0 … G−1, in order of first appearance) of `column`; a row without a group is a group of
    its own. What group-disjoint holdouts and cross-validation folds split on."""
    _require_column(frame, column)
    keys = [_key(v) for v in frame[column]]
    keys = [k if k is not None else f"\0row{i}" for i, k in enumerate(keys)]
    codes, _ = pd.factorize(pd.Series(keys, dtype=object))
    return codes.astype(np.int64)


def group_split(frame: pd.DataFrame, column: str, *, test_frac: float = 0.15, val_frac: float = 0.15,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test) with no group in two of them. Groups are shuffled with `seed` and dealt to test, then
    validation, until each holds at least its fraction of the ROWS; rows without a group are groups of one."""
    if column not in frame.columns:
        raise DataError(f"column '{column}' is not in the data; pass --group with one of: {', '.join(map(str, frame.columns[:20]))}")
    for value, what in ((test_frac, "--test-frac"), (val_frac, "--val-frac")):
        if not 0 <= value < 1:
            raise DataError(f"{what} {value} must be in [0, 1)")
    if test_frac + val_frac >= 1:
        raise DataError(f"--test-frac + --val-frac = {test_frac + val_frac:.2f} leaves no training rows; lower them")
    codes = group_codes(frame, column)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    sizes = np.bincount(codes, minlength=n_groups)
    order = np.random.default_rng(seed).permutation(n_groups)
    assignment = np.zeros(n_groups, dtype=np.int8)  # 0 train, 1 val, 2 test
    targets = ((2, test_frac * len(frame)), (1, val_frac * len(frame)))
    position, filled = 0, 0
    for split, target in targets:
        filled = 0
        while position < len(order) and filled < target:
            assignment[order[position]] = split
            filled += sizes[order[position]]
            position += 1
    row_split = assignment[codes]
    parts = tuple(frame[row_split == split].reset_index(drop=True) for split in (0, 1, 2))
    if len(parts[0]) == 0:
        raise DataError(f"column '{column}': too few groups ({n_groups}) to leave any for training; lower the fractions")
    return parts  # type: ignore[return-value]
