"""evaluate's decision report: bootstrap intervals, alternative policies, calibration before/after, training errors."""
import json

import numpy as np
import pytest
import yaml

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.policy import Policy
from bsmfusion.errors import ConfigError
from bsmfusion.evaluation.operating_point import alternatives, bootstrap_rates, simulated_ece
from bsmfusion.evaluation.report import evaluate
from bsmfusion.workflows.train import train
from tests.helpers import LABELS, SCORES, classical_config, mixed, planted


def test_bootstrap_intervals_match_the_binomial_width():
    """1,000 rows, 100 flagged of which 80 positive: precision 0.8 ± 1.96·√(0.8·0.2/100) ≈ ± 0.078."""
    labels = np.r_[np.ones(80), np.zeros(20), np.ones(100), np.zeros(800)].astype(int)
    probs = np.r_[np.full(100, 0.9), np.full(900, 0.1)]
    rates = bootstrap_rates(labels, probs, 0.5, Policy("costs", false_positive=1, false_negative=5))
    assert rates["precision"]["value"] == pytest.approx(0.8) and rates["recall"]["value"] == pytest.approx(80 / 180)
    assert rates["flagged_fraction"]["value"] == pytest.approx(0.1)
    assert rates["expected_cost"]["value"] == pytest.approx((20 + 5 * 100) / 1000)
    assert rates["precision"]["low"] == pytest.approx(0.8 - 0.078, abs=0.015)
    assert rates["precision"]["high"] == pytest.approx(0.8 + 0.078, abs=0.015)
    # flagged fraction: binomial over 1,000 rows, ± 1.96·√(0.1·0.9/1000) ≈ ± 0.019
    assert rates["flagged_fraction"]["high"] - rates["flagged_fraction"]["low"] == pytest.approx(0.037, abs=0.006)


def test_alternatives_take_their_thresholds_from_validation():
    """The hand-computed thresholds of tests/test_decision.py, measured here on the same rows."""
    rows = {json.dumps(r["policy"]): r for r in alternatives(LABELS, SCORES, (LABELS, SCORES))}
    assert rows['{"recall_at_least": 0.5}']["threshold"] == pytest.approx(0.80)
    assert rows['{"recall_at_least": 0.8}']["threshold"] == pytest.approx(0.50)
    assert rows['{"recall_at_least": 0.9}']["threshold"] == pytest.approx(0.30)
    assert rows['{"recall_at_least": 0.9}']["precision"] == pytest.approx(8 / 15)
    assert rows['{"review_budget": 0.05}']["threshold"] == pytest.approx(1.00)
    assert rows['{"review_budget": 0.1}']["flagged_fraction"] == pytest.approx(0.10)
    # 1% and 2% of 20 rows are less than one row: reported, not raised
    assert rows['{"review_budget": 0.01}']["threshold"] is None and "raise it" in rows['{"review_budget": 0.01}']["note"]
    assert {r["chosen_on"] for r in rows.values()} == {"validation"}


def test_ece_of_a_perfectly_calibrated_model_is_its_sampling_noise():
    """All probabilities 0.5 on 1,000 rows: E|mean(y) − 0.5| = √(0.25/1000)·√(2/π) ≈ 0.0126."""
    assert simulated_ece(np.full((1000, 2), 0.5)) == pytest.approx(0.0126, rel=0.15)


@pytest.fixture
def bundle(bundle_factory):
    """tfidf_lr on a tabular signal, decided by review budget (seconds to train; the session's shared bundle)."""
    return bundle_factory("tfidf_lr", signal="tab", rows=(300, 200),
                          settings={"train.decision": {"review_budget": 0.3}}).path


def test_evaluate_reports_the_operating_point_alternatives_and_calibration(bundle, tmp_path):
    test = planted(300, "tab", 2)
    metrics = evaluate(bsmfusion.load(bundle), test, tmp_path / "report")
    stored = json.loads((tmp_path / "report" / "metrics.json").read_text())
    point = stored["operating_point"]
    assert point["policy"] == {"review_budget": 0.3} and point["source"] == "bundle"
    assert point["threshold"] == pytest.approx(json.loads((bundle / "meta.json").read_text())["threshold"])
    assert point["validation"]["flagged_fraction"] <= 0.3
    for name in ("precision", "recall", "flagged_fraction"):
        assert point[name]["low"] <= point[name]["value"] <= point[name]["high"]
    assert point["precision"]["value"] == pytest.approx(metrics["precision"])  # the same threshold as the table
    assert len(stored["alternatives"]) == 7 and stored["alternatives"][0]["chosen_on"] == "validation"
    calibration = stored["calibration"]
    assert calibration["method"] == "platt" and calibration["scale"] > 0  # auto: Platt for a binary model
    assert calibration["ece_after"] == pytest.approx(metrics["ece"])
    report = (tmp_path / "report" / "report.md").read_text()
    for section in ("## Operating point", "## Alternative policies", "## Calibration", "95% interval"):
        assert section in report
    assert {"roc.png", "pr.png", "calibration.png"} <= {p.name for p in (tmp_path / "report").iterdir()}


