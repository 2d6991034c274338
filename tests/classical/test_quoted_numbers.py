"""gbdt's quoted-numbers block: what counts as a number, which roles it follows, the values and ratios it gives,
and that gbdt learns a last-offer-against-list-price signal with it (and not without), splits its contributions
exactly and stores it."""
import json

import numpy as np
import pytest

import bsmfusion
from bsmfusion.classical.gbdt import booster_input
from bsmfusion.classical.quoted_numbers import ANY, QuotedNumbers, numbers_in, thread_quotes
from bsmfusion.classical.train import fit_member, prepare
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.workflows.train import train
from tests.helpers import classical_config, planted, planted_offers

THREAD = "buyer: is it 2 years old? $1,500 ok?\nseller: no, 1.8k firm\nbuyer: 1600.50\nthanks, bye 3"


def test_numbers_are_digit_runs_with_commas_decimals_dollars_and_k_not_glued_to_words():
    assert numbers_in("$1,500 or 1.5k, maybe 20.") == [1500.0, 1500.0, 20.0]
    assert numbers_in("i3 v2 x,5 10am 1,000,000") == [10.0, 1_000_000.0]
    # a comma group is three digits (",5000" is not one), and a run longer than an amount is an id, left out
    assert numbers_in("1,5000 call 5551234567890123") == [1.0]
    assert numbers_in("no numbers here") == []


def test_each_role_keeps_its_own_quotes_and_role_less_lines_count_for_the_thread_only():
    assert thread_quotes(THREAD) == {"buyer": [2.0, 1500.0, 1600.5], "seller": [1800.0],
                                     ANY: [2.0, 1500.0, 1800.0, 1600.5, 3.0]}


def test_roles_are_the_two_that_quote_in_most_threads_each_in_at_least_a_tenth():
    threads = [THREAD] * 5 + ["agent: 5\nbuyer: ok"] * 4 + ["them: 7"] * 91
    # quoting threads: them 91, buyer 5, seller 5, agent 4 of 100: buyer is second but under a tenth
    assert QuotedNumbers.fit(threads, 1).roles == ("them",)
    # of the first 9: buyer 5 and seller 5 (ties by name), agent 4 is the third
    assert QuotedNumbers.fit(threads[:9], 1).roles == ("buyer", "seller")
    assert QuotedNumbers.fit(["no numbers", "none"], 3).roles == ()


def test_text_part_and_ratios_hold_the_last_first_count_and_gap():
    block = QuotedNumbers(("buyer", "seller"), 2)
    text = block.text_part([THREAD, "nothing quoted"])
    assert block.text_names() == ["quoted_last_buyer", "quoted_last_seller", "quoted_last_thread",
                                  "quoted_first_buyer", "quoted_first_seller", "quoted_first_thread",
                                  "quoted_count", "quoted_gap"]
    np.testing.assert_array_equal(text[0], [1600.5, 1800.0, 3.0, 2.0, 1800.0, 2.0, 5.0, 199.5])
    assert np.isnan(text[1]).tolist() == [True] * 6 + [False, True] and text[1, 6] == 0
    ratios = block.ratio_part(text, np.array([[2000.0, 0.0], [1.0, 1.0]]))
    assert block.ratio_names() == [f"{q}_per_num_{j}" for q in ("quoted_last_buyer", "quoted_last_seller",
                                                               "quoted_last_thread", "quoted_gap") for j in (0, 1)]
    assert block.ratio_part(text[:0], np.zeros((0, 2))).shape == (0, 8)
    np.testing.assert_allclose(ratios[0], [1600.5 / 2000, np.nan, 0.9, np.nan, 3 / 2000, np.nan, 199.5 / 2000, np.nan])
    assert np.isnan(ratios[1]).all()
    assert QuotedNumbers.from_dict(json.loads(json.dumps(block.to_dict()))) == block


