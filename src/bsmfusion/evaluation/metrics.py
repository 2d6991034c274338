"""Classification metrics, decision thresholds (chosen on validation) and calibration error."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def best_f1_threshold(labels: np.ndarray, positive_prob: np.ndarray) -> float:
    """The probability threshold that maximises F1 on (validation) data; 0.5 when undefined."""
    if labels.min() == labels.max():
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(labels, positive_prob)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    best = int(np.nanargmax(f1[:-1])) if len(thresholds) else 0
    return float(thresholds[best]) if len(thresholds) else 0.5


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class confidence over equal-width bins."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def predict_labels(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Binary: positive when P(class 1) ≥ threshold; multiclass: argmax."""
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(axis=1)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float | None = 0.5) -> dict[str, float]:
    """Binary: roc_auc, pr_auc, f1, accuracy, precision, recall, log_loss, ece, n, positives (at `threshold`).
    Multiclass: macro/micro ROC-AUC, PR-AUC and F1, plus accuracy, log_loss, ece, n."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    num_classes = probs.shape[1]
    predicted = predict_labels(probs, threshold)
    out: dict[str, float] = {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "log_loss": float(skm.log_loss(labels, probs, labels=list(range(num_classes)))),
        "ece": expected_calibration_error(labels, probs),
    }
    both = len(np.unique(labels)) > 1
    if num_classes == 2:
        positive = probs[:, 1]
        out.update({
            "positives": int(labels.sum()),
            "threshold": float(threshold if threshold is not None else 0.5),
            "roc_auc": float(skm.roc_auc_score(labels, positive)) if both else float("nan"),
            "pr_auc": float(skm.average_precision_score(labels, positive)) if both else float("nan"),
            "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
            "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
            "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        })
        return out
    onehot = np.eye(num_classes)[labels]
    present = onehot.sum(axis=0) > 0
    for average in ("macro", "micro"):
        out[f"f1_{average}"] = float(skm.f1_score(labels, predicted, average=average, zero_division=0))
        out[f"precision_{average}"] = float(skm.precision_score(labels, predicted, average=average, zero_division=0))
        out[f"recall_{average}"] = float(skm.recall_score(labels, predicted, average=average, zero_division=0))
        try:
            out[f"roc_auc_{average}"] = float(skm.roc_auc_score(onehot[:, present], probs[:, present], average=average))
            out[f"pr_auc_{average}"] = float(skm.average_precision_score(onehot[:, present], probs[:, present], average=average))
        except ValueError:
            out[f"roc_auc_{average}"] = out[f"pr_auc_{average}"] = float("nan")
    out["roc_auc"], out["pr_auc"], out["f1"] = out["roc_auc_macro"], out["pr_auc_macro"], out["f1_macro"]
    return out
