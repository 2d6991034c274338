"""`model.ensemble.combine_on`: the weights, calibration and threshold fitted on the validation rows plus the
training rows every member scored out of sample (cross_fit, the default), or on the validation rows alone."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bsmfusion.classical.boosting import cv_logits
from bsmfusion.classical.train import fit_member, prepare
from bsmfusion.ensemble.cross_fit import logit_scores, pool
from bsmfusion.ensemble.train import holdout_mask, split_member_holdout
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.workflows.train import train
from tests.helpers import classical_config, ensemble_config, mixed, planted_frame


def auc(labels, logits) -> float:
    return classification_metrics(labels, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), None)["roc_auc"]


def memorisable(n: int, seed: int) -> pd.DataFrame:
    """Random labels; each dialogue carries a token of its own, so a weakly regularised tfidf_lr fits its
    training rows perfectly and can say nothing about a row it did not see."""
    frame = planted_frame(n, "text", seed)
    frame["dialogue"] = [f"BUYER: tok{i}x{seed} hello <eos> SELLER: hi" for i in range(n)]
    frame["label"] = np.random.default_rng(seed).integers(0, 2, n)
    frame["id"] = np.arange(n) + 1000 * seed
    return frame


def test_tfidf_lr_out_of_fold_logits_come_from_models_that_did_not_see_the_row():
    cfg = classical_config("tfidf_lr")
    cfg.model.classical.cv_folds, cfg.model.classical.lr_c_grid = 5, [1000.0]
    train_df = memorisable(200, 0)
    data = prepare(cfg, train_df, memorisable(40, 1))
    model, info = fit_member(cfg, data)
    assert info["chosen_on"] == "5-fold CV on the training rows"  # CV runs with one C too: it yields the logits
    oof = model.out_of_fold
    assert oof.shape == (200, 2) and np.all(oof[:, 0] == 0)
    in_sample = model.score_frame(train_df)
    assert classification_metrics(data.y_train, in_sample.probs, None)["roc_auc"] > 0.9  # memorised
    assert abs(auc(data.y_train, oof) - 0.5) < 0.15  # out of fold: chance


@pytest.mark.slow
def test_tfidf_lr_and_gbdt_out_of_fold_logits_carry_a_real_signal():
    for kind in ("tfidf_lr", "gbdt"):
        cfg = classical_config(kind)
        cfg.model.classical.cv_folds = 5
        data = prepare(cfg, mixed(300, 0), mixed(60, 1))
        model, _ = fit_member(cfg, data)
        assert model.out_of_fold.shape == (300, 2)
        assert auc(data.y_train, model.out_of_fold) > 0.75, kind


def test_gbdt_cv_logits_score_each_row_with_its_own_folds_booster_at_the_chosen_rounds():
    class Booster:
        def __init__(self, fold):
            self.fold = fold

        def predict(self, x, raw_score, num_iteration):
            assert raw_score and num_iteration == 7
            return 10.0 * self.fold + x[:, 0]

    folds = [(np.array([2, 3, 4, 5]), np.array([0, 1])), (np.array([0, 1, 4, 5]), np.array([2, 3])),
             (np.array([0, 1, 2, 3]), np.array([4, 5]))]
    x = np.arange(6, dtype=np.float64)[:, None] / 10
    logits = cv_logits(SimpleNamespace(boosters=[Booster(f) for f in range(3)]), folds, x, 7, 2)
    assert np.allclose(logits[:, 1], [0.0, 0.1, 10.2, 10.3, 20.4, 20.5]) and np.all(logits[:, 0] == 0)


def test_pool_stacks_validation_rows_first_and_falls_back_when_a_member_has_no_out_of_sample_rows():
    val = [np.ones((3, 2)), 2 * np.ones((3, 2))]
    out = [np.zeros((4, 2)), np.zeros((4, 2))]
    rows = pool(val, np.array([1, 0, 1]), out, np.array([0, 0, 1, 1]), ["a", "b"], "the holdout")
    assert (rows.validation_rows, rows.out_of_sample_rows, rows.labels.tolist()) == (3, 4, [1, 0, 1, 0, 0, 1, 1])
    assert rows.logits[1].shape == (7, 2) and rows.logits[1][:3].min() == 2 and rows.logits[1][3:].max() == 0
    assert rows.meta() == {"rows": 7, "validation": 3, "out_of_sample_training": 4,
                           "source": "validation rows + the holdout"}
    fallback = pool(val, np.array([1, 0, 1]), [out[0], None], np.array([0, 0, 1, 1]), ["a", "b"], "the holdout")
    assert fallback.out_of_sample_rows == 0 and len(fallback.labels) == 3
    assert fallback.meta()["fallback"] == "member(s) b scored no training row out of sample"
    none_held = pool(val, np.array([1, 0, 1]), [None, out[1]], None, ["neural", "b"], "the holdout")
    assert none_held.meta()["fallback"] == "no training row was held out (model.ensemble.member_holdout: 0)"


def test_logit_scores_reproduce_the_combined_log_odds():
    z = np.array([[0.0, 1.5], [0.0, -2.0]])
    scores = logit_scores(z)
    assert np.allclose(scores.text_contribution + scores.tab_contribution + scores.baseline_score, [1.5, -2.0])
    assert np.allclose(scores.probs[:, 1], 1 / (1 + np.exp(-z[:, 1])))


def test_neural_members_share_one_holdout_drawn_with_the_ensembles_seed():
    cfg = ensemble_config()
    cfg.model.ensemble.member_holdout = 0.2
    frame = mixed(200, 0)
    shared = holdout_mask(frame, cfg, cfg.train.seed)
    assert 20 < shared.sum() < 60
    fit_rows, held_rows = split_member_holdout(frame, frame.iloc[:0], cfg, shared)
    assert held_rows["id"].tolist() == frame["id"][shared].tolist()
    assert len(fit_rows) + len(held_rows) == 200
    assert not np.array_equal(holdout_mask(frame, cfg, cfg.train.seed + 1), shared)  # another seed, other rows


def test_a_tiny_table_still_holds_out_one_row_or_group():
    from bsmfusion.ensemble.cross_fit import shared_holdout

    assert shared_holdout(3, 0.15, seed=1).sum() >= 1
    codes = np.array([0, 0, 1, 1, 2, 2])
    for seed in range(20):  # 3 groups at 15%: no group drawn most of the time; one is then held out whole
        held = shared_holdout(6, 0.15, seed, codes)
        assert held.any() and all(held[codes == g].all() or not held[codes == g].any() for g in range(3))
    assert not shared_holdout(6, 0.0, 0).any()


@pytest.mark.slow
@pytest.mark.parametrize("combine_on", ["cross_fit", "validation"])
def test_a_classical_ensemble_fits_its_combination_on_the_rows_combine_on_names(tmp_path, combine_on):
    cfg = ensemble_config(members=("tfidf_lr", "gbdt"))
    cfg.model.ensemble.combine_on = combine_on
    out = tmp_path / "model"
    train(cfg, mixed(240, 0), mixed(30, 1), out, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    stored = json.loads((out / "validation_scores.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    pooled = 270 if combine_on == "cross_fit" else 30
    assert meta["combination_rows"]["rows"] == len(stored["label"]) == pooled
    assert meta["combination_rows"]["validation"] == 30
    assert meta["calibration"]["validation"]["rows"] == pooled
    if combine_on == "cross_fit":
        assert meta["selection"]["rows"] == "validation rows + every training row, out of fold"
        assert stored["label"][30:] == mixed(240, 0)["label"].tolist()  # the training rows, after the validation rows
    else:
        assert meta["selection"]["rows"] == "validation rows"
    assert meta["decision"]["threshold"] in stored["probability"]  # a searched threshold is one of the pooled scores
    assert set(metrics["validation"]) >= {"roc_auc", "f1"}


def test_a_neural_members_holdout_logits_come_from_its_training_run_when_it_kept_them(monkeypatch):
    """The holdout is scored once: by the member's own training run (`TrainResult.val_scores`); the bundle scores
    it again only when those scores are missing or do not match the holdout's rows."""
    from bsmfusion.ensemble import train as ensemble_train
    from bsmfusion.models.scores import Scores

    def scores(log_odds):
        z = np.asarray(log_odds, dtype=np.float32)
        p = 1 / (1 + np.exp(-z))
        return Scores(probs=np.stack([1 - p, p], 1), text_contribution=z, tab_contribution=np.zeros_like(z),
                      baseline_score=np.zeros_like(z))

    rescored = []
    bundle_scorer = SimpleNamespace(score_frame=lambda frame: rescored.append(len(frame)) or scores([0.5] * len(frame)))
    monkeypatch.setattr(ensemble_train, "build_scorer", lambda bundle: bundle_scorer)
    holdout = pd.DataFrame({"x": range(3)})
    kept = SimpleNamespace(val_scores=scores([1.0, -2.0, 0.0]), out_of_fold=None)
    logits = ensemble_train.member_out_of_sample(None, kept, holdout, np.ones(3, bool), 2)
    assert np.allclose(logits[:, 1] - logits[:, 0], [1.0, -2.0, 0.0], atol=1e-5) and rescored == []
    for result in (SimpleNamespace(val_scores=None, out_of_fold=None),
                   SimpleNamespace(val_scores=scores([1.0, 2.0]), out_of_fold=None)):  # none kept; other rows
        logits = ensemble_train.member_out_of_sample(None, result, holdout, np.ones(3, bool), 2)
        assert np.allclose(logits[:, 1] - logits[:, 0], 0.5, atol=1e-5)
    assert rescored == [3, 3]


