"""catboost (optional): planted signals, exact contributions, pickle-free bundles, out-of-fold logits, multiclass, an
ensemble member, and the one-line error when catboost is not installed. Tiny tables, CatBoost on one thread
(`tests.helpers.FAST_CLASSICAL`)."""
import importlib.util
import json
import sys

import numpy as np
import pytest

import bsmfusion
from bsmfusion.calibration import softmax
from bsmfusion.classical.catboost_member import catboost_pool, dialogue_texts
from bsmfusion.classical.tab_features import tab_matrix
from bsmfusion.classical.text_features import render_frame
from bsmfusion.classical.train import fit_member, prepare
from bsmfusion.errors import ConfigError
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.inference.predictor import CONTRIBUTION_COLUMNS
from bsmfusion.workflows.train import train
from tests.helpers import classical_config, mixed, planted, planted_frame, tiny_config

ROWS = (300, 150)  # training and validation rows of the shared bundles
# catboost is an optional extra (make install and make test install it): the tests that fit or load a model need it
needs_catboost = pytest.mark.skipif(importlib.util.find_spec("catboost") is None,
                                    reason="catboost is not installed (pip install 'bsmfusion[catboost]')")


@pytest.fixture
def bundles(bundle_factory):
    """signal → (bundle, result): catboost trained on 300 planted rows, early-stopped on 150 (shared per session)."""
    trained = {signal: bundle_factory("catboost", signal=signal, rows=ROWS) for signal in ("text", "nonlinear")}
    return {signal: (bundle.path, bundle.result) for signal, bundle in trained.items()}


def roc_auc(labels, probs) -> float:
    return classification_metrics(np.asarray(labels), np.asarray(probs), None)["roc_auc"]


def logits_auc(labels, logits) -> float:
    return roc_auc(labels, softmax(logits))


def raw_log_odds(model, frame) -> np.ndarray:
    """The model's own raw score of each row, straight from CatBoost (no split code)."""
    cfg = model.cfg
    pool = catboost_pool(model.tabular, dialogue_texts(render_frame(frame, cfg)), tab_matrix(model.tabular, frame))
    return model.model.predict(pool, prediction_type="RawFormulaVal")


@needs_catboost
def test_learns_a_planted_text_keyword(bundles):
    folder, result = bundles["text"]
    test = planted(300, "text", 2)
    predictor = bsmfusion.load(folder)
    assert roc_auc(test["label"], predictor.score_frame(test).probs) > 0.95
    assert predictor.predict_frame(test)["text_share"].mean() >= 0.8
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["training"]["chosen_on"] == "validation" and 1 <= meta["training"]["rounds"] <= 100
    assert result.epochs_run == meta["training"]["rounds"] and result.out_of_fold is None  # no CV: no OOF logits


@needs_catboost
def test_learns_a_planted_nonlinear_tabular_signal(bundles):
    """label = |price| > 0.8: no linear model can use it; the dialogue is noise."""
    folder, _ = bundles["nonlinear"]
    test = planted(300, "nonlinear", 2)
    predictor = bsmfusion.load(folder)
    assert roc_auc(test["label"], predictor.score_frame(test).probs) > 0.95
    assert predictor.predict_frame(test)["text_share"].mean() <= 0.2


@needs_catboost
@pytest.mark.parametrize("signal", ["text", "nonlinear"])
def test_contributions_add_up_to_the_raw_score(bundles, signal):
    """text + tab + baseline = CatBoost's own log-odds of the row, to rounding."""
    model = bsmfusion.load(bundles[signal][0]).bundle.model
    test = planted(60, signal, 3)
    scores = model.score_frame(test)
    raw = raw_log_odds(model, test)
    total = scores.text_contribution + scores.tab_contribution + scores.baseline_score
    np.testing.assert_allclose(total, raw, atol=1e-9, rtol=0)
    np.testing.assert_allclose(scores.probs[:, 1], 1 / (1 + np.exp(-raw)), atol=1e-12)
    assert np.ptp(scores.baseline_score) == 0  # one baseline: the mean over all background pairs


@needs_catboost
def test_the_text_baseline_is_the_mean_over_background_dialogues(bundles):
    """f(t̄,u) = mean over the stored background rows' dialogues of the row's score with that dialogue."""
    model = bsmfusion.load(bundles["text"][0]).bundle.model
    row = planted(1, "text", 4)
    tab = tab_matrix(model.tabular, row)
    b = len(model.text_background)
    assert b == 64 and all(isinstance(t, str) and t.startswith("buyer: ") for t in model.text_background)
    by_hand = model.model.predict(catboost_pool(model.tabular, model.text_background, np.repeat(tab, b, axis=0)),
                                  prediction_type="RawFormulaVal").mean()
    assert model.four_logits(row)[1][0, 1] == pytest.approx(by_hand, abs=1e-12)