def test_a_zero_numeric_value_gives_no_ratio_after_the_float32_tabular_round_trip():
    from bsmfusion.classical.gbdt import raw_numeric
    from bsmfusion.classical.tab_features import tab_matrix
    from bsmfusion.data.tabular import TabularPreprocessor

    frame = planted_offers(50, 0)
    frame.loc[:4, "price"] = 0.0
    tabular = TabularPreprocessor.fit(frame, ["price", "ratio"], ["category"])
    raw = raw_numeric(tabular, tab_matrix(tabular, frame))
    assert (raw[:5, 0] == 0).all() and np.allclose(raw[5:, 0], frame["price"][5:], rtol=1e-5)
    block = QuotedNumbers(("buyer", "seller"), 2)
    threads = [thread.replace(" <eos> ", "\n") for thread in frame["dialogue"]]
    ratios = block.ratio_part(block.text_part(threads), raw)  # column 0: the buyer's last offer / price
    assert np.isnan(ratios[:5, 0]).all() and np.isfinite(ratios[5:, 0]).all()


def fitted(setting: str, cv_folds: int = 0, rows: int = 600):
    cfg = classical_config("gbdt")
    cfg.model.classical.quoted_numbers, cfg.model.classical.cv_folds = setting, cv_folds
    return cfg, fit_member(cfg, prepare(cfg, planted_offers(rows, 0), planted_offers(200, 1)))


@pytest.fixture(scope="module")
def test_rows():
    return planted_offers(300, 2)


def roc(model, frame) -> float:
    return classification_metrics(frame["label"].to_numpy(), model.score_frame(frame).probs)["roc_auc"]


def test_gbdt_learns_the_last_offer_against_the_list_price_with_the_block_and_not_without(test_rows):
    _, (with_block, info) = fitted("on")
    _, (without, off_info) = fitted("off")
    assert with_block.quoted.roles == ("buyer", "seller") and info["quoted_numbers"]["used"]
    assert roc(with_block, test_rows) > 0.95 and roc(without, test_rows) < 0.8
    assert without.quoted is None and not off_info["quoted_numbers"]["used"]


@pytest.mark.slow
def test_auto_keeps_the_design_of_lower_cross_validated_log_loss(test_rows):
    _, (model, info) = fitted("auto", cv_folds=3)
    losses = info["design_log_loss"]
    assert losses["svd + quoted numbers"] < losses["svd"] and info["quoted_numbers"]["used"] and model.quoted is not None
    assert info["chosen_on"] == "3-fold CV on the training rows" and model.out_of_fold.shape == (600, 2)
    assert roc(model, test_rows) > 0.95


def test_auto_tries_no_block_when_no_training_thread_quotes_a_number():
    cfg = classical_config("gbdt")
    cfg.model.classical.quoted_numbers = "auto"
    model, info = fit_member(cfg, prepare(cfg, planted(300, "nonlinear", 0), planted(100, "nonlinear", 1)))
    assert model.quoted is None and list(info["design_log_loss"]) == ["svd"]


def test_contributions_add_up_and_the_bundle_stores_the_block(tmp_path, test_rows):
    cfg = classical_config("gbdt")
    cfg.model.classical.quoted_numbers = "on"
    train(cfg, planted_offers(600, 0), planted_offers(200, 1), tmp_path / "m", progress=False)
    assert json.loads((tmp_path / "m" / "quoted_numbers.json").read_text()) == {"roles": ["buyer", "seller"],
                                                                               "numeric_dim": 2}
    model = bsmfusion.load(tmp_path / "m").bundle.model
    scores = model.score_frame(test_rows)
    text, tab = model.features(test_rows)
    raw = model.booster.predict(booster_input(text, tab, model.quoted, model.tabular), raw_score=True)
    np.testing.assert_allclose(scores.text_contribution + scores.tab_contribution + scores.baseline_score, raw,
                               atol=1e-6, rtol=0)
    # the signal needs both blocks, so neither modality takes all of it
    share = bsmfusion.load(tmp_path / "m").predict_frame(test_rows)["text_share"].mean()
    assert 0.2 < share < 0.8
