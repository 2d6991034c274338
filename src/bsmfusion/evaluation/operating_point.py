"""What `evaluate` reports about decisions: the active policy's operating point on the evaluated rows with
bootstrap 95% intervals, the usual alternative policies (so a team can pick one from one report), and the
calibration before and after.

The intervals resample the evaluated rows (1,000 resamples, seed 0) at the fixed threshold: they show the
sampling noise of these rows, not that of the validation rows the threshold came from. Precision, recall, the
flagged fraction and the expected cost depend on a resample only through its four confusion counts, so each
resample draws those counts from the multinomial of the observed cells — the same distribution as redrawing rows,
at a cost independent of the row count.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import calibration_change
from ..decision import (Decision, choose_threshold, confusion_counts, confusion_rates, rates_at,
                        validation_scores)
from ..errors import ConfigError
from ..policy import Policy
from .metrics import expected_calibration_error

RESAMPLES = 1000
RECALL_TARGETS = (0.5, 0.8, 0.9)
REVIEW_BUDGETS = (0.01, 0.02, 0.05, 0.10)


def bootstrap_rates(labels: np.ndarray, probs: np.ndarray, threshold: float, policy: Policy | None = None,
                    resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict[str, float]]:
    """Each rate at `threshold`: {value, low, high} with a percentile bootstrap 95% interval over the rows."""
    counts = confusion_counts(labels, np.asarray(probs, dtype=np.float64) >= threshold)
    n = int(counts.sum())
    point = confusion_rates(*counts[:3], n, policy)
    if n == 0:
        return {name: {"value": value, "low": None, "high": None} for name, value in point.items()}
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples).astype(np.float64)
    again = confusion_rates(draws[:, 0], draws[:, 1], draws[:, 2], n, policy)
    out = {}
    for name, value in point.items():
        low, high = np.nanpercentile(again[name], [2.5, 97.5]) if np.isfinite(again[name]).any() else (np.nan, np.nan)
        out[name] = {"value": value, "low": float(low), "high": float(high)}
    return out


def operating_point(labels: np.ndarray, probs: np.ndarray, decision: Decision) -> dict[str, Any]:
    """The active decision on these rows: policy, threshold, rates with intervals, and where the point lies on
    the ROC curve (false positive rate) for the plots."""
    labels = np.asarray(labels, dtype=np.int64)
    rates = bootstrap_rates(labels, probs, decision.threshold, decision.policy)
    tp, fp, fn, tn = confusion_counts(labels, np.asarray(probs) >= decision.threshold)
    return {"policy": decision.policy.to_config(), "description": decision.describe(), "source": decision.source,
            "threshold": decision.threshold, **rates,
            "false_positive_rate": float(fp / (fp + tn)) if fp + tn else None,
            "validation": decision.validation}


def alternatives(labels: np.ndarray, probs: np.ndarray, validation: tuple[np.ndarray, np.ndarray] | None) -> list[dict]:
    """Recall ≥ 0.5 / 0.8 / 0.9 and review budgets 1 / 2 / 5 / 10%: each threshold chosen on the validation
    rows (`validation` = their labels and calibrated probabilities; these rows themselves when the bundle has
    none) and the precision, recall and flagged fraction it gives here."""
    source, (ref_labels, ref_probs) = ("validation", validation) if validation is not None else ("this data", (labels, probs))
    policies = [Policy("recall_at_least", r) for r in RECALL_TARGETS] + [Policy("review_budget", f) for f in REVIEW_BUDGETS]
    rows = []
    for policy in policies:
        row: dict[str, Any] = {"policy": policy.to_config(), "description": policy.describe(), "chosen_on": source}
        try:
            threshold = choose_threshold(policy, ref_labels, ref_probs, key="alternative")
        except ConfigError as err:
            rows.append({**row, "threshold": None, "note": str(err)})
            continue
        rows.append({**row, "threshold": threshold, **rates_at(labels, probs, threshold)})
    return rows


def simulated_ece(probs: np.ndarray, simulations: int = 200, seed: int = 0) -> float:
    """The mean ECE of a perfectly calibrated model with these probabilities on this many rows (labels drawn from
    the probabilities themselves): ECE's own sampling noise, for scale."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(probs):
        return float("nan")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    values = []
    for _ in range(simulations):
        drawn = (rng.uniform(size=(len(probs), 1)) > cumulative).sum(axis=1).clip(max=probs.shape[1] - 1)
        values.append(expected_calibration_error(drawn, probs))
    return float(np.mean(values))