@needs_catboost
def test_bundle_round_trip_is_identical_and_pickle_free(bundles):
    folder, result = bundles["text"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["catboost.cbm", "catboost_background.json", "config.yaml", "manifest.json", "meta.json", "metrics.json",
         "preprocessing.json", "validation_scores.json", "weights.safetensors"])
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    assert (folder / "catboost.cbm").read_bytes()[:4] == b"CBM1"  # CatBoost's own binary model format
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest) == sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == meta["fusion"] == "catboost" and meta["versions"]["catboost"] == "1.2.10"
    test = planted(80, "text", 5)
    first, second = bsmfusion.load(folder).predict_frame(test), bsmfusion.load(folder).predict_frame(test)
    assert list(first.columns) == ["id", "prob_0", "prob_1", "predicted_label", *CONTRIBUTION_COLUMNS, "error"]
    assert first.equals(second)
    # the in-memory model that chose the threshold scored the validation rows as the loaded bundle does
    val = planted(ROWS[1], "text", 1)
    probs = bsmfusion.load(folder).score_frame(val).probs
    assert classification_metrics(val["label"].to_numpy(), probs, result.threshold)["f1"] == pytest.approx(
        result.val_metrics["f1"], abs=1e-12)


def memorisable(n: int, seed: int):
    """Random labels; every row has its own price, so deep trees fit the training rows and can say nothing about a
    row they did not see."""
    frame = planted_frame(n, "text", seed)
    frame["label"] = np.random.default_rng(seed + 7).integers(0, 2, n)
    return frame


@needs_catboost
def test_out_of_fold_logits_come_from_models_that_did_not_see_the_row():
    cfg = classical_config("catboost")
    settings = cfg.model.classical
    settings.cv_folds, settings.catboost_early_stopping_rounds = 3, 0  # exactly catboost_iterations: no choice
    settings.catboost_iterations, settings.catboost_learning_rate = 60, 0.5
    train_df = memorisable(200, 0)
    data = prepare(cfg, train_df, memorisable(40, 1))
    model, info = fit_member(cfg, data)
    assert info["chosen_on"] == "3-fold CV on the training rows" and info["rounds"] == 60
    oof = model.out_of_fold
    assert oof.shape == (200, 2) and oof.dtype == np.float64 and np.all(oof[:, 0] == 0)
    assert roc_auc(data.y_train, model.score_frame(train_df).probs) > 0.9  # the refit memorised its rows
    assert abs(logits_auc(data.y_train, oof) - 0.5) < 0.15  # out of fold: chance


@needs_catboost
def test_with_cv_folds_iterations_come_from_the_folds_and_the_validation_rows_choose_nothing():
    """Group-aware 3-fold CV: each row's out-of-fold logit is its fold model's (a real signal, out of sample), the
    iterations are chosen by the mean held-out log loss, and validation labels turned upside down change nothing."""
    train_df, val_df = mixed(240, 0), mixed(90, 1)
    train_df["buyer"] = np.arange(240) // 3  # groups of three rows, each kept on one side of every fold
    flipped = val_df.assign(label=1 - val_df["label"])
    fitted = []
    for val in (val_df, flipped):
        cfg = classical_config("catboost")
        cfg.model.classical.cv_folds, cfg.data.group = 3, "buyer"
        data = prepare(cfg, train_df, val)
        fitted.append(fit_member(cfg, data))
    (model, info), (other, _) = fitted
    assert info["chosen_on"] == "3-fold CV on the training rows" and 1 <= info["rounds"] < 100
    assert info["cv_log_loss"] < np.log(2)
    assert model.out_of_fold.shape == (240, 2)
    assert logits_auc(data.y_train, model.out_of_fold) > 0.75
    np.testing.assert_array_equal(model.out_of_fold, other.out_of_fold)
    np.testing.assert_array_equal(model.score_frame(val_df).probs, other.score_frame(val_df).probs)


def three_classes(n: int, seed: int):
    """0: no keyword; 1: the keyword and price < 0; 2: the keyword and price > 0 (both modalities needed)."""
    frame = planted_frame(n, "text", seed)
    keyword = frame["dialogue"].str.contains("refund").to_numpy()
    frame["label"] = np.where(~keyword, 0, np.where(frame["price"].to_numpy() > 0, 2, 1))
    return frame


@needs_catboost
def test_multiclass_trains_scores_and_splits_the_predicted_class(tmp_path):
    cfg = classical_config("catboost", num_classes=3)
    predictor = bsmfusion.train(cfg, three_classes(300, 0), three_classes(150, 1), tmp_path / "m", progress=False)
    test = three_classes(200, 2)
    loaded = bsmfusion.load(tmp_path / "m")
    scores = loaded.bundle.model.score_frame(test)  # uncalibrated: the raw class scores' softmax
    assert scores.probs.shape == (200, 3) and np.allclose(scores.probs.sum(axis=1), 1)
    assert (scores.probs.argmax(axis=1) == test["label"].to_numpy()).mean() > 0.85
    raw = raw_log_odds(loaded.bundle.model, test)
    assert raw.shape == (200, 3)
    predicted = raw[np.arange(200), raw.argmax(axis=1)]
    total = scores.text_contribution + scores.tab_contribution + scores.baseline_score
    np.testing.assert_allclose(total, predicted, atol=1e-9, rtol=0)
    assert (loaded.predict(test) == predictor.predict(test)).all()


