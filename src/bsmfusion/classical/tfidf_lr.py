"""`model.fusion: tfidf_lr`: logistic regression over [TF-IDF of the parsed dialogue | scaled numerics + missing
indicators + one-hot categoricals].

Logits are linear in the features, z = X·Wᵀ + b, so the exact Shapley split against the training-mean row x̄ is
text = W_text·(x_text − x̄_text), tab = W_tab·(x_tab − x̄_tab) and baseline = b + W·x̄ (for the decision: binary
log-odds, multiclass the predicted class's logit). Stored as the featurizer's JSON + arrays and `coef`,
`intercept`, `feature_mean` in safetensors.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from ..config import Config
from ..data.tabular import TabularPreprocessor
from ..calibration import softmax
from ..evaluation.metrics import classification_metrics
from ..precision import Precision
from ..progress import Heartbeat, say
from .member import UNSEEN_CLASS_LOG_PROB, ClassicalData, ClassicalMember, class_weight_dict, cv_folds
from .tab_features import tab_matrix
from .text_features import TextFeaturizer, render_frame


class TfidfLR(ClassicalMember):
    """Fitted tfidf_lr: `coef` `K'×D` (K' = 1 for binary: the positive class's log-odds), `intercept` `K'`,
    `feature_mean` `D` (training means; D = text features then tabular features)."""

    kind = "tfidf_lr"
    precision = Precision("fp64", "fp64", "NumPy/scikit-learn float64 on CPU; --precision applies to neural models only")

    def __init__(self, cfg: Config, text: TextFeaturizer, tabular: TabularPreprocessor, coef: np.ndarray,
                 intercept: np.ndarray, feature_mean: np.ndarray):
        super().__init__(cfg)
        self.text, self.tabular = text, tabular
        self.coef, self.intercept, self.feature_mean = coef, intercept, feature_mean

    def features(self, frame: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
        """(text `N×Dt` sparse, tabular `N×Du` dense)."""
        return self.text.transform_frame(frame, self.cfg), tab_matrix(self.tabular, frame)

    def four_logits(self, frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
        text, tab = self.features(frame)
        dt = text.shape[1]
        w_text, w_tab = self.coef[:, :dt], self.coef[:, dt:]
        lin_text = np.asarray(text @ w_text.T)  # N×K'
        lin_tab = tab @ w_tab.T
        mean_text = self.feature_mean[:dt] @ w_text.T  # K'
        mean_tab = self.feature_mean[dt:] @ w_tab.T
        four = (lin_text + lin_tab, mean_text + lin_tab, lin_text + mean_tab,
                np.broadcast_to(mean_text + mean_tab, lin_text.shape))
        return tuple(self._as_logits(z + self.intercept) for z in four)

    @staticmethod
    def _as_logits(z: np.ndarray) -> np.ndarray:
        """Binary `N×1` log-odds → `N×2` logits [0, s]; multiclass unchanged."""
        return np.hstack([np.zeros_like(z), z]) if z.shape[1] == 1 else z

    @classmethod
    def fit(cls, cfg: Config, data: ClassicalData) -> tuple["TfidfLR", dict[str, Any]]:
        return fit_tfidf_lr(cfg, data.preprocessor.tabular, data.train_texts, data.train_tab, data.y_train,
                            data.val_texts, data.val_tab, data.y_val, groups=data.train_groups)

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": self.intercept, "feature_mean": self.feature_mean}

    @classmethod
    def from_arrays(cls, cfg: Config, text: TextFeaturizer, tabular: TabularPreprocessor,
                    arrays: dict[str, np.ndarray], folder) -> "TfidfLR":
        return cls(cfg, text, tabular, arrays["coef"], arrays["intercept"], arrays["feature_mean"])


def selection_key(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Higher is better: (validation ROC-AUC, −log loss); an undefined ROC-AUC ranks last."""
    metrics = classification_metrics(labels, probs, None)
    auc = metrics["roc_auc"]
    return (auc if np.isfinite(auc) else -np.inf, -metrics["log_loss"])


