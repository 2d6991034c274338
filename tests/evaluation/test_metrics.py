import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from bsmfusion.evaluation.metrics import best_f1_threshold, classification_metrics, expected_calibration_error


def test_binary_metrics_at_threshold():
    labels = np.array([0, 0, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9, 0.2])
    probs = np.stack([1 - p1, p1], 1)
    m = classification_metrics(labels, probs, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, p1))
    assert m["f1"] == pytest.approx(f1_score(labels, p1 >= 0.5))
    assert (m["n"], m["positives"]) == (6, 3)
    assert set(m) >= {"roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "log_loss", "ece", "n", "positives"}
    t = best_f1_threshold(labels, p1)
    assert classification_metrics(labels, probs, t)["f1"] >= m["f1"]


def test_multiclass_macro_and_micro():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 2 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(labels, probs, threshold=None)
    for key in ("roc_auc_macro", "roc_auc_micro", "pr_auc_macro", "pr_auc_micro", "f1_macro", "f1_micro"):
        assert 0.5 < m[key] <= 1.0
    assert m["accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())


def test_ece_is_zero_for_calibrated_and_large_for_overconfident():
    labels = np.array([1] * 80 + [0] * 20)
    calibrated = np.tile([0.2, 0.8], (100, 1))
    assert expected_calibration_error(labels, calibrated) == pytest.approx(0.0, abs=1e-9)
    overconfident = np.tile([0.01, 0.99], (100, 1))
    assert expected_calibration_error(labels, overconfident) == pytest.approx(0.19, abs=1e-6)