def test_a_policy_given_at_scoring_time_is_resolved_on_the_stored_validation_scores(bundle):
    own = bsmfusion.load(bundle)
    again = bsmfusion.load(bundle, decision="review_budget=0.3")
    assert again.threshold == own.threshold and again.decision.source == "override"
    val = planted(200, "tab", 1)
    flagged = (own.predict_frame(val)["predicted_label"] == 1).mean()  # 0/1 labels stay integers
    assert flagged <= 0.3  # the budget holds on the rows it was chosen on
    assert bsmfusion.load(bundle, threshold=0.5).threshold == 0.5
    assert bsmfusion.load(bundle, decision={"costs": {"false_positive": 1, "false_negative": 3}}).threshold == 0.25
    with pytest.raises(ConfigError, match=r"^pass decision or threshold, not both \(threshold=T is decision "
                                          r"fixed=T\)$"):
        bsmfusion.load(bundle, decision="max_f1", threshold=0.5)
    with pytest.raises(ConfigError, match=r"^decision review_budget 0\.001 flags no validation row"):
        bsmfusion.load(bundle, decision="review_budget=0.001")
    # Python names the keywords, the CLI its flags (cli.OPTION_FLAGS renders the same error)
    from bsmfusion.cli import OPTION_FLAGS

    with pytest.raises(ConfigError, match=r"^pass decision or threshold, not both \(threshold=T is decision "
                                          r"fixed=T\)$") as err:
        bsmfusion.load(bundle, decision="max_f1", threshold=0.5)
    assert err.value.render(OPTION_FLAGS) == "pass --decision or --threshold, not both (--threshold=T is --decision fixed=T)"


def test_a_budget_under_one_validation_row_is_refused_before_training(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(classical_config("tfidf_lr").to_dict()))
    planted(200, "tab", 0).to_csv(tmp_path / "train.csv", index=False)
    planted(120, "tab", 1).to_csv(tmp_path / "val.csv", index=False)
    code = main(["train", "--config", str(config), "--train", str(tmp_path / "train.csv"), "--val",
                 str(tmp_path / "val.csv"), "--out", str(tmp_path / "m"), "--set", "train.decision={review_budget: 0.005}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and not (tmp_path / "m").exists()
    assert err == ("error: train.decision review_budget 0.005 flags less than one of the 120 validation rows; "
                   "raise it to at least 0.008333 or use more validation rows")  # refused before training


def test_multiclass_bundles_take_the_argmax_and_refuse_binary_policies(tmp_path):
    def three(n, seed):
        frame = planted(n, "text", seed)
        frame["label"] = frame["label"] + (frame["price"] > 0).astype(int)
        return frame

    cfg = classical_config("tfidf_lr")
    cfg.model.num_classes = 3
    train(cfg, three(300, 0), three(150, 1), tmp_path / "m", progress=False)
    predictor = bsmfusion.load(tmp_path / "m")
    assert predictor.threshold is None and predictor.decision.describe() == "argmax (multiclass)"
    scores = predictor.score_frame(three(50, 2))
    np.testing.assert_array_equal(predictor.predict_frame(three(50, 2))["predicted_label"].astype(int),
                                  scores.probs.argmax(1))
    with pytest.raises(ConfigError, match=r"^decision 'precision_at_least' is for binary tasks, not a model with 3 "
                                          r"classes; use max_f1"):
        bsmfusion.load(tmp_path / "m", decision="precision_at_least=0.9")
    assert not (tmp_path / "m" / "validation_scores.json").exists()
    assert "operating_point" not in evaluate(predictor, three(60, 3), tmp_path / "r")


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibration_fixes_a_deliberately_overconfident_model_on_new_rows(tmp_path, method):
    """tfidf_lr with almost no regularisation (C = 1000) on 300 noisy rows: near-0/1 probabilities. Calibrated on
    the validation rows, the test rows' ECE falls to the level of ECE's own noise and the log loss drops."""
    cfg = classical_config("tfidf_lr")
    cfg.model.classical.lr_c_grid = [1000.0]
    cfg.train.calibration = method
    train(cfg, mixed(300, 0), mixed(300, 1), tmp_path / "m", progress=False)
    calibration = bsmfusion.load(tmp_path / "m").evaluate(mixed(600, 2))["calibration"]
    assert calibration["method"] == method
    assert calibration["ece_before"] > 0.1 and calibration["ece_after"] < 0.06, calibration
    assert calibration["log_loss_after"] < 0.8 * calibration["log_loss_before"], calibration
