"""tfidf_lr and gbdt: planted signals, the exact contribution split, pickle-free bundles, tampering."""
import json

import numpy as np
import pytest

import bsmfusion
from bsmfusion.errors import BundleError, OptionError
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.inference.predictor import CONTRIBUTION_COLUMNS
from bsmfusion.workflows.train import train
from tests.helpers import classical_config, planted

# (kind, planted signal) → each trained once per session by the bundle factory
RUNS = {("tfidf_lr", "text"), ("tfidf_lr", "tab"), ("gbdt", "text"), ("gbdt", "nonlinear")}


@pytest.fixture
def bundles(bundle_factory):
    """(kind, signal) → (bundle, result): classical_config(kind), 400 planted rows (shared for the session)."""
    trained = {run: bundle_factory(run[0], signal=run[1], rows=(400, 200)) for run in sorted(RUNS)}
    return {run: (bundle.path, bundle.result) for run, bundle in trained.items()}


@pytest.mark.slow
def test_tfidf_lr_learns_a_text_keyword(bundles):
    folder, result = bundles["tfidf_lr", "text"]
    test = planted(300, "text", 2)
    probs = bsmfusion.load(folder).score_frame(test).probs
    assert result.val_metrics["roc_auc"] > 0.95
    assert classification_metrics(test["label"].to_numpy(), probs)["roc_auc"] > 0.95


def test_gbdt_learns_a_nonlinear_tabular_signal(bundles):
    folder, result = bundles["gbdt", "nonlinear"]
    test = planted(300, "nonlinear", 2)
    probs = bsmfusion.load(folder).score_frame(test).probs
    assert classification_metrics(test["label"].to_numpy(), probs)["roc_auc"] > 0.95
    meta = json.loads((folder / "meta.json").read_text())
    assert 1 <= meta["training"]["rounds"] < 200 and result.epochs_run == meta["training"]["rounds"]


@pytest.mark.parametrize("kind,signal", sorted(RUNS))
def test_contributions_add_up_to_the_raw_score(bundles, kind, signal):
    """text + tab + baseline = the model's own log-odds, computed here without the split code."""
    folder, _ = bundles[kind, signal]
    model = bsmfusion.load(folder).bundle.model
    test = planted(100, signal, 3)
    scores = model.score_frame(test)
    if kind == "tfidf_lr":
        text, tab = model.features(test)
        dt = text.shape[1]
        raw = text @ model.coef[0, :dt] + tab @ model.coef[0, dt:] + model.intercept[0]
    else:
        raw = model.booster.predict(np.hstack(model.features(test)), raw_score=True)
    total = scores.text_contribution + scores.tab_contribution + scores.baseline_score
    np.testing.assert_allclose(total, raw, atol=1e-6, rtol=0)
    np.testing.assert_allclose(scores.probs[:, 1], 1 / (1 + np.exp(-raw)), atol=1e-9)


@pytest.mark.parametrize("kind,signal", [("tfidf_lr", "text"), ("gbdt", "nonlinear")])
def test_rows_that_share_their_text_or_facts_score_as_they_do_alone(bundles, kind, signal):
    """Each distinct text (tabular) block is featurised and background-averaged once: copies of a row with its
    text kept and its facts changed (explain's feature game) score exactly as each would alone."""
    model = bsmfusion.load(bundles[kind, signal][0]).bundle.model
    test = planted(12, signal, 5)
    copies = test.iloc[np.repeat(np.arange(4), 3)].reset_index(drop=True)
    copies.loc[1::3, "price"] = copies["price"].iloc[1::3].to_numpy() + 7.0  # facts changed, text kept
    together = model.four_logits(copies)
    alone = [model.four_logits(copies.iloc[[i]]) for i in range(len(copies))]
    for k in range(4):
        np.testing.assert_allclose(together[k], np.vstack([a[k] for a in alone]), atol=1e-9, rtol=0)
    assert not np.allclose(together[0][0], together[0][1])  # the changed fact moved the score


@pytest.mark.parametrize("kind,signal", sorted(RUNS))
def test_text_share_follows_the_planted_signal(bundles, kind, signal):
    folder, _ = bundles[kind, signal]
    share = bsmfusion.load(folder).predict_frame(planted(200, signal, 4))["text_share"].mean()
    assert (share >= 0.8) if signal == "text" else (share <= 0.2), (kind, signal, share)


@pytest.mark.parametrize("kind,signal", [("tfidf_lr", "text"), ("gbdt", "nonlinear")])
def test_bundle_round_trip_is_identical_and_pickle_free(bundles, kind, signal):
    folder, result = bundles[kind, signal]
    extra = ["lightgbm.txt"] if kind == "gbdt" else []
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.yaml", "manifest.json", "meta.json", "metrics.json", "preprocessing.json", "tfidf.json",
         "validation_scores.json", "weights.safetensors", *extra])
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest) == sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == meta["fusion"] == kind and meta["label_names"] == ["0", "1"]
    assert meta["threshold"] == result.threshold and {"sklearn", "lightgbm"} <= set(meta["versions"])
    test = planted(80, signal, 5)
    first, second = bsmfusion.load(folder).predict_frame(test), bsmfusion.load(folder).predict_frame(test)
    assert list(first.columns) == ["id", "prob_0", "prob_1", "predicted_label", *CONTRIBUTION_COLUMNS, "error"]
    assert first.equals(second)
    # and the in-memory model that chose the threshold scores the validation rows as the bundle reports
    val = planted(200, signal, 1)
    probs = bsmfusion.load(folder).score_frame(val).probs
    assert classification_metrics(val["label"].to_numpy(), probs, result.threshold)["f1"] == pytest.approx(
        result.val_metrics["f1"], abs=1e-12)