def fit_tfidf_lr(cfg: Config, tabular: TabularPreprocessor, train_texts: list[str], train_tab: np.ndarray,
                 y_train: np.ndarray, val_texts: list[str], val_tab: np.ndarray,
                 y_val: np.ndarray, groups: np.ndarray | None = None) -> tuple[TfidfLR, dict[str, Any]]:
    """Fit TF-IDF on the training threads and one logistic regression per C of `model.classical.lr_c_grid`; keep
    the C with the best ROC-AUC (log loss breaks ties) on the validation rows, or, with `model.classical.cv_folds`
    k ≥ 2, on the training rows' out-of-fold predictions (the TF-IDF vocabulary is fitted once on all training
    rows; `groups`: folds keep each group whole), then fit that C on all training rows. Returns the model and what
    the search saw (for meta.json)."""
    settings = cfg.model.classical
    text = TextFeaturizer.fit(train_texts, settings, list(cfg.data.text))
    x_train = sp.hstack([text.transform(train_texts), sp.csr_matrix(train_tab)], format="csr")
    binary = cfg.model.num_classes == 2

    def regression(c: float) -> LogisticRegression:
        # liblinear for binary (fast, exact on sparse data); multinomial lbfgs for several classes
        return LogisticRegression(C=c, solver="liblinear" if binary else "lbfgs", max_iter=1000,
                                  random_state=cfg.train.seed,
                                  class_weight=class_weight_dict(cfg.train.class_weight, cfg.model.num_classes))

    def fold_logits(fitted: LogisticRegression, rows) -> np.ndarray:
        """`n×K` logits: binary [0, decision] (exact log-odds, no saturated probabilities), multiclass log-probs,
        each in its class's column (a fold whose training rows lack a class, as group folds can: that class at
        log(1e-12), a probability its model could not give)."""
        if binary:
            z = fitted.decision_function(x_train[rows])
            return np.stack([np.zeros_like(z), z], axis=1)
        logits = np.full((len(rows), cfg.model.num_classes), UNSEEN_CLASS_LOG_PROB)
        logits[:, fitted.classes_] = fitted.predict_log_proba(x_train[rows])
        return logits

    search, best, out_of_fold = [], None, None
    chosen_on = "validation"
    if settings.cv_folds:  # also with one C: the out-of-fold logits serve the ensemble's cross-fitted combination
        folds = cv_folds(y_train, settings.cv_folds, cfg.train.seed, groups)
        grid = settings.lr_c_grid
        for i, c in enumerate(grid, 1):
            oof = np.zeros((len(y_train), cfg.model.num_classes))
            beat = Heartbeat(lambda fold: f"tfidf_lr: C={c:g} ({i}/{len(grid)}), fold {fold}/{len(folds)} done")
            for fold, (fit_rows, held) in enumerate(folds, 1):
                oof[held] = fold_logits(regression(c).fit(x_train[fit_rows], y_train[fit_rows]), held)
                beat(fold)
            key = selection_key(y_train, softmax(oof))
            search.append({"C": c, "cv_roc_auc": key[0], "cv_log_loss": -key[1]})
            say(f"tfidf_lr: C={c:g} ({i}/{len(grid)}), {len(folds)}-fold CV on {len(y_train):,} training rows: "
                f"roc_auc {key[0]:.4f}, log_loss {-key[1]:.4f}")
            if best is None or key > best[0]:
                best, out_of_fold = (key, c), oof
        model = regression(best[1]).fit(x_train, y_train)
        chosen_on = f"{len(folds)}-fold CV on the training rows"
    else:
        x_val = sp.hstack([text.transform(val_texts), sp.csr_matrix(val_tab)], format="csr")
        for i, c in enumerate(settings.lr_c_grid, 1):
            fitted_c = regression(c).fit(x_train, y_train)
            key = selection_key(y_val, fitted_c.predict_proba(x_val))
            search.append({"C": c, "val_roc_auc": key[0], "val_log_loss": -key[1]})
            say(f"tfidf_lr: C={c:g} ({i}/{len(settings.lr_c_grid)}) on {len(y_val):,} validation rows: "
                f"roc_auc {key[0]:.4f}, log_loss {-key[1]:.4f}")
            if best is None or key > best[0]:
                best, model = (key, c), fitted_c
    c = best[1]
    say(f"tfidf_lr: C={c:g} chosen ({chosen_on})")
    mean = np.asarray(x_train.mean(axis=0), dtype=np.float64).ravel()
    fitted = TfidfLR(cfg, text, tabular, np.ascontiguousarray(model.coef_, dtype=np.float64),
                     np.ascontiguousarray(model.intercept_, dtype=np.float64), mean)
    fitted.out_of_fold = out_of_fold
    info = {"C": c, "c_search": search, "chosen_on": chosen_on, "text_features": text.dim, "tab_features": int(train_tab.shape[1])}
    return fitted, info
