"""Calibrated probabilities: Platt scaling (binary default), one temperature (multiclass default) or an isotonic
map, fitted on the validation predictions the decision threshold is then chosen on, stored in the bundle's
meta.json (`calibration`) and applied to every scorer's output in one place (`scoring.scorers.build_scorer`), so
predict, serve, evaluate and the ONNX engine agree.

The score calibrated is the exact one the contributions split (`models.contributions`): binary, the positive
class's log-odds z = text + tab + baseline; multiclass, the log-probabilities.

* `temperature` (Guo et al. 2017): z' = z / T, so P(positive) = σ(z / T) (multiclass: softmax(log p / T)). It is
  linear, so the contributions and the baseline are divided by T too and text + tab + baseline stays equal to
  the calibrated log-odds; it never changes the ranking.
* `platt` (binary only; Platt 1999): z' = a·z + b, the temperature plus a shift of the log-odds. It corrects a
  model whose scores are shifted as well as too sharp (an ensemble's weighted log-odds, a member trained on rows
  with another base rate), at the price of a second number fitted on the same rows. Linear too: the contributions
  are multiplied by a, and the baseline becomes a·baseline + b.
* `isotonic` (binary only): P(positive) = a monotone, piecewise-linear map of z (the isotonic regression of the
  labels on z, interpolated between its knots). It is not linear: the contributions stay on the uncalibrated
  log-odds scale, and ties it creates (flat steps) make thresholds coarser. Needs more validation rows than one
  temperature does.
* `none`: the model's own probabilities.
* `auto` (default): `platt` for binary models, `temperature` for multiclass ones: the fine-tuned member predicts
  too few positives on new rows, a shift one temperature cannot undo and Platt's bias can. Measurements:
  docs/benchmarks.md ("Calibration").

Fitting uses Platt's smoothed targets, (N₊ + 1)/(N₊ + 2) for a positive row and 1/(N₋ + 2) for a negative one
(multiclass: 1 − 1/(N_y + 2) on the row's class, the rest spread evenly): the log loss then has a finite minimum
even when the validation rows are perfectly separated, and isotonic steps never reach exactly 0 or 1.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .models.scores import Scores

log = logging.getLogger("bsmfusion.train")
METHODS = ("auto", "temperature", "platt", "isotonic", "none")
TEMPERATURE_BOUNDS = (1e-2, 1e2)  # T outside this range means the fit failed, not that the model needs it


def log_odds(scores: Scores) -> np.ndarray:
    """Binary: the positive class's log-odds (float64) from the exact split, text + tab + baseline."""
    return (np.asarray(scores.text_contribution, np.float64) + np.asarray(scores.tab_contribution, np.float64)
            + np.asarray(scores.baseline_score, np.float64))


def score_logits(scores: Scores, num_classes: int | None = None) -> np.ndarray:
    """`N×K` float64 logits, up to a per-row constant: binary [0, log-odds] from the exact split, multiclass
    log-probabilities. `num_classes` (default: the columns of `scores.probs`) decides which, for empty scores too."""
    if (scores.probs.shape[1] if num_classes is None else num_classes) == 2:
        z = log_odds(scores)
        return np.stack([np.zeros_like(z), z], axis=1)
    return np.log(np.clip(np.asarray(scores.probs, np.float64), 1e-300, None))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow warnings for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of `N×K` logits (the one copy: classical members and the ensemble use it too)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def smoothed_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`N×K` Platt targets: 1 − 1/(N_y + 2) on the row's class y, the rest spread evenly over the other classes."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    off = 1.0 / (counts[labels] + 2.0)
    targets = np.repeat((off / (num_classes - 1))[:, None], num_classes, axis=1)
    targets[np.arange(len(labels)), labels] = 1.0 - off
    return targets


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the mean log loss of softmax(logits / T) against Platt's targets (one bounded 1-D search
    over log(1/T); the loss is convex in 1/T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    targets = smoothed_targets(labels, logits.shape[1])

    def loss(log_inverse_t: float) -> float:
        z = logits * np.exp(log_inverse_t)
        return float(-(targets * (z - logsumexp(z, axis=1, keepdims=True))).sum(axis=1).mean())

    low, high = TEMPERATURE_BOUNDS
    found = minimize_scalar(loss, bounds=(np.log(1 / high), np.log(1 / low)), method="bounded",
                            options={"xatol": 1e-10})
    temperature = float(np.exp(-found.x))
    if min(abs(np.log(temperature / low)), abs(np.log(temperature / high))) < 1e-3:
        log.warning("train.calibration temperature: the fit stopped at the bound T = %.4g (allowed %g to %g), so the "
                    "validation scores are degenerate (near-constant or tiny log-odds); check them, or use "
                    "train.calibration: none", temperature, low, high)
    return temperature


