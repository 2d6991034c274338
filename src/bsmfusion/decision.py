"""Operating points chosen by policy: the binary threshold on the calibrated P(positive) that a team's rule gives.

Policies (`train.decision` in the config; `--decision` / `--threshold` at scoring time):

* `max_f1` — the threshold maximising F1 on the validation rows (the default);
* `{fixed: t}` — t;
* `{precision_at_least: p}` — among the thresholds whose validation precision is ≥ p, the one with the most
  recall (the highest such threshold when several reach that recall);
* `{recall_at_least: r}` — the highest threshold whose validation recall is ≥ r (the fewest rows flagged);
* `{review_budget: f}` — the lowest threshold that flags at most a fraction f of the validation rows, i.e. the
  top f of the validation score distribution (new rows above it are flagged; their share follows the new data);
* `{costs: {false_positive: a, false_negative: b}}` — a / (a + b). Flagging a row of calibrated probability p
  costs a·(1 − p) in expectation, not flagging it b·p, so flagging is cheaper exactly when p ≥ a / (a + b). The
  threshold needs no validation search, which would chase the noise of a few rows near the boundary; it assumes
  calibrated probabilities (training warns with `train.calibration: none`).

Thresholds found by search are validation scores themselves (a row is flagged when P(positive) ≥ threshold).
A policy no threshold can meet is an error naming the best achievable value. Multiclass models predict the argmax
class: `max_f1` (the default) means argmax there, every other policy is binary-only and refused.

`fit_decision` is the one training step every model kind shares: calibrate the validation predictions, then
choose the threshold on the calibrated ones. Its `files()` store the validation labels and calibrated
probabilities in the bundle (`validation_scores.json`) so a policy given at scoring time is resolved the same way.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import strict_json
from .errors import BundleError, ConfigError

log = logging.getLogger("bsmfusion.train")
POLICIES = ("max_f1", "fixed", "precision_at_least", "recall_at_least", "review_budget", "costs")
VALIDATION_FILE = "validation_scores.json"
CLI_SYNTAX = ("max_f1 | fixed=T | precision_at_least=P | recall_at_least=R | review_budget=F | costs=FP,FN "
              "(or a YAML mapping such as '{costs: {false_positive: 1, false_negative: 20}}')")


@dataclass(frozen=True)
class Policy:
    """One decision rule: `name` from `POLICIES`; `value` for fixed / precision / recall / budget; the two costs."""

    name: str = "max_f1"
    value: float | None = None
    false_positive: float | None = None
    false_negative: float | None = None

    def to_config(self) -> str | dict[str, Any]:
        """The canonical config value (`max_f1`, `{fixed: 0.3}`, `{costs: {false_positive: 1, ...}}`)."""
        if self.name == "max_f1":
            return "max_f1"
        if self.name == "costs":
            return {"costs": {"false_positive": self.false_positive, "false_negative": self.false_negative}}
        return {self.name: self.value}

    def describe(self) -> str:
        if self.name == "max_f1":
            return "max F1 on validation"
        if self.name == "costs":
            return f"least expected cost (false positive {self.false_positive:g}, false negative {self.false_negative:g})"
        if self.name == "review_budget":
            return f"review budget: the top {self.value * 100:.4g}% of the validation scores"
        return {"fixed": "fixed threshold", "precision_at_least": "precision ≥",
                "recall_at_least": "recall ≥"}[self.name] + f" {self.value:g}" + ("" if self.name == "fixed" else
                                                                                 " on validation")


def _number(name: str, value: Any, low: float, high: float, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} needs a number, got {value!r}")
    value = float(value)
    if not (low < value and (value < high if high_open else value <= high)):
        raise ValueError(f"{name} must be in ({low:g}, {high:g}{')' if high_open else ']'}, got {value:g}")
    return value


def _costs(value: Any) -> Policy:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"false_positive": value[0], "false_negative": value[1]}
    if not isinstance(value, dict) or set(value) != {"false_positive", "false_negative"}:
        raise ValueError("costs needs {false_positive: A, false_negative: B}")
    a, b = (_number(f"costs.{k}", value[k], 0.0, math.inf, high_open=True)
            for k in ("false_positive", "false_negative"))
    return Policy("costs", false_positive=a, false_negative=b)


def parse_policy(value: Any) -> Policy:
    """A policy from a config value or a command-line string (see `CLI_SYNTAX`); `ValueError` with one line."""
    if isinstance(value, Policy):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ValueError(f"'{text}' is not a YAML mapping; use {CLI_SYNTAX}") from None
        elif "=" in text:
            name, _, raw = text.partition("=")
            raw = raw.strip()
            if name.strip() == "costs":
                value = {"costs": [_float_text(part) for part in raw.split(",")]}
            else:
                value = {name.strip(): _float_text(raw)}
        elif text == "max_f1":
            return Policy()
        else:
            raise ValueError(f"unknown decision policy '{text}'; use {CLI_SYNTAX}")
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"a decision policy is max_f1 or a mapping with exactly one of {', '.join(POLICIES[1:])}, "
                         f"got {value!r}")
    (name, inner), = value.items()
    if name == "costs":
        return _costs(inner)
    if name == "fixed":
        return Policy("fixed", _number("fixed", inner, 0.0, 1.0, high_open=True))
    if name in ("precision_at_least", "recall_at_least", "review_budget"):
        return Policy(name, _number(name, inner, 0.0, 1.0))
    raise ValueError(f"unknown decision policy '{name}'; choose one of {', '.join(POLICIES)}")


def _float_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------- thresholds from validation
def threshold_curve(labels: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Every distinct score as a threshold, highest first, with the true and false positives flagged at it."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="mergesort")
    ranked, hits = probs[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1] if len(ranked) else np.zeros(0, np.int64)
    tp, fp = np.cumsum(hits)[last], np.cumsum(1 - hits)[last]
    return {"threshold": ranked[last], "tp": tp.astype(np.float64), "fp": fp.astype(np.float64)}


def confusion_counts(labels: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """[TP, FP, FN, TN] (float64) of the rows `flagged` against binary `labels`."""
    labels = np.asarray(labels, dtype=np.int64)
    flagged = np.asarray(flagged, dtype=bool)
    return np.array([np.sum(flagged & (labels == 1)), np.sum(flagged & (labels == 0)),
                     np.sum(~flagged & (labels == 1)), np.sum(~flagged & (labels == 0))], dtype=np.float64)


def rates_at(labels: np.ndarray, probs: np.ndarray, threshold: float, policy: Policy | None = None) -> dict[str, float]:
    """Precision, recall, flagged fraction (and expected cost per row for a costs policy) at `threshold`."""
    tp, fp, fn, _ = confusion_counts(labels, np.asarray(probs, dtype=np.float64) >= threshold)
    return confusion_rates(tp, fp, fn, len(labels), policy)


def confusion_rates(tp, fp, fn, n, policy: Policy | None = None) -> dict[str, Any]:
    """The same rates from confusion counts (scalars or arrays; NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"precision": np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan),
               "recall": np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan),
               "flagged_fraction": (tp + fp) / max(n, 1)}
        if policy is not None and policy.name == "costs":
            out["expected_cost"] = (policy.false_positive * fp + policy.false_negative * fn) / max(n, 1)
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in out.items()}