def test_rebuilt_vectorizers_transform_exactly_like_the_fitted_ones():
    from bsmfusion.classical.text_features import TextFeaturizer, render_frame

    cfg = classical_config("tfidf_lr")
    texts = render_frame(planted(200, "text", 0), cfg)
    assert texts[0].startswith("buyer: ") and "\nseller: " in texts[0]  # parsed, role-tagged, one message a line
    fitted = TextFeaturizer.fit(texts, cfg.model.classical, ["dialogue"])
    spec, arrays = fitted.state()
    rebuilt = TextFeaturizer.from_state(json.loads(json.dumps(spec)), {k: v.copy() for k, v in arrays.items()})
    new = render_frame(planted(100, "text", 1), cfg) + ["unseen wörds <b>here</b> https://x.io", ""]
    a, b = fitted.transform(new), rebuilt.transform(new)
    assert a.shape == b.shape and (a != b).nnz == 0
    assert fitted.vectorizers["word"].get_params() == rebuilt.vectorizers["word"].get_params()


@pytest.mark.parametrize("name", ["weights.safetensors", "tfidf.json", "lightgbm.txt"])
def test_a_tampered_file_is_refused(bundles, tmp_path, name):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundles["gbdt", "nonlinear"][0], copy)
    with open(copy / name, "r+b") as handle:
        handle.seek(-2, 2)
        byte = handle.read(1)
        handle.seek(-2, 2)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BundleError, match=rf"file '{name}' does not match its SHA-256"):
        bsmfusion.load(copy)


def test_onnx_is_refused_for_a_classical_member(bundles):
    from bsmfusion.inference.onnx_export import export_onnx

    folder, _ = bundles["tfidf_lr", "text"]
    with pytest.raises(BundleError, match="is a tfidf_lr model with no neural member: there is no torch graph to export"):
        export_onnx(folder)
    with pytest.raises(OptionError, match="the ONNX engine covers the neural models only; pass engine=torch"):
        bsmfusion.load(folder, engine="onnx")


def test_precision_describes_float64_numpy(bundles):
    predictor = bsmfusion.load(bundles["gbdt", "nonlinear"][0], precision="bf16")
    assert predictor.precision.used == "fp64" and predictor.describe_precision().startswith("fp64 (LightGBM")


def test_config_accepts_the_classical_kinds():
    from bsmfusion.config import config_from_dict
    from bsmfusion.errors import ConfigError
    from bsmfusion.kinds import model_kinds

    assert {"concat", "tab_only", "tfidf_lr", "gbdt", "catboost", "ensemble"} <= set(model_kinds())
    for kind in ("tfidf_lr", "gbdt", "catboost", "ensemble"):
        assert config_from_dict({"model": {"fusion": kind}}).model.uses_text
    with pytest.raises(ConfigError, match=r"model\.fusion.*tfidf_lr, gbdt, catboost, ensemble"):
        config_from_dict({"model": {"fusion": "svm"}})
    with pytest.raises(ConfigError, match=r"model\.ensemble\.neural': not a neural fusion"):
        config_from_dict({"model": {"ensemble": {"neural": "gbdt"}}})
    with pytest.raises(ConfigError, match=r"model\.ensemble\.members"):
        config_from_dict({"model": {"ensemble": {"members": ["gbdt", "gbdt"]}}})


@pytest.mark.parametrize("kind,signal", [("tfidf_lr", "text"), ("gbdt", "nonlinear")])
def test_with_cv_folds_the_validation_rows_choose_nothing(kind, signal, tmp_path):
    """model.classical.cv_folds: C / boosting rounds come from k-fold CV on the training rows, so validation
    labels flipped upside down leave the fitted model unchanged (without CV they choose it)."""
    train_df, val_df = planted(300, signal, 0), planted(150, signal, 1)
    train_df["buyer"], val_df["buyer"] = np.arange(300) // 3, 1000 + np.arange(150) // 3  # group-disjoint folds too
    flipped = val_df.assign(label=1 - val_df["label"])
    weights = []
    for name, val in (("true", val_df), ("flipped", flipped)):
        cfg = classical_config(kind)
        cfg.model.classical.cv_folds = 3
        cfg.data.group = "buyer"
        train(cfg, train_df, val, tmp_path / name, progress=False)
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["training"]["chosen_on"] == "3-fold CV on the training rows"
        weights.append((tmp_path / name / ("lightgbm.txt" if kind == "gbdt" else "weights.safetensors")).read_bytes())
    assert weights[0] == weights[1]
