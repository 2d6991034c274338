"""Operating points chosen by policy: the binary threshold on the calibrated P(positive) that a team's rule gives.

Policies (`train.decision` in the config; `--decision` / `--threshold` at scoring time):

* `max_f1` — the threshold maximising F1 on the validation rows (the default);
* `expected_f1` — the threshold maximising the F1 the calibrated validation probabilities expect (the labels
  enter through the calibration only: steadier than max_f1 when the validation rows are few);
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
A policy no threshold can meet is an error naming the best achievable value at scoring time; at training,
`check_feasible` refuses before any training what the validation labels alone rule out, and `fit_decision`
keeps max_f1 with a warning when the policy turns out unreachable on the trained model's scores, so the
bundle is still written. A searched policy met on fewer than `FEW_FLAGGED` flagged validation rows warns. Multiclass models predict the argmax
class: `max_f1` (the default) means argmax there, every other policy is binary-only and refused.

`fit_decision` is the one training step every model kind shares: calibrate the validation predictions, then
choose the threshold on the calibrated ones. Its `files()` store the validation labels and calibrated
probabilities in the bundle (`validation_scores.json`) so a policy given at scoring time is resolved the same way.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import strict_json
from .errors import ConfigError, OptionError
from .policy import Policy, check_binary, parse_policy

log = logging.getLogger("bsmfusion.train")
VALIDATION_FILE = "validation_scores.json"
FEW_FLAGGED = 10  # a searched policy met on fewer flagged validation rows: its precision / recall is noise
SEARCHED = ("precision_at_least", "recall_at_least", "review_budget")


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


def soft_f1_threshold(probs: np.ndarray, soft_labels: np.ndarray) -> float:
    """The threshold (one of `probs`) with the highest F1 when row i counts as `soft_labels[i]` ∈ [0, 1] of a
    positive: flagging the rows scored ≥ t counts TP = Σ s over them and TP + FN = Σ s over all rows, so
    F1(t) = 2·TP / (flagged + Σ s). With the labels as `soft_labels` this is the max-F1 threshold (of tied F1s it
    keeps the highest threshold); with the probabilities themselves, `expected_f1_threshold`. 0.5 without rows
    or without positive mass."""
    probs, soft = np.asarray(probs, dtype=np.float64), np.asarray(soft_labels, dtype=np.float64)
    if not len(probs) or soft.sum() <= 0:
        return 0.5
    order = np.argsort(-probs, kind="mergesort")
    ranked, soft = probs[order], soft[order]
    f1 = 2 * np.cumsum(soft) / (np.arange(1, len(soft) + 1) + soft.sum())
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]  # a threshold flags every row tied with it
    return float(ranked[last[int(np.argmax(f1[last]))]])


def expected_f1_threshold(probs: np.ndarray) -> float:
    """The threshold (one of `probs`, calibrated P(positive)) whose F1 the probabilities themselves expect:
    flagging the rows scored ≥ t expects TP = Σ p, FP = Σ (1 − p) over them and FN = Σ p over the others, so
    F1(t) ≈ 2·TP / (TP + FP + Σ_all p). The labels enter only through the calibration (two parameters), not
    row by row, so on a few dozen rows it moves far less than the labels' own max-F1 threshold (Lipton et al.
    2014: for calibrated scores the F1-optimal threshold is half the optimal F1). 0.5 without rows."""
    return soft_f1_threshold(probs, probs)


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
    if policy.name == "expected_f1":
        return expected_f1_threshold(probs)
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


def few_flagged_warning(policy: Policy, labels: np.ndarray, probs: np.ndarray, threshold: float,
                        key: str = "train.decision") -> str | None:
    """The warning for a searched policy met on fewer than `FEW_FLAGGED` flagged validation rows (None otherwise):
    its validation precision / recall rest on a handful of rows."""
    if policy.name not in SEARCHED or not len(labels):
        return None
    flagged = int(np.sum(np.asarray(probs, dtype=np.float64) >= threshold))
    if flagged >= FEW_FLAGGED:
        return None
    return (f"{key} {policy.name} {policy.value:g} is met on only {flagged} flagged validation row"
            f"{'' if flagged == 1 else 's'} (of {len(labels)}): its precision / recall estimate is unreliable below "
            f"{FEW_FLAGGED}; use more validation rows or a looser policy")


def check_feasible(policy: Policy, labels: np.ndarray, key: str = "train.decision") -> None:
    """Before training: refuse (`ConfigError`, one line) a policy the validation labels alone rule out, whatever the
    model learns: a precision or recall target without a positive validation row, a review budget under one row."""
    if policy.name not in SEARCHED:
        return
    labels = np.asarray(labels, dtype=np.int64)
    n, positives = len(labels), int(np.sum(labels == 1))
    where = f"{key} {policy.name} {policy.value:g}"
    if policy.name != "review_budget" and positives == 0:
        raise ConfigError(f"{where} needs positive validation rows; there are none among {n}: add some to the "
                          "validation table or choose another policy")
    if policy.name == "review_budget" and policy.value * n < 1:
        raise ConfigError(f"{where} flags less than one of the {n} validation rows; raise it to at least "
                          f"{1 / max(n, 1):.4g} or use more validation rows")


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


def active_decision(bundle, decision: Any = None, threshold: float | None = None) -> Decision:
    """The bundle's own decision, or the one `decision` (a policy) or `threshold` (shorthand for fixed) asks for;
    a searched policy is resolved on the validation scores stored in the bundle. Errors are `OptionError`s that
    name the two options as templates (the CLI says `--decision`, Python `decision`)."""
    try:
        return _active_decision(bundle, decision, threshold)
    except OptionError:
        raise
    except ConfigError as err:  # choose_threshold / check_binary name the option by the key given them
        raise OptionError(str(err)) from None


def _active_decision(bundle, decision: Any, threshold: float | None) -> Decision:
    if decision is not None and threshold is not None:
        raise OptionError("pass {decision} or {threshold}, not both ({threshold}=T is {decision} fixed=T)")
    num_classes = len(bundle.label_names)
    if decision is None and threshold is None:
        stored = bundle.meta.get("decision")
        policy = parse_policy(stored["policy"]) if stored else bundle.cfg.train.policy
        return Decision(policy, bundle.threshold, "bundle", dict(stored.get("validation", {})) if stored else {})
    key = "{threshold}" if threshold is not None else "{decision}"
    try:
        policy = parse_policy({"fixed": threshold} if threshold is not None else decision)
    except ValueError as err:
        raise OptionError(f"{key}: {err}") from None
    check_binary(num_classes, key, policy.name)
    if num_classes != 2:
        return Decision(policy, None, "override")
    if policy.name in ("fixed", "costs"):
        return Decision(policy, choose_threshold(policy, [], [], key), "override")
    stored = validation_scores(bundle)
    if stored is None:
        raise OptionError(f"bundle '{bundle.path}' has no {VALIDATION_FILE} (trained before decision policies): "
                          f"{key} {policy.name} needs it; retrain, or pass {{threshold}}=T")
    labels, probs = stored
    chosen = choose_threshold(policy, labels, probs, key)
    warning = few_flagged_warning(policy, labels, probs, chosen, key.format(decision="decision"))
    if warning:
        log.warning(warning)
    return Decision(policy, chosen, "override", rates_at(labels, probs, chosen, policy))


# --------------------------------------------------------------------------------- training: calibrate, then decide
@dataclass
class FittedDecision:
    """What training stores: the calibration, the decision, and the calibrated validation scores."""

    calibration: Any  # calibration.Calibration
    decision: Decision
    scores: Any  # models.scores.Scores, calibrated
    labels: np.ndarray
    calibration_report: dict[str, float]
    unreachable: str | None = None  # why train.decision could not be met (the bundle then keeps max_f1)

    @property
    def threshold(self) -> float | None:
        return self.decision.threshold

    def meta(self) -> dict[str, Any]:
        """meta.json entries: `calibration` (the map and validation log loss / ECE before and after) and
        `decision`."""
        decision = self.decision.to_json()
        if self.unreachable:
            decision["unreachable"] = self.unreachable  # the policy asked for, and why max_f1 stands instead
        return {"calibration": {**self.calibration.to_json(), "validation": self.calibration_report},
                "decision": decision}

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
    unreachable = None
    try:
        decision = decide(policy, labels, calibrated.probs, "bundle", "train.decision")
    except ConfigError as err:  # unreachable on these scores: keep the trained model, decide by max_f1
        if policy.name == "max_f1":
            raise
        decision = decide(Policy(), labels, calibrated.probs, "bundle", "train.decision")
        unreachable = str(err)
        log.warning("%s; the bundle is written with max_f1 meanwhile (threshold %.4f, precision %.4f, recall %.4f "
                    "on validation): choose a policy at scoring time with --decision (Python: decision=...)",
                    err, decision.threshold, decision.validation.get("precision", float("nan")),
                    decision.validation.get("recall", float("nan")))
    if decision.threshold is not None:
        warning = few_flagged_warning(decision.policy, labels, calibrated.probs[:, 1], decision.threshold)
        if warning:
            log.warning(warning)
    report = {}
    if len(labels):
        report = {"rows": int(len(labels)), **calibration_change(labels, scores.probs, calibrated.probs)}
    log.info("calibration: %s; decision: %s", calibration.describe(), decision.describe())
    return FittedDecision(calibration, decision, calibrated, labels, report, unreachable)
