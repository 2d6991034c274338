"""Calibration: temperature scaling and isotonic regression on synthetic scores with known answers."""
import json

import numpy as np
import pytest

from bsmfusion.calibration import TEMPERATURE_BOUNDS, Calibration, fit_calibration, log_odds
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.models.scores import Scores


def binary_scores(z: np.ndarray, text_share: float = 0.3) -> Scores:
    """Scores whose log-odds are `z`, split text : tab = share : 1 − share around a baseline of 0.25."""
    body = z - 0.25
    p1 = 1 / (1 + np.exp(-z))
    return Scores(np.stack([1 - p1, p1], 1), text_share * body, (1 - text_share) * body, np.full_like(z, 0.25))


def overconfident(n: int = 20_000, factor: float = 3.0, seed: int = 0) -> tuple[np.ndarray, Scores]:
    """Labels drawn from σ(z); the model reports `factor`·z (over-confident when factor > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, binary_scores(factor * z)


@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_temperature_recovers_the_scale_of_the_log_odds(factor):
    labels, scores = overconfident(factor=factor)
    calibration = fit_calibration("temperature", labels, scores)
    assert calibration.temperature == pytest.approx(factor, rel=0.05)


def test_temperature_lowers_ece_and_log_loss_of_an_overconfident_model():
    labels, scores = overconfident()
    calibrated = fit_calibration("temperature", labels, scores).apply(scores)
    before = classification_metrics(labels, scores.probs, None)
    after = classification_metrics(labels, calibrated.probs, None)
    assert before["ece"] > 0.08 and after["ece"] < 0.015, (before["ece"], after["ece"])
    assert after["log_loss"] < before["log_loss"] - 0.05
    assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-12)  # the ranking is untouched
    np.testing.assert_array_equal(calibrated.uncalibrated_probs, scores.probs)


def test_temperature_divides_the_contributions_so_they_add_up_to_the_calibrated_log_odds():
    labels, scores = overconfident(n=500)
    calibration = Calibration("temperature", temperature=2.5)
    calibrated = calibration.apply(scores)
    total = calibrated.text_contribution + calibrated.tab_contribution + calibrated.baseline_score
    np.testing.assert_allclose(total, np.log(calibrated.probs[:, 1] / calibrated.probs[:, 0]), atol=1e-9)
    np.testing.assert_allclose(calibrated.text_contribution, scores.text_contribution / 2.5, atol=1e-12)
    np.testing.assert_allclose(calibrated.baseline_score, np.full(500, 0.1), atol=1e-12)
    np.testing.assert_allclose(calibrated.text_share, scores.text_share, atol=1e-6)  # a ratio: unchanged by 1/T


def test_platt_recovers_scale_and_shift_and_keeps_the_split_exact():
    """The model reports 3·z − 4.5 for labels drawn from σ(z): Platt's a ≈ 1/3 and b ≈ 1.5 undo both, where one
    temperature can only undo the scale; the calibrated contributions still add up to the calibrated log-odds."""
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 2.0, 40_000)
    labels = (rng.uniform(size=len(z)) < 1 / (1 + np.exp(-z))).astype(int)
    scores = binary_scores(3.0 * z - 4.5)
    platt = fit_calibration("platt", labels, scores)
    assert platt.scale == pytest.approx(1 / 3, rel=0.04) and platt.bias == pytest.approx(1.5, abs=0.05)
    calibrated = platt.apply(scores)
    shifted_only = fit_calibration("temperature", labels, scores).apply(scores)
    after, temperature_only = (classification_metrics(labels, s.probs, None) for s in (calibrated, shifted_only))
    assert after["ece"] < 0.01 < temperature_only["ece"] and after["log_loss"] < temperature_only["log_loss"]
    total = calibrated.text_contribution + calibrated.tab_contribution + calibrated.baseline_score
    np.testing.assert_allclose(total, np.log(calibrated.probs[:, 1] / calibrated.probs[:, 0]), atol=1e-9)
    np.testing.assert_allclose(calibrated.text_share, scores.text_share, atol=1e-9)


def test_isotonic_lowers_ece_keeps_the_order_and_leaves_the_contributions_uncalibrated():
    labels, scores = overconfident()
    calibration = fit_calibration("isotonic", labels, scores)
    calibrated = calibration.apply(scores)
    assert classification_metrics(labels, calibrated.probs, None)["ece"] < 0.02
    order = np.argsort(log_odds(scores))
    assert np.all(np.diff(calibrated.probs[order, 1]) >= 0)  # monotone in the model's score
    np.testing.assert_array_equal(calibrated.text_contribution, scores.text_contribution)
    np.testing.assert_array_equal(calibrated.baseline_score, scores.baseline_score)
    # Platt's targets keep the end steps off 0 and 1: (N₊+1)/(N₊+2) at most, 1/(N₋+2) at least
    positives = labels.sum()
    assert calibrated.probs[:, 1].max() <= (positives + 1) / (positives + 2) + 1e-12
    assert calibrated.probs[:, 1].min() >= 1 / (len(labels) - positives + 2) - 1e-12


def test_separable_validation_rows_give_a_finite_temperature():
    """Without Platt's targets the log loss would fall forever as T → 0 on separated rows."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = binary_scores(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]))
    calibration = fit_calibration("temperature", labels, scores)
    assert TEMPERATURE_BOUNDS[0] * 1.01 < calibration.temperature < TEMPERATURE_BOUNDS[1]
    # the targets are 4/5 and 1/5: the fitted probabilities stay near them, not at 0 or 1
    p = calibration.apply(scores).probs[:, 1]
    assert 0.75 < p[labels == 1].mean() < 0.9 and 0.1 < p[labels == 0].mean() < 0.25