@needs_catboost
def test_multiclass_out_of_fold_logits():
    cfg = classical_config("catboost", num_classes=3)
    cfg.model.classical.cv_folds, cfg.model.classical.catboost_iterations = 3, 30
    data = prepare(cfg, three_classes(150, 0), three_classes(60, 1))
    model, _ = fit_member(cfg, data)
    oof = model.out_of_fold
    assert oof.shape == (150, 3) and np.isfinite(oof).all()
    assert (oof.argmax(axis=1) == data.y_train).mean() > 0.75


@needs_catboost
@pytest.mark.slow
def test_an_ensemble_of_tfidf_lr_and_catboost_trains_and_predicts(tmp_path):
    cfg = tiny_config("ensemble", data={"id": "id"})
    for key, value in classical_config("catboost").model.classical.model_dump().items():
        setattr(cfg.model.classical, key, value)
    cfg.model.ensemble.members = ["tfidf_lr", "catboost"]
    cfg.model.ensemble.member_cv_folds = 3
    out = tmp_path / "ensemble"
    result = train(cfg, mixed(240, 0), mixed(120, 1), out, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert [m["name"] for m in meta["members"]] == ["tfidf_lr", "catboost"]
    assert sum(meta["weights"].values()) == pytest.approx(1.0, abs=1e-12)
    assert "tfidf_lr, catboost: all training rows, choices by 3-fold CV on them" in meta["member_rows"]["fit"]
    member = json.loads((out / "members" / "catboost" / "meta.json").read_text())
    assert member["training"]["chosen_on"] == "3-fold CV on the training rows"
    assert meta["combination_rows"]["out_of_sample_training"] == 240  # every training row, out of fold
    test = mixed(100, 2)
    predictor = bsmfusion.load(out)
    scores = predictor.score_frame(test)
    assert roc_auc(test["label"], scores.probs) > 0.8 and predictor.threshold == result.threshold
    log_odds = np.log(scores.probs[:, 1]) - np.log(scores.probs[:, 0])
    total = scores.text_contribution + scores.tab_contribution + scores.baseline_score
    np.testing.assert_allclose(total, log_odds, atol=1e-6)


@pytest.fixture
def no_catboost(monkeypatch):
    """`import catboost` fails as it does where the package is not installed."""
    monkeypatch.setitem(sys.modules, "catboost", None)


def assert_install_hint(err: pytest.ExceptionInfo) -> None:
    message = str(err.value)
    assert "\n" not in message and "model kind 'catboost' needs the package catboost" in message
    assert message.endswith("install it with 'pip install \"bsmfusion[catboost]\"' (bsmfusion is tested with "
                            "catboost==1.2.10)")


def test_without_catboost_training_it_is_a_one_line_error_and_other_kinds_still_train(no_catboost, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(classical_config("catboost"), planted(60, "text", 0), planted(30, "text", 1), tmp_path / "cb",
              progress=False)
    assert_install_hint(err)
    result = train(classical_config("tfidf_lr"), planted(120, "text", 0), planted(60, "text", 1), tmp_path / "lr",
                   progress=False)
    assert result.val_metrics["roc_auc"] > 0.9


def test_without_catboost_an_ensemble_with_it_fails_before_any_member_trains(no_catboost, tmp_path):
    cfg = tiny_config("ensemble", data={"id": "id"})
    cfg.model.ensemble.members = ["tfidf_lr", "catboost"]
    with pytest.raises(ConfigError) as err:
        train(cfg, planted(60, "text", 0), planted(30, "text", 1), tmp_path / "e", progress=False)
    assert_install_hint(err)
    assert not (tmp_path / "e.work" / "members" / "tfidf_lr").exists()


@needs_catboost
def test_without_catboost_its_bundle_does_not_load_in_one_line(bundles, monkeypatch):
    folder, _ = bundles["text"]
    monkeypatch.setitem(sys.modules, "catboost", None)
    with pytest.raises(ConfigError) as err:
        bsmfusion.load(folder)
    assert_install_hint(err)


def test_the_member_module_imports_without_catboost():
    """Config validation, the registry and the member's module never import catboost; only fitting and loading do."""
    import subprocess

    code = ("import sys; sys.modules['catboost'] = None\n"
            "from bsmfusion.config import config_from_dict\n"
            "from bsmfusion.kinds import get_kind\n"
            "cfg = config_from_dict({'model': {'fusion': 'catboost', 'ensemble': {'members': ['catboost']}}})\n"
            "print(get_kind(cfg.model.fusion).member_class().__name__)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "CatBoostMember"
