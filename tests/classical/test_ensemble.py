"""model.fusion: ensemble — greedy weights on validation, exact combined contributions, one bundle of bundles."""
import json
import shutil

import numpy as np
import pytest
import torch

import bsmfusion
from bsmfusion.errors import BundleError
from bsmfusion.inference.predictor import CONTRIBUTION_COLUMNS
from bsmfusion.workflows.train import train
from tests.helpers import ensemble_config, mixed, planted_frame


@pytest.fixture
def ensemble(bundle_factory):
    """(bundle, result): neural (gate) + tfidf_lr + gbdt on 240 `mixed` rows (the session's shared bundle). About
    30 s to train on 2 cores: every test that needs it is marked slow."""
    trained = bundle_factory("ensemble", signal="mixed", rows=(240, 160))
    return trained.path, trained.result


@pytest.mark.slow
def test_weights_sum_to_one_and_meta_records_every_member(ensemble):
    out, _ = ensemble
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == meta["fusion"] == "ensemble"
    assert [m["name"] for m in meta["members"]] == ["neural", "tfidf_lr", "gbdt"]
    assert sum(meta["weights"].values()) == pytest.approx(1.0, abs=1e-12)
    assert all(0 <= m["weight"] <= 1 and "roc_auc" in m["validation"] for m in meta["members"])
    assert meta["members"][0]["fusion"] == "gate"
    assert meta["selection"]["rows"].startswith("validation rows + the neural members' shared holdout")
    selection = meta["selection"]
    assert selection["bags"] == 32 and "picks" not in selection  # the weights come from the bags alone
    bags = np.array(selection["bag_weights"])
    assert bags.shape == (32, 3) and np.allclose(bags.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(bags.mean(axis=0), [meta["weights"][n] for n in ("neural", "tfidf_lr", "gbdt")], atol=1e-5)


@pytest.mark.slow
def test_no_member_chooses_on_the_validation_rows_that_fit_the_weights(ensemble):
    out, result = ensemble
    meta = json.loads((out / "meta.json").read_text())
    # the neural member early-stops on a holdout of the training rows; tfidf_lr and gbdt choose by 5-fold CV
    assert meta["member_rows"]["choices"] == "neural: 15% of the training rows"
    members = {m["name"]: json.loads((out / "members" / m["name"] / "meta.json").read_text()) for m in meta["members"]}
    assert members["tfidf_lr"]["train_rows"] == members["gbdt"]["train_rows"] == 240  # all training rows
    assert members["neural"]["train_rows"] < 240
    for name in ("tfidf_lr", "gbdt"):
        assert members[name]["training"]["chosen_on"] == "5-fold CV on the training rows"
    assert [set(step) for step in members["tfidf_lr"]["training"]["c_search"]] == [{"C", "cv_roc_auc", "cv_log_loss"}] * 4
    assert all(m["validation"]["roc_auc"] is not None for m in meta["members"])
    assert json.loads((out / "metrics.json").read_text())["validation"]["roc_auc"] == result.val_metrics["roc_auc"]


@pytest.mark.slow
def test_refit_neural_retrains_on_all_training_rows_for_the_holdouts_best_epoch_count(tmp_path):
    """`model.ensemble.refit_neural`: the holdout run picks the epoch count, the member in the bundle is a fresh run
    on all 240 training rows for that many epochs, its last weights kept."""
    from bsmfusion.bundle import load_bundle
    from bsmfusion.training.history import best_epoch

    cfg = ensemble_config(members=("neural", "tfidf_lr"))
    cfg.train.epochs = 3
    cfg.model.ensemble.neural_patience = 2  # all three epochs in the holdout history, whatever they score
    cfg.model.ensemble.refit_neural = True
    out = tmp_path / "model"
    train(cfg, mixed(240, 0), mixed(160, 1), out, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    refit = meta["members"][0]["refit"]
    assert [row["epoch"] for row in refit["holdout_history"]] == [1, 2, 3]
    assert refit["epochs"] == best_epoch(refit["holdout_history"], "val_roc_auc")
    neural = json.loads((out / "members" / "neural" / "meta.json").read_text())
    assert neural["train_rows"] == 240 and neural["epochs_run"] == refit["epochs"]
    member_cfg = load_bundle(out / "members" / "neural").cfg
    assert (member_cfg.train.keep_weights, member_cfg.train.epochs) == ("last", refit["epochs"])
    assert meta["member_rows"]["fit"].startswith("neural: all training rows, refitted")
    assert "refit" not in meta["members"][1]
    predictor = bsmfusion.load(out)
    assert predictor.predict_proba(mixed(20, 2)).shape[0] == 20


@pytest.mark.slow
def test_ensemble_bundle_round_trip_and_exact_contributions(ensemble):
    out, result = ensemble
    members = sorted(p.name for p in (out / "members").iterdir())
    assert members == ["gbdt", "neural", "tfidf_lr"]
    manifest = json.loads((out / "manifest.json").read_text())
    for name in members:  # each member is a complete bundle, its files listed in the top manifest too
        assert (out / "members" / name / "manifest.json").is_file()
        own = json.loads((out / "members" / name / "manifest.json").read_text())
        assert all(manifest[f"members/{name}/{f}"] == digest for f, digest in own.items())
    assert not [p for p in out.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    val = mixed(160, 1)
    first, second = bsmfusion.load(out).predict_frame(val), bsmfusion.load(out).predict_frame(val)
    assert first.equals(second)
    assert list(first.columns) == ["id", "prob_0", "prob_1", "predicted_label", *CONTRIBUTION_COLUMNS, "error"]
    predictor = bsmfusion.load(out)
    assert predictor.threshold == result.threshold
    scores = predictor.score_frame(val)
    from bsmfusion.evaluation.metrics import classification_metrics

    metrics = classification_metrics(val["label"].to_numpy(), scores.probs, predictor.threshold)
    assert metrics["roc_auc"] == pytest.approx(result.val_metrics["roc_auc"], abs=1e-9)
    # the weighted sum of the members' splits adds up to the ensemble's log-odds
    log_odds = np.log(scores.probs[:, 1]) - np.log(scores.probs[:, 0])
    total = scores.text_contribution + scores.tab_contribution + scores.baseline_score
    np.testing.assert_allclose(total, log_odds, atol=1e-6)
    assert "ensemble" == predictor.precision.requested and "×" in predictor.describe_precision()


@pytest.mark.slow
def test_compile_reaches_the_neural_member_only(ensemble, monkeypatch):
    from bsmfusion.scoring import compiled

    calls = []
    monkeypatch.setattr(compiled, "compile_backbone", lambda model, precision, device: calls.append(model) or "on: stub")
    predictor = bsmfusion.load(ensemble[0], compile=True)
    assert len(calls) == 1 and calls[0].text_subnetwork is not None  # the neural member's model, once
    assert "neural" in predictor.describe_precision() and "compile on: stub" in predictor.describe_precision()


@pytest.mark.slow
def test_a_tampered_member_file_is_refused(ensemble, tmp_path):
    out, _ = ensemble
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "members" / "tfidf_lr" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"file 'members/tfidf_lr/weights.safetensors' does not match"):
        bsmfusion.load(copy)


@pytest.mark.slow
def test_multiclass_ensemble_splits_every_member_at_the_ensembles_class(tmp_path):
    """Three classes (keyword + price > 0): members that predict another class are re-split at the ensemble's."""
    def three(n, seed):
        frame = planted_frame(n, "text", seed)
        frame["label"] = frame["label"] + (frame["price"] > 0).astype(int)
        return frame

    train(ensemble_config(("tfidf_lr", "gbdt"), num_classes=3), three(300, 0), three(150, 1), tmp_path / "m",
          progress=False)
    predictor = bsmfusion.load(tmp_path / "m")
    test = three(120, 2)
    scores = predictor.score_frame(test)
    target = scores.probs.argmax(axis=1)
    members = predictor.scorer.uncalibrated.members
    assert {member.calibration.method for _, _, member in members} == {"none"}  # only the combined score is calibrated
    expected = sum(w * member.uncalibrated.four_logits(test)[0][np.arange(len(test)), target]
                   for _, w, member in members)
    temperature = predictor.calibration.temperature  # the combined score is calibrated: logits / T, split / T
    assert predictor.calibration.method == "temperature" and temperature != 1.0
    np.testing.assert_allclose(scores.text_contribution + scores.tab_contribution + scores.baseline_score,
                               expected / temperature, atol=1e-9)
    assert predictor.predict_frame(test)["predicted_label"].isin([0, 1, 2]).all()  # integer labels stay integers


def test_shapley_split_of_a_given_class():
    """The neural side of the re-split: `target` picks which class's logit is split."""
    from bsmfusion.models.contributions import shapley_split
    from bsmfusion.models.fusion import FusionDims, build_fusion

    fusion = build_fusion("gate", FusionDims(text_dim=4, tab_dim=4, fusion_dim=4, num_classes=3, dropout=0.0)).eval()
    text, tab = torch.randn(5, 4), torch.randn(5, 4)
    target = torch.tensor([0, 1, 2, 2, 1])
    with torch.no_grad():
        output, parts = shapley_split(fusion, text, tab, torch.zeros(4), torch.zeros(4), target)
    chosen = output.logits.gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(parts.text + parts.tab + parts.baseline_score, chosen, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("signal,low,high", [("tab", 0.0, 0.2), ("text", 0.8, 1.0)])
def test_ensemble_text_share_follows_the_planted_signal(tmp_path, signal, low, high):
    """The ensemble's split is the weighted sum of its members' splits: it inherits their meaning."""
    train(ensemble_config(), planted_frame(240, signal, 0), planted_frame(120, signal, 1), tmp_path / "m",
          progress=False)
    share = bsmfusion.load(tmp_path / "m").predict_frame(planted_frame(200, signal, 2))["text_share"].mean()
    assert low <= share <= high, share


def planted_logits(n: int = 400, seed: int = 0):
    """Validation labels and three members' `N×2` logits: two informative (different noise), one pure noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = [2.0 * labels + rng.normal(0, 1.5, n), 2.0 * labels + rng.normal(0, 1.5, n), rng.normal(0, 1.5, n)]
    return labels, [np.stack([np.zeros(n), z - z.mean()], axis=1) for z in scores]


def test_plain_greedy_selection_never_scores_below_its_best_member():
    from bsmfusion.ensemble.selection import greedy_selection, selection_key, weighted_sum

    labels, logits = planted_logits()
    weights, trajectory = greedy_selection(logits, labels, 25)
    best_alone = max(selection_key(labels, z) for z in logits)
    assert selection_key(labels, weighted_sum(logits, weights)) >= best_alone
    assert trajectory[0]["picked"] in (0, 1) and weights[2] == 0.0
    started, path = greedy_selection(logits, labels, 25, init_picks=1)
    assert path[0]["picked"] is None and len(path) <= 26  # the equal start is a candidate, then ≤ 25 picks
    assert started.sum() == pytest.approx(1.0)


@pytest.mark.slow
def test_bagged_initialised_selection_shrinks_a_noise_member_and_keeps_the_signal():
    from bsmfusion.ensemble.selection import bagged_selection, selection_key, weighted_sum

    labels, logits = planted_logits()
    weights, per_bag = bagged_selection(logits, labels, 25, bags=16, init_picks=1, seed=3)
    assert len(per_bag) == 16 and weights.sum() == pytest.approx(1.0)
    assert weights[2] < 0.15 < min(weights[0], weights[1])  # noise shrunk, both informative members kept
    best_alone = max(selection_key(labels, z)[0] for z in logits)
    assert selection_key(labels, weighted_sum(logits, weights))[0] > best_alone  # two independent views beat one
    again, _ = bagged_selection(logits, labels, 25, bags=16, init_picks=1, seed=3)
    assert np.array_equal(weights, again)  # seeded
    # a stronger prior (the default 5 picks each) keeps the weights nearer 1/3: the noise member shrinks less
    prior, _ = bagged_selection(logits, labels, 25, bags=16, init_picks=5, seed=3)
    assert weights[2] < prior[2] < 1 / 3 and prior[2] >= 5 / (15 + 25) - 1e-12


def test_old_bundles_init_each_member_reads_as_init_picks():
    from bsmfusion.config import config_from_dict

    assert config_from_dict({}).model.ensemble.init_picks == 5
    for old, picks in ((True, 1), (False, 0)):
        assert config_from_dict({"model": {"ensemble": {"init_each_member": old}}}).model.ensemble.init_picks == picks


def test_member_holdout_and_cv_folds_keep_each_group_whole():
    """data.group (e.g. the two sides of one dialogue): a held-out row never has a twin among the rows its model
    trained on, in the neural member's holdout and in the classical members' CV folds."""
    import pandas as pd

    from bsmfusion.ensemble.train import split_member_holdout
    from bsmfusion.classical.member import cv_folds

    cfg = ensemble_config()
    frame = mixed(400, 3)
    frame["dialogue_id"] = np.arange(400) // 2  # pairs of rows, like dnd_nodeal's two sides
    frame.loc[frame.index[-10:], "dialogue_id"] = np.nan  # rows without a group stand alone
    for group in (None, "dialogue_id"):
        cfg.data.group = group
        fit_rows, held_rows = split_member_holdout(frame, frame.iloc[:0], cfg)
        assert len(fit_rows) + len(held_rows) == 400 and 0.08 < len(held_rows) / 400 < 0.22
        shared = set(fit_rows["dialogue_id"].dropna()) & set(held_rows["dialogue_id"].dropna())
        assert (len(shared) == 0) == (group is not None)  # a plain row split separates most pairs
    labels = frame["label"].to_numpy()
    codes = pd.factorize(frame["dialogue_id"].fillna(pd.Series(-np.arange(400) - 1.0)))[0]
    for groups in (None, codes):
        folds = cv_folds(labels, 5, seed=0, groups=groups)
        assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(400))
        split_pairs = sum(len(set(codes[fit]) & set(codes[held])) for fit, held in folds)
        assert (split_pairs == 0) == (groups is not None)
        assert all(abs(labels[held].mean() - labels.mean()) < 0.12 for _, held in folds)  # still stratified


@pytest.mark.slow
def test_neural_seeds_adds_members_each_the_first_member_of_the_next_seed(tmp_path):
    """`neural_seeds: 2` with `combine_on: validation` and `neural_epochs: own`: neural_2 trains with seed + 1 and
    its own holdout, i.e. it is exactly the neural member an ensemble seeded one higher trains (what lets the
    benchmark re-combine stored runs of that mode); both enter the selection. (cross_fit shares one holdout:
    test_cross_fit.py.)"""
    from bsmfusion.bundle import load_bundle
    from bsmfusion.manifest import sha256_file

    cfg = ensemble_config(members=("neural", "tfidf_lr"))
    cfg.model.ensemble.neural_seeds = 2
    cfg.model.ensemble.combine_on = "validation"
    cfg.model.ensemble.neural_epochs = "own"  # neural_2 early-stops by itself, as the next seed's first member does
    train_df, val_df = mixed(240, 0), mixed(160, 1)
    train(cfg, train_df, val_df, tmp_path / "two", progress=False)
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert [m["name"] for m in meta["members"]] == ["neural", "neural_2", "tfidf_lr"]
    assert set(meta["weights"]) == {"neural", "neural_2", "tfidf_lr"} and meta["members"][1]["fusion"] == "gate"
    assert meta["member_rows"]["choices"].startswith("neural..neural_2 (seeds train.seed..+1, each its own holdout)")
    members = {n: load_bundle(tmp_path / "two" / "members" / n) for n in ("neural", "neural_2")}
    assert (members["neural"].cfg.train.seed, members["neural_2"].cfg.train.seed) == (cfg.train.seed, cfg.train.seed + 1)

    next_seed = ensemble_config(members=("neural",))
    next_seed.train.seed = cfg.train.seed + 1
    next_seed.model.ensemble.combine_on = "validation"
    train(next_seed, train_df, val_df, tmp_path / "next", progress=False)
    same = [sha256_file(tmp_path / d / "members" / n / "model.safetensors")
            for d, n in (("two", "neural_2"), ("next", "neural"))]
    assert same[0] == same[1]
    first = sha256_file(tmp_path / "two" / "members" / "neural" / "model.safetensors")
    assert first != same[0]
    probs = bsmfusion.load(tmp_path / "two").predict_proba(mixed(30, 2))
    assert probs.shape[0] == 30 and np.isfinite(np.asarray(probs, dtype=float)).all()