@pytest.mark.parametrize("scale,bound", [(1e-5, 0), (500.0, 1)])
def test_a_temperature_at_its_bound_is_a_one_line_warning(scale, bound, caplog):
    """Tiny log-odds that separate the rows want T → 0; huge ones that carry no signal want T → ∞."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    z = np.where(labels == 1, 1.0, -1.0) if bound == 0 else rng.choice([-1.0, 1.0], size=400)
    with caplog.at_level("WARNING", logger="bsmfusion.train"):
        calibration = fit_calibration("temperature", labels, binary_scores(scale * z))
    assert calibration.temperature == pytest.approx(TEMPERATURE_BOUNDS[bound], rel=1e-3)
    [record] = [r for r in caplog.records if "temperature" in r.getMessage()]
    assert record.levelname == "WARNING" and "\n" not in record.getMessage()
    assert f"stopped at the bound T = {TEMPERATURE_BOUNDS[bound]:.4g}" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="bsmfusion.train"):
        fit_calibration("temperature", *overconfident(n=2000))  # an ordinary fit: no warning
    assert not caplog.records


def test_multiclass_temperature_scales_the_log_probabilities_and_the_split():
    rng = np.random.default_rng(1)
    n, k = 6000, 3
    logits = rng.normal(0, 1.5, (n, k))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (rng.uniform(size=(n, 1)) > true.cumsum(1)).sum(1)
    model = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    split = np.take_along_axis(3 * logits, model.argmax(1)[:, None], 1)[:, 0]
    scores = Scores(model, 0.5 * split, 0.5 * split, np.zeros(n))
    calibration = fit_calibration("temperature", labels, scores)
    assert calibration.temperature == pytest.approx(3.0, rel=0.07)
    calibrated = calibration.apply(scores)
    np.testing.assert_allclose(calibrated.probs, true, atol=0.05)
    np.testing.assert_allclose(calibrated.text_contribution, 0.5 * split / calibration.temperature, atol=1e-12)
    with pytest.raises(ValueError, match=r"^train\.calibration 'isotonic' is for binary tasks, not a model with 3 "
                                         r"classes; use temperature$"):
        fit_calibration("isotonic", labels, scores)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "none"])
def test_the_stored_map_applies_exactly_like_the_fitted_one(method):
    labels, scores = overconfident(n=2000)
    fitted = fit_calibration(method, labels, scores)
    stored = Calibration.from_json(json.loads(json.dumps(fitted.to_json())))
    assert stored == fitted
    np.testing.assert_array_equal(stored.apply(scores).probs, fitted.apply(scores).probs)
    if method == "none":
        np.testing.assert_array_equal(fitted.apply(scores).probs, scores.probs)
    assert Calibration.from_json(None).method == "none"  # bundles written before calibration existed
