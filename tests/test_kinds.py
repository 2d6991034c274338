"""The kind registry: one entry per model kind drives config validation, training, loading, compare and ensemble
membership. The recipe "add a classical member" (docs/architecture.md) is proved here with a member registered
inside the test: one class + one `register_kind` call, nothing else edited."""
import numpy as np
import pytest

import bsmfusion
from bsmfusion.classical.member import ClassicalMember
from bsmfusion.classical.tab_features import tab_matrix
from bsmfusion.config import config_from_dict
from bsmfusion.errors import ConfigError
from bsmfusion.kinds import (CLASSICAL, CLASSICAL_LOADER, CLASSICAL_TRAINER, ModelKind, TrainRun, get_kind,
                             model_kinds, register_kind, unregister_kind)
from tests.helpers import make_frame, tiny_config


class TabLR(ClassicalMember):
    """A toy member: logistic regression on the tabular facts alone (so its text contribution is exactly 0)."""

    kind = "tab_lr"

    def __init__(self, cfg, tabular, coef, intercept, feature_mean):
        super().__init__(cfg)
        self.tabular, self.coef, self.intercept, self.feature_mean = tabular, coef, intercept, feature_mean

    @classmethod
    def fit(cls, cfg, data):
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000).fit(data.train_tab, data.y_train)
        return cls(cfg, data.preprocessor.tabular, model.coef_, model.intercept_, data.train_tab.mean(axis=0)), {}

    def four_logits(self, frame):
        def logits(z):
            return np.hstack([np.zeros_like(z), z])

        real = logits(tab_matrix(self.tabular, frame) @ self.coef.T + self.intercept)
        mean = np.broadcast_to(logits(self.feature_mean @ self.coef.T + self.intercept)[None, :], real.shape)
        return real, real, mean, mean  # (t,u), (t̄,u), (t,ū), (t̄,ū): the text block changes nothing

    def arrays(self):
        return {"coef": self.coef, "intercept": self.intercept, "feature_mean": self.feature_mean}

    @classmethod
    def from_arrays(cls, cfg, text, tabular, arrays, folder):
        return cls(cfg, tabular, arrays["coef"], arrays["intercept"], arrays["feature_mean"])


@pytest.fixture
def tab_lr():
    kind = register_kind(ModelKind("tab_lr", CLASSICAL, False, "logistic regression on the tabular facts (test)",
                                   CLASSICAL_TRAINER, CLASSICAL_LOADER, member=TabLR))
    yield kind
    unregister_kind("tab_lr")


def planted_tab(n, seed):
    frame = make_frame(n, seed=seed)
    frame["label"] = (frame["ratio"] > 0.5).astype(int)
    return frame


@pytest.mark.slow
def test_a_registered_classical_member_trains_loads_scores_and_joins_ensembles_and_compare(tab_lr, tmp_path):
    assert "tab_lr" in model_kinds() and get_kind("tab_lr") is tab_lr
    cfg = tiny_config("tab_lr", data={"id": "id"})
    train_df, val_df = planted_tab(120, 0), planted_tab(60, 1)
    predictor = bsmfusion.train(cfg, train_df, val_df, tmp_path / "member", progress=False)
    scores = predictor.score_frame(val_df)
    assert predictor.bundle.kind == "tab_lr" and predictor.evaluate(val_df)["roc_auc"] > 0.95
    assert np.all(scores.text_contribution == 0)
    log_odds = np.log(scores.probs[:, 1] / scores.probs[:, 0])  # calibrated (Platt rescales the split with it)
    np.testing.assert_allclose(scores.tab_contribution + scores.baseline_score, log_odds, atol=1e-6)
    assert bsmfusion.load(tmp_path / "member").predict(val_df).tolist() == predictor.predict(val_df).tolist()

    ensemble = tiny_config("ensemble", data={"id": "id"})
    ensemble.model.ensemble.members = ["tfidf_lr", "tab_lr"]
    ensemble.model.ensemble.neural_seeds = 1
    ensemble.model.ensemble.member_cv_folds = 2
    combined = bsmfusion.train(ensemble, train_df, val_df, tmp_path / "ensemble", progress=False)
    assert [m.name for m in combined.bundle.model.members] == ["tfidf_lr", "tab_lr"]
    assert combined.predict_proba(val_df).shape == (60, 2)

    from bsmfusion.workflows.compare import default_models

    assert default_models()[-3:] == ["tfidf_lr", "gbdt", "tab_lr"]


def test_config_knows_only_registered_kinds(tab_lr):
    raw = {"data": {"text": "dialogue", "label": "label"}, "model": {"fusion": "tab_lr",
                                                                     "ensemble": {"members": ["neural", "tab_lr"]}}}
    assert config_from_dict(raw).model.fusion == "tab_lr"
    unregister_kind("tab_lr")
    with pytest.raises(ConfigError, match="model.fusion"):
        config_from_dict(raw)
    raw["model"]["fusion"] = "ensemble"
    with pytest.raises(ConfigError, match="unknown member 'tab_lr'; choose from neural, tfidf_lr, gbdt"):
        config_from_dict(raw)


def test_registering_checks_the_entry():
    with pytest.raises(ValueError, match="model kind 'gbdt' is registered already"):
        register_kind(ModelKind("gbdt", CLASSICAL, True, "", CLASSICAL_TRAINER, CLASSICAL_LOADER, member=TabLR))
    with pytest.raises(ValueError, match="classical model kind 'x' needs its ClassicalMember class"):
        register_kind(ModelKind("x", CLASSICAL, True, "", CLASSICAL_TRAINER, CLASSICAL_LOADER))
    with pytest.raises(ValueError, match="family must be neural, classical or ensemble"):
        register_kind(ModelKind("x", "forest", True, "", CLASSICAL_TRAINER, CLASSICAL_LOADER))


def test_training_options_travel_as_one_value():
    run = TrainRun.of(progress=False)
    assert run == TrainRun(progress=False) and TrainRun.of(run, resume=True).progress is False
    with pytest.raises(ConfigError, match="unknown training option 'verbose'; choose from resume, progress"):
        TrainRun.of(verbose=True)