def choose_threshold(policy: Policy, labels: np.ndarray, probs: np.ndarray, key: str = "train.decision") -> float:
    """The threshold `policy` gives on (validation) `labels` and calibrated P(positive) `probs`; `ConfigError`
    naming `key` and the best achievable value when no threshold meets it."""
    if policy.name == "fixed":
        return float(policy.value)
    if policy.name == "costs":
        return policy.false_positive / (policy.false_positive + policy.false_negative)
    labels = np.asarray(labels, dtype=np.int64)
    if policy.name == "max_f1":
        from .evaluation.metrics import best_f1_threshold

        return best_f1_threshold(labels, np.asarray(probs, dtype=np.float64))
    curve = threshold_curve(labels, probs)
    n, positives = len(labels), float(labels.sum())
    where = f"{key} {policy.name} {policy.value:g}"
    if n == 0 or (positives == 0 and policy.name != "review_budget"):
        raise ConfigError(f"{where} needs positive validation rows; there are none among {n}")
    tp, fp, thresholds = curve["tp"], curve["fp"], curve["threshold"]
    precision, recall, flagged = tp / (tp + fp), tp / max(positives, 1.0), (tp + fp) / n
    eps = 1e-12
    if policy.name == "precision_at_least":
        ok = np.flatnonzero(precision >= policy.value - eps)
        if not len(ok):
            best = int(np.argmax(precision))
            raise ConfigError(f"{where} is not reachable on the {n} validation rows: the best precision of any "
                              f"threshold is {precision[best]:.4f} (threshold {thresholds[best]:.4f}, recall "
                              f"{recall[best]:.4f}); lower it or choose another policy")
        most = ok[recall[ok] >= recall[ok].max() - eps]  # the most recall; of those, the highest threshold
        return float(thresholds[most[0]])
    if policy.name == "recall_at_least":
        return float(thresholds[np.flatnonzero(recall >= policy.value - eps)[0]])
    ok = np.flatnonzero(flagged <= policy.value + eps)  # review_budget
    if not len(ok):
        raise ConfigError(f"{where} flags no validation row: the highest score alone is shared by {int(tp[0] + fp[0])} "
                          f"of the {n} rows, so the smallest achievable budget is {flagged[0]:.4g}; raise it")
    return float(thresholds[ok[-1]])


