"""Decision policies: thresholds computed by hand on a small synthetic validation set, parsing, config keys."""
import numpy as np
import pytest

from bsmfusion.config import config_from_dict
from bsmfusion.decision import choose_threshold, rates_at
from bsmfusion.policy import Policy, check_binary, parse_policy
from bsmfusion.errors import ConfigError
from tests.helpers import LABELS, SCORES

# LABELS, SCORES: 20 hand-scored validation rows; their thresholds are worked out in tests/helpers.py


@pytest.mark.parametrize("policy,expected", [
    (Policy("max_f1"), 0.50),
    (Policy("fixed", 0.37), 0.37),
    (Policy("precision_at_least", 0.8), 0.75),   # 0.80 and 0.75 qualify; 0.75 has more recall
    (Policy("precision_at_least", 0.95), 0.90),  # the three top rows: precision 1, the most recall at 0.90
    (Policy("precision_at_least", 2 / 3), 0.60),  # 6/9 reached exactly
    (Policy("recall_at_least", 0.5), 0.80),      # 4/8 first reached at 0.80
    (Policy("recall_at_least", 0.75), 0.60),
    (Policy("recall_at_least", 0.8), 0.50),      # 7/8
    (Policy("recall_at_least", 1.0), 0.30),
    (Policy("review_budget", 0.25), 0.80),       # at most 5 of 20 rows: the top five
    (Policy("review_budget", 0.05), 1.00),
    (Policy("review_budget", 0.27), 0.80),       # 5.4 rows: still five
    (Policy("costs", false_positive=1, false_negative=4), 0.20),  # a / (a + b)
    (Policy("costs", false_positive=3, false_negative=1), 0.75),
])
def test_each_policy_gives_the_hand_computed_threshold(policy, expected):
    assert choose_threshold(policy, LABELS, SCORES) == pytest.approx(expected, abs=1e-12)


def test_rates_at_a_threshold():
    rates = rates_at(LABELS, SCORES, 0.75, Policy("costs", false_positive=1, false_negative=4))
    assert rates == pytest.approx({"precision": 5 / 6, "recall": 5 / 8, "flagged_fraction": 6 / 20,
                                   "expected_cost": (1 * 1 + 4 * 3) / 20})


def test_an_unreachable_precision_names_the_best_achievable():
    labels, scores = np.array([0, 1, 0]), np.array([0.9, 0.8, 0.7])  # precision from the top: 0, 1/2, 1/3
    with pytest.raises(ConfigError, match=r"^train\.decision precision_at_least 0\.6 is not reachable on the 3 "
                                          r"validation rows: the best precision of any threshold is 0\.5000 "
                                          r"\(threshold 0\.8000, recall 1\.0000\)"):
        choose_threshold(Policy("precision_at_least", 0.6), labels, scores)


def test_a_budget_below_one_row_or_below_a_tie_names_the_smallest_budget():
    with pytest.raises(ConfigError, match=r"review_budget 0\.01 flags no validation row: .* smallest achievable "
                                          r"budget is 0\.05; raise it"):
        choose_threshold(Policy("review_budget", 0.01), LABELS, SCORES)
    tied = np.array([0.9, 0.9, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.0])
    with pytest.raises(ConfigError, match=r"shared by 3 of the 10 rows, so the smallest achievable budget is 0\.3"):
        choose_threshold(Policy("review_budget", 0.2), np.array([1, 0, 1, 0, 0, 0, 0, 0, 1, 0]), tied)
    assert choose_threshold(Policy("review_budget", 0.3), np.zeros(10, int) + (tied > 0.5), tied) == 0.9


def test_precision_and_recall_policies_need_positive_rows_a_budget_does_not():
    with pytest.raises(ConfigError, match="needs positive validation rows; there are none among 20"):
        choose_threshold(Policy("recall_at_least", 0.9), np.zeros(20, int), SCORES)
    assert choose_threshold(Policy("review_budget", 0.1), np.zeros(20, int), SCORES) == pytest.approx(0.95)


