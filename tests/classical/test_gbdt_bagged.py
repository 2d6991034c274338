"""`model.classical.gbdt_bagged`: gbdt keeps the k boosters of its CV, each cut to the rounds the CV chose, and
scores with their mean raw score; each training row's out-of-fold logit is the score of the one booster that did
not see it; the text/tabular split stays exact and the bundle stores every fold's booster."""
import json

import lightgbm as lgb
import numpy as np
import pytest

import bsmfusion
from bsmfusion.classical.boosting import BoosterBag
from bsmfusion.classical.gbdt import booster_input
from bsmfusion.classical.member import cv_folds
from bsmfusion.classical.train import fit_member, prepare
from bsmfusion.workflows.train import train
from tests.helpers import classical_config, planted_offers

FOLDS = 4


def bagged_config(bagged: bool = True, folds: int = FOLDS):
    cfg = classical_config("gbdt")
    settings = cfg.model.classical
    settings.cv_folds, settings.gbdt_bagged, settings.quoted_numbers, settings.gbdt_text = folds, bagged, "on", "words"
    return cfg


@pytest.fixture(scope="module")
def bagged(tmp_path_factory):
    cfg = bagged_config()
    train_rows, val_rows = planted_offers(500, 0), planted_offers(150, 1)
    folder = tmp_path_factory.mktemp("bagged") / "m"
    train(cfg, train_rows, val_rows, folder, progress=False)
    data = prepare(cfg, train_rows, val_rows)
    in_memory, info = fit_member(cfg, data)  # the same deterministic fit, never stored
    return cfg, folder, train_rows, data, in_memory, info


def test_the_bundle_stores_every_fold_booster_and_scores_with_their_mean_raw_score(bagged):
    _, folder, _, _, in_memory, info = bagged
    files = sorted(p.name for p in folder.glob("lightgbm*.txt"))
    assert files == [f"lightgbm_fold_{k}.txt" for k in range(1, FOLDS + 1)]  # no refit on all rows
    assert info["bagged_boosters"] == FOLDS
    model = bsmfusion.load(folder).bundle.model
    test = planted_offers(120, 2)
    text, tab = model.features(test)
    x = booster_input(text, tab, model.quoted, model.tabular)
    boosters = [lgb.Booster(model_file=str(folder / name)) for name in files]
    assert len({b.num_trees() for b in boosters}) == 1 and boosters[0].num_trees() == info["rounds"]
    mean_raw = np.mean([b.predict(x, raw_score=True) for b in boosters], axis=0)
    scores = model.score_frame(test)
    np.testing.assert_allclose(scores.probs[:, 1], 1 / (1 + np.exp(-mean_raw)), atol=1e-12)
    np.testing.assert_allclose(scores.text_contribution + scores.tab_contribution + scores.baseline_score, mean_raw,
                               atol=1e-6, rtol=0)
    np.testing.assert_array_equal(scores.probs, in_memory.score_frame(test).probs)  # storage lost nothing
    assert np.ptp([b.predict(x, raw_score=True) for b in boosters], axis=0).max() > 0  # the folds differ


def test_each_training_rows_out_of_fold_logit_is_the_fold_booster_that_held_it_out(bagged):
    cfg, _, train_rows, data, in_memory, _ = bagged
    x = booster_input(*in_memory.features(train_rows), in_memory.quoted, in_memory.tabular)
    folds = cv_folds(data.y_train, FOLDS, cfg.train.seed)
    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(len(train_rows)))
    for fold, (fitted_on, held) in enumerate(folds):
        assert not set(fitted_on) & set(held)
        raw = in_memory.booster.boosters[fold].predict(x[held], raw_score=True)
        np.testing.assert_allclose(in_memory.out_of_fold[held, 1] - in_memory.out_of_fold[held, 0], raw, atol=1e-9)
    others = in_memory.booster.boosters[1].predict(x[folds[0][1]], raw_score=True)  # a booster that saw fold 0
    assert not np.allclose(others, in_memory.out_of_fold[folds[0][1], 1] - in_memory.out_of_fold[folds[0][1], 0])


def test_a_bundle_missing_a_fold_booster_does_not_load(bagged, tmp_path):
    import shutil

    from bsmfusion.errors import BundleError

    _, folder, *_ = bagged
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    (copy / "lightgbm_fold_2.txt").unlink()
    manifest = copy / "manifest.json"  # the manifest updated too: the loader itself must notice
    listed = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in listed.items() if k != "lightgbm_fold_2.txt"}))
    with pytest.raises(BundleError, match=r"lightgbm_fold_1.txt, lightgbm_fold_3.txt, lightgbm_fold_4.txt"):
        bsmfusion.load(copy).predict_frame(planted_offers(5, 3))


def test_the_bag_averages_raw_scores_only():
    class Constant:
        def __init__(self, value):
            self.value = value

        def predict(self, x, raw_score=False, **kwargs):
            return np.full(len(x), self.value)

    bag = BoosterBag([Constant(-1.0), Constant(3.0)])
    np.testing.assert_array_equal(bag.predict(np.zeros((2, 1)), raw_score=True), [1.0, 1.0])
    with pytest.raises(ValueError, match="raw_score=True"):  # LightGBM's default is probabilities: no silent mix-up
        bag.predict(np.zeros((2, 1)))
    with pytest.raises(TypeError):
        bag.predict(np.zeros((2, 1)), True)  # raw_score only by name


@pytest.mark.parametrize("folds, stopping", [(0, 100), (FOLDS, 0)])
def test_without_a_cv_choosing_the_rounds_bagged_keeps_one_booster(tmp_path, folds, stopping):
    cfg = bagged_config(folds=folds)
    cfg.model.classical.gbdt_early_stopping_rounds, cfg.model.classical.gbdt_max_rounds = stopping, 50
    train(cfg, planted_offers(300, 0), planted_offers(100, 1), tmp_path / "m", progress=False)
    assert sorted(p.name for p in (tmp_path / "m").glob("lightgbm*.txt")) == ["lightgbm.txt"]
