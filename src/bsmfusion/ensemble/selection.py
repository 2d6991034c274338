"""Ensemble selection: the member weights from validation logits, and combining weighted members.

How members combine: in log-odds space (binary: the weighted sum of the members' log-odds; multiclass: of their
log-probabilities, i.e. logits up to a per-row constant, so the probabilities are a normalised weighted geometric
mean). The Shapley split is linear in that score, so the ensemble's contributions are the weighted sums of the
members' contributions and stay exact: text + tab + baseline = the ensemble's log-odds.

Weights: greedy ensemble selection with replacement (Caruana et al. 2004, as AutoGluon does): `iterations` times
add the member (again, possibly) that gives the best combined validation score — binary: ROC-AUC, log loss breaking
ties; multiclass: log loss — and keep the prefix of picks with the best score. Two guards from Caruana et al. 2006
against fitting ~100 validation rows: every selection starts from `init_picks` picks of each member (equal weights
as a prior), and the weights are the mean over `bags` selections on bootstrap resamples of the validation rows.
With `bags: 0` and `init_picks: 0` it is the plain selection, which never scores below its best member on
validation. Measurements: docs/benchmarks.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..calibration import score_logits, softmax
from ..config import Config
from ..models.scores import Scores
from ..progress import Heartbeat

SUMMARY_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss")  # per member, in meta.json


def member_logits(scores: Scores, num_classes: int) -> np.ndarray:
    """A member's `N×K` float64 logits: binary [0, log-odds] from its exact split (text + tab + baseline);
    multiclass its log-probabilities (`calibration.score_logits`, the logits calibration scales too)."""
    return score_logits(scores, num_classes)


def selection_key(labels: np.ndarray, logits: np.ndarray) -> tuple[float, ...]:
    """Higher is better. Binary: (ROC-AUC, −log loss); multiclass: (−log loss,). The values of
    `classification_metrics` (to float rounding: the same probability clipping, ROC-AUC as the Mann–Whitney
    statistic with tied scores sharing their mean rank, which equals sklearn's area), computed alone: the bagged
    selection asks for thousands of keys, and the full metric set made it the slowest step of a small ensemble."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.clip(softmax(np.asarray(logits, dtype=np.float64)), 1e-7, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    log_loss = float(-np.mean(np.log(probs[np.arange(len(labels)), labels]))) if len(labels) else float("nan")
    if logits.shape[1] != 2:
        return (-log_loss,)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return (-np.inf, -log_loss)
    ranks = rankdata(probs[:, 1])  # average ranks for ties
    auc = (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return (float(auc), -log_loss)


def weighted_sum(values: list[np.ndarray], weights) -> np.ndarray:
    """Σ_m w_m·values_m, always summed in member order (selection and scoring give bit-identical results)."""
    total = np.zeros_like(np.asarray(values[0], dtype=np.float64))
    for w, value in zip(weights, values):
        if w:
            total = total + float(w) * np.asarray(value, dtype=np.float64)
    return total


def greedy_selection(logits: list[np.ndarray], labels: np.ndarray, iterations: int = 25, *,
                     init_picks: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Ensemble selection with replacement over member logits (`M` arrays `N×K`).

    Args:
        logits: each member's validation logits.
        labels: the validation label ids.
        iterations: picks after the start.
        init_picks: start from this many picks of every member (equal weights, a prior whose strength is k·M picks
            against the greedy ones); the start is a candidate too. With 0 the first pick is the best member alone,
            so the result never scores below it on these rows.

    Returns:
        (weights `M`, summing to 1; the trajectory: per step the member picked and the combined key).
    """
    m_count = len(logits)
    counts = np.full(m_count, float(init_picks))
    trajectory: list[dict[str, Any]] = []
    history: list[np.ndarray] = []
    if init_picks:
        history.append(counts / counts.sum())
        trajectory.append({"step": 0, "picked": None, "key": list(selection_key(labels, weighted_sum(logits, history[0])))})
    for step in range(1, iterations + 1):
        total = counts.sum() + 1
        candidates = [(counts + np.eye(m_count)[m]) / total for m in range(m_count)]
        keys = [selection_key(labels, weighted_sum(logits, w)) for w in candidates]
        best = max(range(m_count), key=lambda m: (keys[m], -m))  # ties: the earlier member
        counts = counts + np.eye(m_count)[best]
        history.append(counts / total)
        trajectory.append({"step": step, "picked": best, "key": list(keys[best])})
    stop = max(range(len(trajectory)), key=lambda i: (tuple(trajectory[i]["key"]), -i))  # first best prefix
    return history[stop], trajectory[:stop + 1]


def bagged_selection(logits: list[np.ndarray], labels: np.ndarray, iterations: int = 25, *, bags: int = 32,
                     init_picks: int = 5, seed: int = 0) -> tuple[np.ndarray, list[list[float]]]:
    """The mean of `bags` greedy selections, each on a bootstrap resample of the validation rows (Caruana et al.
    2006: bagging the selection curbs its overfitting to a small hill-climbing set). A resample with one class
    only is drawn again. Returns (weights `M`, each bag's weights)."""
    rng = np.random.default_rng(seed)
    per_bag: list[np.ndarray] = []
    beat = Heartbeat(lambda: f"ensemble: selection, bag {len(per_bag)}/{bags} done")
    while len(per_bag) < bags:
        beat()
        rows = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[rows])) < len(np.unique(labels)):
            continue
        weights, _ = greedy_selection([z[rows] for z in logits], labels[rows], iterations, init_picks=init_picks)
        per_bag.append(weights)
    return np.mean(per_bag, axis=0), [w.round(6).tolist() for w in per_bag]


def fit_weights(cfg: Config, logits: list[np.ndarray], labels: np.ndarray,
                names: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The member weights `M` from the members' validation `logits` (`model.ensemble`'s selection settings) and
    what meta.json records of the selection. `benchmarks/quality.py --recombine` calls this on stored member scores."""
    settings = cfg.model.ensemble
    selection: dict[str, Any] = {"rows": "validation", "iterations": settings.iterations,
                                 "init_picks": settings.init_picks, "bags": settings.bags}
    if settings.bags:
        weights, selection["bag_weights"] = bagged_selection(logits, labels, settings.iterations, bags=settings.bags,
                                                             init_picks=settings.init_picks, seed=cfg.train.seed)
    else:
        weights, trajectory = greedy_selection(logits, labels, settings.iterations, init_picks=settings.init_picks)
        selection.update(picks=[None if t["picked"] is None else names[t["picked"]] for t in trajectory],
                         trajectory=trajectory)
    return weights, selection


def combine(parts: list[tuple[float, Scores]], num_classes: int) -> tuple[np.ndarray, Scores]:
    """(combined logits `N×K`, Scores) of weighted member scores; contributions are the weighted sums."""
    weights = [w for w, _ in parts]
    logits = weighted_sum([member_logits(s, num_classes) for _, s in parts], weights)
    text, tab, base = (weighted_sum([getattr(s, name) for _, s in parts], weights)
                       for name in ("text_contribution", "tab_contribution", "baseline_score"))
    return logits, Scores(probs=softmax(logits), text_contribution=text, tab_contribution=tab, baseline_score=base)


