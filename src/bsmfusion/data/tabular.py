"""Tabular preprocessing fitted on the training split only, serialisable to JSON.

Numerics: median imputation, a missing-indicator column for every column that had missing values in
training, standardisation (mean/std of the winsorised finite training values, so one 1e300 cannot
dominate), then clipping to ±`clip`; ±inf map to ±`clip`.
Categoricals: string values → integer ids, id 0 = missing, id 1 = unknown, 2.. = known values. A value is known
when it was seen at least `min_category_count` times in training (at most `max_categories` values, most frequent
first); rarer values get the unknown id in the training split too, so the unknown embedding row is trained on
real rows instead of meeting its first row at prediction time.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, show
from .dialogue import is_missing

MISSING_ID = 0
UNKNOWN_ID = 1


@dataclass
class NumericStats:
    median: float
    mean: float
    std: float
    had_missing: bool


@dataclass
class TabularPreprocessor:
    """Fitted state of the numeric and categorical columns only (text and label: `data.preprocess.RowPreprocessor`,
    which holds one of these); `transform` turns a DataFrame into (numeric, categorical) arrays."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    clip: float = 10.0
    max_categories: int = 1000
    min_category_count: int = 1
    numeric_stats: dict[str, NumericStats] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str], *,
            label: str | None = None, id_column: str | None = None, clip: float = 10.0,
            max_categories: int = 1000, min_category_count: int = 1) -> "TabularPreprocessor":
        """Learn medians, scales and vocabularies from the training frame only; values seen fewer than
        `min_category_count` times stay out of the vocabulary (→ the unknown id)."""
        for reserved, what in ((label, "label"), (id_column, "id")):
            if reserved is not None and reserved in (*numeric, *categorical):
                raise DataError(
                    f"column '{reserved}' is the {what} column and cannot be a tabular feature; remove it from data.numeric/data.categorical"
                )
        require_columns(frame, [*numeric, *categorical], "training data")
        if min_category_count < 1:
            raise DataError(f"data.min_category_count must be at least 1, got {min_category_count}; use 1 to keep every value")
        prep = cls(numeric=list(numeric), categorical=list(categorical), clip=clip, max_categories=max_categories,
                   min_category_count=min_category_count)
        for column in numeric:
            values = numeric_column(frame, column)
            finite = values[np.isfinite(values)]
            missing = bool(np.isnan(values).any())
            median, mean, std = robust_moments(finite)
            prep.numeric_stats[column] = NumericStats(median=median, mean=mean, std=std, had_missing=missing)
        for column in categorical:
            counts = pd.Series([category_key(v) for v in frame[column]], dtype=object).dropna().value_counts()
            frequent = counts[counts >= min_category_count]
            prep.vocab[column] = [str(v) for v in frequent.index[:max_categories]]
        return prep

    # ------------------------------------------------------------ transform
    @property
    def numeric_feature_names(self) -> list[str]:
        """Names of the numeric matrix columns: scaled numerics, then missing indicators."""
        indicators = [f"{c}__missing" for c in self.numeric if self.numeric_stats[c].had_missing]
        return [*self.numeric, *indicators]

    @property
    def numeric_dim(self) -> int:
        return len(self.numeric_feature_names)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes per categorical column (known values + missing + unknown)."""
        return [len(self.vocab[c]) + 2 for c in self.categorical]

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """→ numeric float32 N×numeric_dim, categorical int64 N×len(categorical)."""
        require_columns(frame, [*self.numeric, *self.categorical], "input data")
        n = len(frame)
        scaled, indicators = [], []
        for column in self.numeric:
            stats = self.numeric_stats[column]
            values = numeric_column(frame, column)
            missing = np.isnan(values)
            with np.errstate(over="ignore", invalid="ignore"):
                z = (np.where(missing, stats.median, values) - stats.mean) / stats.std
            z = np.clip(np.nan_to_num(z, nan=0.0, posinf=self.clip, neginf=-self.clip), -self.clip, self.clip)
            scaled.append(z)
            if stats.had_missing:
                indicators.append(missing.astype(np.float64))
        columns = scaled + indicators
        numeric = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((n, 0), np.float32)
        categorical = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, column in enumerate(self.categorical):
            index = {value: i + 2 for i, value in enumerate(self.vocab[column])}
            keys = [category_key(v) for v in frame[column]]
            categorical[:, j] = [MISSING_ID if k is None else index.get(k, UNKNOWN_ID) for k in keys]
        return numeric, categorical

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "clip": self.clip,
            "max_categories": self.max_categories,
            "min_category_count": self.min_category_count,
            "numeric_stats": {k: asdict(v) for k, v in self.numeric_stats.items()},
            "vocab": self.vocab,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "TabularPreprocessor":
        return cls(
            numeric=list(state["numeric"]),
            categorical=list(state["categorical"]),
            clip=float(state["clip"]),
            max_categories=int(state["max_categories"]),
            min_category_count=int(state.get("min_category_count", 1)),  # absent in bundles written before it existed
            numeric_stats={k: NumericStats(**v) for k, v in state["numeric_stats"].items()},
            vocab={k: list(v) for k, v in state["vocab"].items()},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TabularPreprocessor":
        return cls.from_dict(json.loads(text))


def robust_moments(finite: np.ndarray) -> tuple[float, float, float]:
    """(median, mean, std) of finite training values, winsorised at the 0.5/99.5 percentiles.

    When outliers still make the moments overflow (e.g. many 1e300s), fall back to median and IQR/1.349.
    """
    if not finite.size:
        return 0.0, 0.0, 1.0
    median = float(np.median(finite))
    low, high = np.percentile(finite, [0.5, 99.5])
    bounded = np.clip(finite, low, high)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(bounded.mean()), float(bounded.std())
    if not (np.isfinite(mean) and np.isfinite(std)):
        q25, q75 = np.percentile(finite, [25, 75])
        mean, std = median, float((q75 - q25) / 1.349)
    if not np.isfinite(std) or std < 1e-12:
        std = 1.0
    return median, mean, std


def category_key(value: Any) -> str | None:
    """Canonical string of a categorical cell; None when missing. 3 and 3.0 map to the same key."""
    if is_missing(value):
        return None
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _non_numeric(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with missing → NaN, mask of cells that hold something that is not a number)."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(np.float64).to_numpy(), np.zeros(len(series), dtype=bool)
    converted = pd.to_numeric(series, errors="coerce").astype(np.float64)
    blank = series.map(lambda v: is_missing(v) or (isinstance(v, str) and not v.strip()))
    return converted.to_numpy(), (converted.isna() & ~blank).to_numpy()


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64; None/NaN/blank → NaN. A value that is not a number is a `DataError` naming the row."""
    values, bad = _non_numeric(frame[column])
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"column '{column}' row {position}: value {show(frame[column].iloc[position])} is not a number; "
            "fix the value, leave it empty, or list the column under data.categorical"
        )
    return values


def numeric_problems(frame: pd.DataFrame, columns: list[str]) -> dict[int, str]:
    """Row position → reason, for rows whose numeric cells are not numbers (used to keep such rows in predict output)."""
    problems: dict[int, str] = {}
    for column in columns:
        if column not in frame.columns:
            continue
        _, bad = _non_numeric(frame[column])
        for position in np.flatnonzero(bad):
            problems.setdefault(int(position), f"column '{column}': value {show(frame[column].iloc[position])} is not a number")
    return problems


def require_columns(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    """Raise a `DataError` naming the first missing column and the closest existing name."""
    import difflib

    for column in columns:
        if column not in frame.columns:
            close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; available columns: {', '.join(map(str, frame.columns[:20]))}"
            raise DataError(f"column '{column}' is missing from the {where}{hint}")