def fit_platt(z: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the mean log loss of σ(a·z + b) against Platt's smoothed targets (convex in (a, b);
    L-BFGS from the identity map). The scale is kept within 1/T's bounds."""
    from scipy.optimize import minimize

    z = np.asarray(z, dtype=np.float64)
    targets = smoothed_targets(labels, 2)[:, 1]

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        u = params[0] * z + params[1]
        loss = np.mean(np.logaddexp(0.0, u) - targets * u)  # −[t·log σ(u) + (1−t)·log σ(−u)]
        residual = sigmoid(u) - targets
        return float(loss), np.array([np.mean(residual * z), np.mean(residual)])

    low, high = TEMPERATURE_BOUNDS
    found = minimize(loss_and_grad, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                     bounds=[(1 / high, 1 / low), (None, None)], options={"ftol": 1e-14, "gtol": 1e-10})
    return float(found.x[0]), float(found.x[1])


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map; `apply` turns a scorer's `Scores` into calibrated ones."""

    method: str = "none"
    temperature: float = 1.0
    scale: float = 1.0  # platt: a
    bias: float = 0.0  # platt: b
    knots_x: tuple[float, ...] = ()  # isotonic: uncalibrated log-odds, increasing
    knots_y: tuple[float, ...] = ()  # isotonic: calibrated P(positive) at each knot, non-decreasing

    def apply(self, scores: Scores) -> Scores:
        """Calibrated probabilities (and, for temperature, contributions / T); `uncalibrated_probs` keeps the
        model's own probabilities."""
        original = scores.probs
        if self.method == "none" or len(original) == 0:
            return replace(scores, uncalibrated_probs=original)
        if self.method == "temperature":
            t = self.temperature
            if original.shape[1] == 2:
                z = log_odds(scores) / t
                probs = np.stack([sigmoid(-z), sigmoid(z)], axis=1)
            else:
                probs = softmax(score_logits(scores) / t)
            parts = [np.asarray(p, np.float64) / t for p in
                     (scores.text_contribution, scores.tab_contribution, scores.baseline_score)]
            return Scores(probs, *parts, uncalibrated_probs=original)
        if self.method == "platt":
            z = self.scale * log_odds(scores) + self.bias
            text, tab, base = (np.asarray(p, np.float64) * self.scale for p in
                               (scores.text_contribution, scores.tab_contribution, scores.baseline_score))
            return Scores(np.stack([sigmoid(-z), sigmoid(z)], axis=1), text, tab, base + self.bias,
                          uncalibrated_probs=original)
        positive = np.interp(log_odds(scores), self.knots_x, self.knots_y)  # isotonic, clipped at the end knots
        return replace(scores, probs=np.stack([1.0 - positive, positive], axis=1), uncalibrated_probs=original)

    def describe(self) -> str:
        if self.method == "temperature":
            return f"temperature scaling, T = {self.temperature:.4g}"
        if self.method == "platt":
            return f"Platt scaling, log-odds × {self.scale:.4g} {self.bias:+.4g}"
        if self.method == "isotonic":
            return f"isotonic regression ({len(self.knots_x)} knots)"
        return "none (the model's own probabilities)"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "temperature":
            out["temperature"] = self.temperature
        if self.method == "platt":
            out.update(scale=self.scale, bias=self.bias)
        if self.method == "isotonic":
            out["knots_log_odds"] = list(self.knots_x)
            out["knots_probability"] = list(self.knots_y)
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> "Calibration":
        """The stored map; a bundle written before calibration existed (no entry) gets `none`."""
        if not value:
            return cls()
        return cls(method=value["method"], temperature=float(value.get("temperature", 1.0)),
                   scale=float(value.get("scale", 1.0)), bias=float(value.get("bias", 0.0)),
                   knots_x=tuple(value.get("knots_log_odds", ())), knots_y=tuple(value.get("knots_probability", ())))


def fit_calibration(method: str, labels: np.ndarray, scores: Scores) -> Calibration:
    """Fit `method` (auto | temperature | platt | isotonic | none) on held-out `labels` and the model's uncalibrated
    `scores`; the returned map names the method it resolved to."""
    from .policy import check_binary

    if method not in METHODS:
        raise ValueError(f"train.calibration '{method}' is not one of {', '.join(METHODS)}")
    check_binary(scores.probs.shape[1], "train.calibration", method)
    labels = np.asarray(labels, dtype=np.int64)
    if method == "auto":
        method = "platt" if scores.probs.shape[1] == 2 else "temperature"
    if method == "none" or len(labels) == 0:
        return Calibration()
    if method == "temperature":
        return Calibration("temperature", temperature=fit_temperature(score_logits(scores), labels))
    if method == "platt":
        scale, bias = fit_platt(log_odds(scores), labels)
        return Calibration("platt", scale=scale, bias=bias)
    from sklearn.isotonic import IsotonicRegression

    targets = smoothed_targets(labels, 2)[:, 1]
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(log_odds(scores), targets)
    return Calibration("isotonic", knots_x=tuple(map(float, iso.X_thresholds_)),
                       knots_y=tuple(map(float, iso.y_thresholds_)))


def calibration_change(labels: np.ndarray, uncalibrated: np.ndarray, calibrated: np.ndarray) -> dict[str, float]:
    """ECE and log loss on `labels` of the model's own probabilities (`*_before`) and of the calibrated ones
    (`*_after`): what training stores in meta.json (validation rows) and `evaluate` reports (its rows)."""
    from .evaluation.metrics import classification_metrics

    before, after = (classification_metrics(labels, probs, None) for probs in (uncalibrated, calibrated))
    return {"ece_before": before["ece"], "ece_after": after["ece"],
            "log_loss_before": before["log_loss"], "log_loss_after": after["log_loss"]}


def bundle_calibration(bundle) -> Calibration:
    """The calibration stored in a bundle's meta.json (`none` for bundles written before it existed)."""
    return Calibration.from_json(bundle.meta.get("calibration"))
