"""Strict JSON for files other programs parse: NaN and ±infinity become `null` (plain `json.dumps` writes bare
`NaN`, which strict parsers such as `jq` or JavaScript's `JSON.parse` reject)."""
from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float (nested in dicts, lists and tuples) replaced by None and NumPy
    scalars turned into Python numbers."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # np.float32(nan), np.int64(3)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` of `finite(value)`, refusing anything that would still not be strict JSON."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
