"""Per-message and per-feature values: they add up to the row's contributions, and planted signals come out on top."""
import json

import numpy as np
import pandas as pd
import pytest

import bsmfusion
from bsmfusion.explain.attribution import ExplainOptions
from tests.helpers import SHARED_DATA, frame_for, planted_thread

NEURAL = ("concat", "gate", "moe", "cross_attn")


def records_of(bundle, frame, options=None):
    return bsmfusion.load(bundle.path).explain(frame, level="rows", options=options)


def assert_adds_up(records, tolerance=1e-6):
    for r in records:
        messages = sum(m["contribution"] for m in r["messages"])
        features = sum(f["contribution"] for f in r["features"])
        assert abs(messages - r["text_contribution"]) <= tolerance, r["id"]
        assert abs(features - r["tab_contribution"]) <= tolerance, r["id"]


def message_hits(records, frame) -> float:
    """Share of positive rows whose largest positive message is the planted one."""
    planted = frame["planted_message"].to_numpy()
    hits = [max(r["messages"], key=lambda m: m["contribution"])["index"] == planted[i]
            for i, r in enumerate(records) if planted[i] >= 0]
    return float(np.mean(hits))


def feature_hits(records, column="price") -> float:
    return float(np.mean([max(r["features"], key=lambda f: abs(f["contribution"]))["column"] == column
                          for r in records]))


def check_planted(bundle_factory, kind, epochs=1):
    thread = bundle_factory(kind, signal="thread", rows=(300, 120), epochs=epochs)
    frame = frame_for("thread", 60, 2)
    records = records_of(thread, frame)
    assert_adds_up(records)
    assert message_hits(records, frame) >= 0.9
    tab = bundle_factory(kind, signal="tab", rows=(300, 120), epochs=epochs)
    records = records_of(tab, frame_for("tab", 60, 2))
    assert_adds_up(records)
    assert feature_hits(records) >= 0.9


@pytest.mark.slow
def test_tfidf_lr_values_add_up_and_find_the_planted_message_and_column(bundle_factory):
    check_planted(bundle_factory, "tfidf_lr")


@pytest.mark.slow
def test_gbdt_values_add_up_and_find_the_planted_message_and_column(bundle_factory):
    check_planted(bundle_factory, "gbdt")


@pytest.mark.slow
@pytest.mark.parametrize("fusion", NEURAL)
def test_neural_values_add_up_and_find_the_planted_message_and_column(bundle_factory, fusion):
    check_planted(bundle_factory, fusion, epochs=3)


def test_sampled_values_add_up_exactly_and_sit_within_their_stated_error_of_the_exact_ones(bundle_factory):
    bundle = bundle_factory("tfidf_lr", signal="thread", rows=(300, 120))
    frame = frame_for("thread", 20, 3)
    exact = records_of(bundle, frame, ExplainOptions(method="shapley"))
    sampled = records_of(bundle, frame, ExplainOptions(method="shapley", exact_max=0, permutations=64))
    assert_adds_up(sampled, 1e-9)
    z = [abs(s["contribution"] - e["contribution"]) / max(s["stderr"], 1e-12)
         for a, b in zip(sampled, exact) for s, e in zip(a["messages"] + a["features"], b["messages"] + b["features"])]
    assert sampled[0]["message_method"]["method"] == "sampled" and exact[0]["message_method"]["method"] == "exact"
    assert np.mean(np.array(z) < 3) >= 0.95, sorted(z)[-5:]


def test_the_long_and_the_default_levels(bundle_factory):
    predictor = bsmfusion.load(bundle_factory("tfidf_lr", signal="thread", rows=(300, 120)).path)
    frame = frame_for("thread", 5, 4).set_index(pd.Index(list("abcde")))
    messages, features = predictor.explain(frame, level="messages"), predictor.explain(frame, level="features")
    modalities = predictor.explain(frame)
    assert list(modalities.columns) == ["text_contribution", "tab_contribution", "baseline", "text_share"]
    np.testing.assert_allclose(messages.groupby("row")["contribution"].sum().loc[list("abcde")],
                               modalities["text_contribution"], atol=1e-5)
    np.testing.assert_allclose(features.groupby("row")["contribution"].sum().loc[list("abcde")],
                               modalities["tab_contribution"], atol=1e-5)
    assert set(features["column"]) == {"price", "ratio", "category"}


@pytest.mark.slow
def test_the_ensemble_is_its_members_weighted_sum_and_finds_the_planted_message(bundle_factory):
    """The default ensemble's make-up: two concat members (neural, neural_2) + tfidf_lr + gbdt (tiny BERT)."""
    bundle = bundle_factory("ensemble", signal="thread", rows=(300, 120), epochs=3,
                            settings={"model.ensemble.neural": "concat", "model.ensemble.neural_seeds": 2})
    frame = frame_for("thread", 40, 2)
    predictor = bsmfusion.load(bundle.path)
    records = predictor.explain(frame, level="rows")
    assert_adds_up(records, 1e-5)
    assert message_hits(records, frame) >= 0.9
    from bsmfusion.explain.attribution import calibration_scale, explain_with, member_config

    scale = calibration_scale(predictor.scorer.calibration)
    total = 0
    for _, weight, member in predictor.scorer.uncalibrated.members:
        one = explain_with(member, member_config(member, predictor.cfg), predictor.bundle.preprocessor.tabular, frame)
        total = total + scale * weight * np.concatenate([a.message_estimate.values for a in one])
    np.testing.assert_allclose(np.concatenate([[m["contribution"] for m in r["messages"]] for r in records]), total,
                               atol=1e-9)