# ------------------------------------------------------------------------------ the active decision of a predictor
@dataclass(frozen=True)
class Decision:
    """The policy in force, its threshold (None: multiclass argmax), where it came from (`bundle` or `override`)
    and what it achieved on the validation rows."""

    policy: Policy
    threshold: float | None
    source: str = "bundle"
    validation: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Strict JSON (meta.json, GET /v1/model): a rate undefined on the validation rows (precision when nothing
        is flagged, recall without positives) is None, not NaN."""
        return strict_json.finite({"policy": self.policy.to_config(), "description": self.describe(),
                                   "threshold": self.threshold, "source": self.source, "validation": self.validation})

    def describe(self) -> str:
        if self.threshold is None:
            return "argmax (multiclass)"
        return f"{self.policy.describe()} → threshold {self.threshold:.4f} on the calibrated P(positive)"

    def summary(self) -> str:
        """The line the CLI and the server print at start: `decision: <describe()> (bundle|override)`."""
        return f"decision: {self.describe()} ({self.source})"


BINARY_ONLY = (*POLICIES[1:], "platt", "isotonic")  # every decision policy but max_f1; platt, isotonic calibration


def check_binary(num_classes: int, key: str, name: str) -> None:
    """The binary-only rule, in one wording for the config, training and scoring-time overrides: `name` (a decision
    policy or a calibration method) set under `key` needs a binary model when it is in `BINARY_ONLY`."""
    if num_classes == 2 or name not in BINARY_ONLY:
        return
    instead = "temperature" if name in ("platt", "isotonic") else "max_f1 (the default: the argmax class)"
    raise ConfigError(f"{key} '{name}' is for binary tasks, not a model with {num_classes} classes; use {instead}")


def decide(policy: Policy, labels: np.ndarray, probs: np.ndarray, source: str, key: str) -> Decision:
    """Resolve `policy` on validation `labels` and calibrated `probs` (`N×K`) into a `Decision`."""
    check_binary(probs.shape[1], key, policy.name)
    if probs.shape[1] != 2:
        return Decision(policy, None, source)
    threshold = choose_threshold(policy, labels, probs[:, 1], key)
    return Decision(policy, threshold, source, rates_at(labels, probs[:, 1], threshold, policy))


def validation_scores(bundle) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, calibrated P(positive)) of the validation rows stored in a binary bundle; None if absent."""
    path = bundle.path / VALIDATION_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    return np.asarray(stored["label"], dtype=np.int64), np.asarray(stored["probability"], dtype=np.float64)


