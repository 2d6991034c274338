"""One row's explanation as a JSON-ready dict (what `bsmfusion explain` writes per line, `POST /v1/explain`
returns per row and the HTML page shows), and its short `top_messages` / `top_features` summaries."""
from __future__ import annotations

import json
import math
from typing import Any

from .attribution import Attribution


def plain(value: Any) -> Any:
    """A cell as JSON: numpy scalars to Python, NaN / missing to None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        if value != value:  # pandas.NA, NaT
            return None
    except (TypeError, ValueError):
        return None
    return str(value)


def row_record(attribution: Attribution, head: dict[str, Any], baseline: float) -> dict[str, Any]:
    """`head` (id, score, decision, ...) + the contributions and both games' values. Each message: index
    (0-based reading order), column, role, text, contribution, stderr; each feature: column, value, contribution,
    stderr (None for occlusion, which has none). `message_method` / `feature_method`: exact, sampled or occlusion,
    permutations, the largest standard error, occlusion's interaction remainder (`shapley.Estimate.describe`)."""
    m, f = attribution.message_estimate, attribution.feature_estimate
    return {
        **{k: plain(v) for k, v in head.items()},
        "text_contribution": attribution.text_contribution,
        "tab_contribution": attribution.tab_contribution,
        "baseline": float(baseline),
        "messages": [{"index": i, "column": p.column, "role": p.role, "text": p.text,
                      "contribution": float(m.values[i]), "stderr": plain(float(m.stderr[i]))}
                     for i, p in enumerate(attribution.messages)],
        "features": [{"column": c, "value": plain(v), "contribution": float(f.values[k]),
                      "stderr": plain(float(f.stderr[k]))}
                     for k, (c, v) in enumerate(zip(attribution.features, attribution.feature_values))],
        "message_method": m.describe(),
        "feature_method": f.describe(),
    }


def top(items: list[dict], count: int) -> list[dict]:
    """The `count` items with the largest |contribution|, largest first."""
    return sorted(items, key=lambda item: -abs(item["contribution"]))[:count]


def top_messages(record: dict, count: int = 3, chars: int = 60) -> str:
    """JSON: the top messages as {index, role, contribution (4 decimals), text (first `chars` characters)}."""
    return json.dumps([{"index": m["index"], "role": m["role"], "contribution": round(m["contribution"], 4),
                        "text": m["text"][:chars]} for m in top(record["messages"], count)], ensure_ascii=False)


def top_features(record: dict, count: int = 3) -> str:
    """JSON: the top features as {column, value, contribution (4 decimals)}."""
    return json.dumps([{"column": f["column"], "value": f["value"], "contribution": round(f["contribution"], 4)}
                       for f in top(record["features"], count)], ensure_ascii=False)


def with_top_columns(result, records: list[dict], count: int = 3):
    """`predict_frame`'s output with `top_messages` and `top_features` (JSON strings, "" for a row with an error)
    inserted before `error`."""
    result = result.copy()
    at = list(result.columns).index("error")
    result.insert(at, "top_messages", ["" if r.get("error") else top_messages(r, count) for r in records])
    result.insert(at + 1, "top_features", ["" if r.get("error") else top_features(r, count) for r in records])
    return result