def test_the_costs_threshold_minimises_expected_cost_on_calibrated_probabilities():
    """With labels drawn from the probabilities, the empirical cost curve bottoms out at a / (a + b)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(size=400_000)
    labels = (rng.uniform(size=p.size) < p).astype(int)
    policy = Policy("costs", false_positive=1, false_negative=4)
    grid = np.linspace(0.02, 0.98, 49)
    cost = [rates_at(labels, p, t, policy)["expected_cost"] for t in grid]
    assert grid[int(np.argmin(cost))] == pytest.approx(choose_threshold(policy, [], []), abs=0.021)


@pytest.mark.parametrize("text,expected", [
    ("max_f1", Policy()),
    ("fixed=0.3", Policy("fixed", 0.3)),
    ("precision_at_least=0.95", Policy("precision_at_least", 0.95)),
    ("review_budget=0.02", Policy("review_budget", 0.02)),
    ("costs=1,20", Policy("costs", false_positive=1.0, false_negative=20.0)),
    ("{costs: {false_positive: 1, false_negative: 20}}", Policy("costs", false_positive=1.0, false_negative=20.0)),
    ({"recall_at_least": 0.9}, Policy("recall_at_least", 0.9)),
])
def test_policies_parse_from_the_command_line_and_the_config(text, expected):
    assert parse_policy(text) == expected
    assert parse_policy(expected.to_config()) == expected  # the canonical config value round-trips


@pytest.mark.parametrize("value,message", [
    ("best", "unknown decision policy 'best'"),
    ({"precision_at_least": 1.5}, r"precision_at_least must be in \(0, 1\], got 1\.5"),
    ({"fixed": 1.0}, r"fixed must be in \(0, 1\), got 1"),
    ("costs=1", r"costs needs \{false_positive: A, false_negative: B\}"),
    ({"costs": {"false_positive": 0, "false_negative": 1}}, r"costs\.false_positive must be in \(0, inf\)"),
    ({"fixed": 0.3, "review_budget": 0.1}, "exactly one of"),
])
def test_malformed_policies_are_one_line_errors(value, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(value)


def test_config_keys_and_the_old_threshold_spelling():
    assert config_from_dict({}).train.decision == "max_f1" and config_from_dict({}).train.calibration == "auto"
    cfg = config_from_dict({"train": {"decision": {"precision_at_least": 0.9}, "calibration": "isotonic"}})
    assert cfg.train.policy == Policy("precision_at_least", 0.9) and cfg.to_dict()["train"]["decision"] == {
        "precision_at_least": 0.9}
    # configs and bundles written before train.decision
    assert config_from_dict({"train": {"threshold": "fixed", "fixed_threshold": 0.3}}).train.policy == Policy("fixed", 0.3)
    assert config_from_dict({"train": {"threshold": "max_f1", "fixed_threshold": 0.5}}).train.decision == "max_f1"
    with pytest.raises(ConfigError, match="train.threshold: fixed and train.decision are both set"):
        config_from_dict({"train": {"threshold": "fixed", "decision": {"fixed": 0.2}}})
    with pytest.raises(ConfigError, match=r"config key 'train\.decision': unknown decision policy 'precision'"):
        config_from_dict({"train": {"decision": {"precision": 0.9}}})


def test_multiclass_takes_the_argmax_and_refuses_binary_only_policies():
    assert config_from_dict({"model": {"num_classes": 3}}).train.decision == "max_f1"  # argmax
    with pytest.raises(ConfigError, match=r"train\.decision 'review_budget' is for binary tasks, not a model with 3 "
                                          r"classes; use max_f1"):
        config_from_dict({"model": {"num_classes": 3}, "train": {"decision": {"review_budget": 0.1}}})
    with pytest.raises(ConfigError, match=r"train\.calibration 'isotonic' is for binary tasks, not a model with 3 "
                                          r"classes; use temperature"):
        config_from_dict({"model": {"num_classes": 3}, "train": {"calibration": "isotonic"}})


def test_expected_f1_picks_the_threshold_whose_f1_the_calibrated_probabilities_expect():
    from bsmfusion.decision import expected_f1_threshold

    rng = np.random.default_rng(0)
    for _ in range(50):
        probs = np.round(rng.beta(0.6, 1.2, rng.integers(1, 60)), 2)  # ties on purpose

        def expected(t):
            flagged = probs >= t
            return 2 * probs[flagged].sum() / (flagged.sum() + probs.sum())

        best = max(sorted(set(probs.tolist())), key=lambda t: (expected(t), -t))
        assert expected_f1_threshold(probs) == pytest.approx(best) or expected(expected_f1_threshold(probs)) == \
            pytest.approx(expected(best), abs=1e-12)
    # the labels play no part: 0.8 is the best cut of these probabilities (expected F1 0.8475 against 0.8116 at 0.3)
    assert expected_f1_threshold(np.array([0.9, 0.8, 0.8, 0.3, 0.1])) == 0.8
    assert expected_f1_threshold(np.array([])) == 0.5


def test_soft_f1_with_the_labels_is_the_max_f1_threshold_and_with_the_probabilities_expected_f1():
    from bsmfusion.decision import expected_f1_threshold, soft_f1_threshold
    from bsmfusion.evaluation.metrics import best_f1_threshold

    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(4, 60))
        probs, labels = np.round(rng.random(n), 2), rng.integers(0, 2, n)  # ties on purpose
        labels[:2] = [0, 1]

        def f1(t):
            flagged = probs >= t
            return 2 * (flagged & (labels == 1)).sum() / (flagged.sum() + labels.sum())

        assert f1(soft_f1_threshold(probs, labels)) == pytest.approx(f1(best_f1_threshold(labels, probs)))
        assert soft_f1_threshold(probs, labels) >= best_f1_threshold(labels, probs)  # of tied F1s, the highest
        assert soft_f1_threshold(probs, probs) == expected_f1_threshold(probs)
    # the soft label, not the score, counts as the positive: the one positive is the 0.2 row
    assert soft_f1_threshold(np.array([0.9, 0.5, 0.2]), np.array([0.0, 0.0, 1.0])) == 0.2
    assert soft_f1_threshold(np.array([0.9, 0.5]), np.zeros(2)) == 0.5


def test_expected_f1_parses_round_trips_and_is_binary_only():
    policy = parse_policy("expected_f1")
    assert (policy.name, policy.to_config(), parse_policy(policy.to_config())) == ("expected_f1", "expected_f1", policy)
    assert parse_policy({"expected_f1": None}) == parse_policy("{expected_f1: }") == policy
    assert choose_threshold(policy, np.array([1, 0, 1]), np.array([0.9, 0.2, 0.7])) == 0.7  # 2·1.6/(2 + 1.8)
    with pytest.raises(ConfigError, match="for binary tasks"):
        check_binary(3, "train.decision", "expected_f1")
