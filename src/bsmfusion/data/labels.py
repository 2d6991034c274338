"""The label column as users wrote it: which class is which id (the positive class of a binary task is id 1), and
the column's type, so predictions come back as the training labels were (integers stay integers).

Class order: `data.label_names` when set; else, binary with `data.positive_label`, the other class then that one;
else the label values sorted (numbers by value, before text), so the last one is the positive class. That rule is
said, not left to be found (`positive_class_line`): `train` prints it, evaluate's report and `GET /v1/model` carry it.

A label's type is one of `LABEL_TYPES`, read from the training column (`label_type`) and stored in the bundle's
preprocessing.json; a bundle written before it has none and keeps string labels (`typed_labels`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import DataError, show
from .tabular import category_key

LABEL_TYPES = ("str", "int", "float", "bool")
SORTED_RULE = "sorted last; set data.positive_label to choose"


def _sort_key(name: str) -> tuple[int, Any]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def label_keys(cfg: Config, frame: pd.DataFrame) -> list[str]:
    """Each row's label as its canonical string (`data.tabular.category_key`); a missing label is a `DataError`."""
    column = cfg.data.label
    keys = [category_key(v) for v in frame[column]]
    missing = [i for i, k in enumerate(keys) if k is None]
    if missing:
        raise DataError(f"column '{column}' row {missing[0]}: the label is missing; fill it or drop the row")
    return keys


def class_order(cfg: Config, train: pd.DataFrame) -> list[str]:
    """The class names in id order, from the training rows and the config (see the module docstring); one-line
    `DataError`s name the column or key and the labels found."""
    data = cfg.data
    seen = sorted(set(label_keys(cfg, train)), key=_sort_key)
    names = list(data.label_names) if data.label_names else seen
    unknown = sorted(set(seen) - set(names))
    if unknown:
        raise DataError(f"column '{data.label}': value {show(unknown[0])} is not in data.label_names {names}")
    if len(seen) < 2:
        raise DataError(f"column '{data.label}': the training data has a single class ({show(seen[0])}); a "
                        "classifier needs at least two")
    if data.positive_label is None:
        return names
    positive = category_key(data.positive_label)
    if positive not in names or len(names) != 2:
        what = "is not one of" if positive not in names else "needs exactly two classes, not"
        raise DataError(f"data.positive_label {show(data.positive_label)} {what} the labels found in column "
                        f"'{data.label}': {names}; set it to one of them")
    if data.label_names and names[1] != positive:
        raise DataError(f"data.positive_label {show(data.positive_label)} contradicts data.label_names {names} "
                        "(whose second name is the positive class); drop one of the two keys")
    return [next(n for n in names if n != positive), positive]


def label_type(series: pd.Series, names: list[str]) -> str:
    """The type predictions are given back in: `int`, `float`, `bool` or `str`, as the training column holds the
    labels; `str` when a class name would not convert back (a `data.label_names` entry no row has)."""
    if pd.api.types.is_bool_dtype(series):
        kind = "bool"
    elif pd.api.types.is_integer_dtype(series):
        kind = "int"
    elif pd.api.types.is_float_dtype(series):
        kind = "float"
    else:
        values = [v for v in series if v is not None]
        if values and all(isinstance(v, (bool, np.bool_)) for v in values):
            kind = "bool"
        elif values and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
            kind = "int"
        else:
            kind = "str"
    try:
        typed_labels(names, kind)
    except ValueError:
        return "str"
    return kind


def typed_labels(names: list[str], kind: str | None) -> list[Any]:
    """The class names as values of `kind` (None, a bundle written before label types: the names as they are);
    a name that does not convert is a `ValueError`."""
    if kind in (None, "str"):
        return list(names)
    if kind == "bool":
        if not set(names) <= {"True", "False"}:
            raise ValueError(f"labels {names} are not booleans")
        return [name == "True" for name in names]
    convert = int if kind == "int" else float
    return [convert(name) for name in names]


def pandas_dtype(kind: str | None) -> str | None:
    """The pandas dtype of a `predicted_label` column of `kind`: nullable, so a row that could not be scored stays
    empty without turning integers into floats; None for text (pandas' own inference, as for any text column)."""
    return {"int": "Int64", "float": "Float64", "bool": "boolean"}.get(kind or "str")


def positive_class_line(cfg: Config, names: list[str], values: list[Any] | None = None) -> str | None:
    """`positive class: 'legit' (sorted last; set data.positive_label to choose)`, or with the key that chose it;
    None for a multiclass task."""
    if len(names) != 2:
        return None
    shown = show((values or names)[1])
    return f"positive class: {shown} ({positive_class_reason(cfg)})"


def positive_class_reason(cfg: Config) -> str:
    """Why the positive class is the one it is: the key that chose it, or the sorting rule."""
    if cfg.data.positive_label is not None:
        return "data.positive_label"
    if cfg.data.label_names:
        return "second in data.label_names"
    return SORTED_RULE


def describe_positive(cfg: Config, train: pd.DataFrame) -> str | None:
    """`positive_class_line` for these training rows, checking `data.positive_label` against them first (a wrong
    one fails before anything trains); None for multiclass, or when the rows lack the label column or any row (the
    trainers' own checks say so)."""
    if cfg.data.label not in train.columns or not len(train):
        return None
    names = class_order(cfg, train)
    return positive_class_line(cfg, names, typed_labels(names, label_type(train[cfg.data.label], names)))