@pytest.mark.slow
def test_a_keyword_planted_in_real_dialogues_is_the_top_message(tmp_path):
    path = SHARED_DATA / "craigslist_bargains" / "cb_flat.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder is not mounted)")
    real = pd.read_csv(path, usecols=["messages_only", "list_price"], nrows=400).dropna()
    rng = np.random.default_rng(0)
    rows, where = [], []
    label = rng.integers(0, 2, len(real))
    for cell, positive in zip(real["messages_only"], label):
        messages = str(cell).split(" ||| ")
        at = int(rng.integers(0, len(messages))) if positive else -1
        if positive:
            messages[at] = f"{messages[at]} wire the money via westernunion"
        rows.append(" ||| ".join(messages))
        where.append(at)
    frame = pd.DataFrame({"id": np.arange(len(real)), "dialogue": rows, "price": real["list_price"].to_numpy(),
                          "ratio": rng.normal(size=len(real)), "category": rng.choice(["a", "b"], len(real)),
                          "label": label, "planted_message": where})
    from tests.helpers import classical_config
    from bsmfusion.workflows.train import train

    train(classical_config("tfidf_lr"), frame.iloc[:300], frame.iloc[300:360], tmp_path / "m", progress=False)
    test = frame.iloc[360:].reset_index(drop=True)
    records = bsmfusion.load(tmp_path / "m").explain(test, level="rows", options=ExplainOptions(permutations=16))
    assert_adds_up(records, 1e-6)
    assert message_hits(records, test) >= 0.9


def test_the_default_plays_occlusion_above_three_messages_and_states_its_remainder(bundle_factory):
    """Occlusion: value i = text − v(N∖i) + r/n, r = text − Σ (text − v(N∖j)); rechecked here by scoring each
    leave-one-out thread through the predictor's modality split. No standard error: null in the JSON."""
    from bsmfusion.explain.page import render_page
    from bsmfusion.explain.players import render_messages, row_messages

    predictor = bsmfusion.load(bundle_factory("tfidf_lr", signal="thread", rows=(300, 120)).path)
    frame = frame_for("thread", 6, 7)
    records = predictor.explain(frame, level="rows")
    assert_adds_up(records, 1e-9)
    players = row_messages(frame, predictor.cfg)
    assert {len(p) for p in players} - {1, 2, 3}, "the planted threads should hold rows of more than 3 messages"
    for i, (record, messages) in enumerate(zip(records, players)):
        method = record["message_method"]
        if len(messages) <= 3:
            assert method["method"] == "exact" and method["remainder"] is None
            continue
        assert method["method"] == "occlusion" and method["max_stderr"] is None
        assert all(m["stderr"] is None for m in record["messages"])
        copies = frame.iloc[[i] * len(messages)].reset_index(drop=True)
        copies["dialogue"] = [render_messages(messages[:k] + messages[k + 1:]) for k in range(len(messages))]
        left_out = record["text_contribution"] - predictor.explain(copies)["text_contribution"].to_numpy()
        remainder = record["text_contribution"] - left_out.sum()
        assert method["remainder"] == pytest.approx(remainder, abs=1e-5)  # the modality columns are float32
        np.testing.assert_allclose([m["contribution"] for m in record["messages"]],
                                   left_out + remainder / len(messages), atol=1e-5)
        assert f"occlusion, interaction remainder {remainder:+.3g}" in render_page(record, "id")
    json.dumps(records, allow_nan=False)


def test_an_ensembles_remainder_is_its_members_weighted_sum():
    """r is linear in the game, as the values are: the combined row's values still add up with its remainder."""
    from bsmfusion.explain.attribution import Attribution, combine
    from bsmfusion.explain.shapley import plan

    p = plan(4, 8, 32, np.random.default_rng(0), method="occlusion")
    games = [lambda m: float(m[0] or m[1]) + 2.0 * m[3], lambda m: float(m[0] and m[2]) - m[1]]
    rows = []
    for game in games:
        estimate = p.estimate(np.array([game(mask) for mask in p.masks]))
        rows.append(Attribution([], estimate, [], [], estimate, float(game(np.ones(4, bool))), 0.0))
    ensemble = combine([(0.5, [rows[0]]), (-2.0, [rows[1]])])[0]
    estimate = ensemble.message_estimate
    assert estimate.method == "occlusion"
    assert estimate.remainder == pytest.approx(0.5 * rows[0].message_estimate.remainder
                                               - 2.0 * rows[1].message_estimate.remainder)
    assert estimate.values.sum() == pytest.approx(ensemble.text_contribution, abs=1e-12)
    assert rows[0].message_estimate.remainder == pytest.approx(1.0)  # messages 0 and 1 repeat each other


def test_predict_with_explain_adds_the_top_columns_from_the_same_explanations(bundle_factory, tmp_path):
    from bsmfusion.explain.record import with_top_columns

    predictor = bsmfusion.load(bundle_factory("tfidf_lr", signal="thread", rows=(300, 120)).path)
    frame = frame_for("thread", 12, 5)
    frame.to_csv(tmp_path / "in.csv", index=False)
    options = ExplainOptions()
    predictor.predict_file(tmp_path / "in.csv", tmp_path / "out.csv", progress=False, explain=options)
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    expected = with_top_columns(predictor.predict_frame(frame), predictor.explain_records(frame, options), options.top)
    assert list(written.columns) == list(expected.columns)
    assert written["top_messages"].tolist() == expected["top_messages"].tolist()
    assert written["top_features"].tolist() == expected["top_features"].tolist()
    assert all(json.loads(cell) for cell in written["top_messages"])  # every row names its top messages