def test_tfidf_lr_out_of_fold_logits_keep_every_class_when_a_fold_trained_without_one():
    """Multiclass with group folds: the rows of a class that lives in one group are held out together, so that
    fold's model never saw the class; its columns still land on their classes, the unseen one at the floor."""
    cfg = classical_config("tfidf_lr")
    cfg.model.num_classes, cfg.data.group = 3, "thread"
    cfg.model.classical.cv_folds, cfg.model.classical.lr_c_grid = 3, [1.0]
    train_df = mixed(120, 0)
    train_df["thread"] = np.arange(120) % 12
    train_df.loc[train_df["thread"] == 5, "label"] = 2  # class 2: one group only
    val_df = mixed(30, 1)
    val_df["thread"] = 100 + np.arange(30)
    val_df.loc[:9, "label"] = 2
    data = prepare(cfg, train_df, val_df)
    model, _ = fit_member(cfg, data)
    oof = model.out_of_fold
    rare = data.y_train == 2
    assert oof.shape == (120, 3) and np.isfinite(oof).all()
    assert np.allclose(oof[rare, 2], np.log(1e-12))  # its fold never saw class 2
    others = np.exp(oof[~rare])
    assert np.allclose(others.sum(1), 1.0, atol=1e-6)  # log-probabilities of the classes the fold saw