def active_decision(bundle, decision: Any = None, threshold: float | None = None, *,
                    names: tuple[str, str] = ("decision", "threshold")) -> Decision:
    """The bundle's own decision, or the one `decision` (a policy) or `threshold` (shorthand for fixed) asks for;
    a searched policy is resolved on the validation scores stored in the bundle. Errors call the two options
    `names` (the CLI passes `("--decision", "--threshold")`)."""
    decision_name, threshold_name = names
    fixed = f"{threshold_name} T" if threshold_name.startswith("-") else f"{threshold_name}=T"
    if decision is not None and threshold is not None:
        raise ConfigError(f"pass {decision_name} or {threshold_name}, not both ({fixed} is {decision_name} fixed=T)")
    num_classes = len(bundle.label_names)
    if decision is None and threshold is None:
        stored = bundle.meta.get("decision")
        policy = parse_policy(stored["policy"]) if stored else bundle.cfg.train.policy
        return Decision(policy, bundle.threshold, "bundle", dict(stored.get("validation", {})) if stored else {})
    key = threshold_name if threshold is not None else decision_name
    try:
        policy = parse_policy({"fixed": threshold} if threshold is not None else decision)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    check_binary(num_classes, key, policy.name)
    if num_classes != 2:
        return Decision(policy, None, "override")
    if policy.name in ("fixed", "costs"):
        return Decision(policy, choose_threshold(policy, [], [], key), "override")
    stored = validation_scores(bundle)
    if stored is None:
        raise BundleError(f"bundle '{bundle.path}' has no {VALIDATION_FILE} (trained before decision policies): "
                          f"{key} {policy.name} needs it; retrain, or pass {fixed}")
    labels, probs = stored
    chosen = choose_threshold(policy, labels, probs, key)
    return Decision(policy, chosen, "override", rates_at(labels, probs, chosen, policy))


# --------------------------------------------------------------------------------- training: calibrate, then decide
@dataclass
class FittedDecision:
    """What training stores: the calibration, the decision, and the calibrated validation scores."""

    calibration: Any  # calibration.Calibration
    decision: Decision
    scores: Any  # inference.scoring.Scores, calibrated
    labels: np.ndarray
    calibration_report: dict[str, float]

    @property
    def threshold(self) -> float | None:
        return self.decision.threshold

    def meta(self) -> dict[str, Any]:
        """meta.json entries: `calibration` (the map and validation log loss / ECE before and after) and
        `decision`."""
        return {"calibration": {**self.calibration.to_json(), "validation": self.calibration_report},
                "decision": self.decision.to_json()}

    def files(self) -> dict[str, str]:
        """Binary: `validation_scores.json` (labels and calibrated P(positive)) for policies given at scoring time."""
        if self.scores.probs.shape[1] != 2:
            return {}
        return {VALIDATION_FILE: json.dumps({"label": self.labels.tolist(),
                                             "probability": np.asarray(self.scores.probs[:, 1], np.float64).tolist()})}


def fit_decision(cfg, labels: np.ndarray, scores) -> FittedDecision:
    """Fit `train.calibration` on the validation `scores` (uncalibrated), then choose `train.decision`'s threshold
    on the calibrated ones. Every model kind calls this right where its threshold is chosen."""
    from .calibration import calibration_change, fit_calibration

    labels = np.asarray(labels, dtype=np.int64)
    policy = cfg.train.policy
    check_binary(scores.probs.shape[1], "train.decision", policy.name)
    try:
        calibration = fit_calibration(cfg.train.calibration, labels, scores)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    calibrated = calibration.apply(scores)
    if policy.name == "costs" and calibration.method == "none":
        log.warning("train.decision costs assumes calibrated probabilities but train.calibration is none")
    decision = decide(policy, labels, calibrated.probs, "bundle", "train.decision")
    report = {}
    if len(labels):
        report = {"rows": int(len(labels)), **calibration_change(labels, scores.probs, calibrated.probs)}
    log.info("calibration: %s; decision: %s", calibration.describe(), decision.describe())
    return FittedDecision(calibration, decision, calibrated, labels, report)