def calibration_report(labels: np.ndarray, scores, calibration) -> dict[str, Any]:
    """The bundle's calibration and, on these rows, ECE and log loss of the model's own probabilities (before)
    and of the calibrated ones (after), with the ECE a perfectly calibrated model would show here."""
    before = scores.uncalibrated_probs if scores.uncalibrated_probs is not None else scores.probs
    return {**calibration.to_json(), "description": calibration.describe(),
            **calibration_change(labels, before, scores.probs),
            "ece_if_perfectly_calibrated": simulated_ece(scores.probs)}


def decision_report(predictor, labels: np.ndarray, scores) -> dict[str, Any]:
    """metrics.json entries: `calibration`, and for binary models `operating_point` and `alternatives`."""
    out: dict[str, Any] = {"calibration": calibration_report(labels, scores, predictor.calibration)}
    for knots in ("knots_log_odds", "knots_probability"):  # the map itself lives in the bundle's meta.json
        out["calibration"].pop(knots, None)
    if scores.probs.shape[1] == 2 and predictor.threshold is not None:
        positive = np.asarray(scores.probs[:, 1], dtype=np.float64)
        out["operating_point"] = operating_point(labels, positive, predictor.decision)
        out["alternatives"] = alternatives(labels, positive, validation_scores(predictor.bundle))
    return out


def _fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def decision_markdown(metrics: dict[str, Any]) -> str:
    """The report's sections on the operating point, the alternatives and the calibration."""
    parts = []
    point = metrics.get("operating_point")
    if point:
        names = ["precision", "recall", "flagged_fraction"] + (["expected_cost"] if "expected_cost" in point else [])
        rows = "\n".join(f"| {name} | {_fmt(point[name]['value'])} | {_fmt(point[name]['low'])} – "
                         f"{_fmt(point[name]['high'])} |" for name in names)
        parts.append(f"## Operating point\n\nPolicy: {point['description']} ({point['source']}). Intervals: bootstrap "
                     f"95% over these rows at this threshold.\n\n| measure | value | 95% interval |\n|---|---|---|\n{rows}")
    table = metrics.get("alternatives")
    if table:
        rows = "\n".join(f"| {r['description']} | {_fmt(r['threshold'], '.4f')} | {_fmt(r.get('precision'))} | "
                         f"{_fmt(r.get('recall'))} | {_fmt(r.get('flagged_fraction'))} |" for r in table)
        parts.append(f"## Alternative policies\n\nThresholds chosen on {table[0]['chosen_on']}; measured on these "
                     "rows.\n\n| policy | threshold | precision | recall | flagged |\n|---|---|---|---|---|\n" + rows)
    cal = metrics.get("calibration")
    if cal:
        parts.append(f"## Calibration\n\n{cal['description']}. A perfectly calibrated model would show ECE "
                     f"{_fmt(cal['ece_if_perfectly_calibrated'])} on this many rows (sampling noise alone).\n\n"
                     "| | before | after |\n|---|---|---|\n"
                     f"| ECE | {_fmt(cal['ece_before'])} | {_fmt(cal['ece_after'])} |\n"
                     f"| log loss | {_fmt(cal['log_loss_before'], '.4f')} | {_fmt(cal['log_loss_after'], '.4f')} |")
    return "\n\n".join(parts)
