"""`model.fusion: gbdt`: LightGBM on [SVD of the dialogue's TF-IDF | scaled numerics + missing indicators +
one-hot categoricals].

The text block is a TruncatedSVD (`model.classical.svd_components`, 64) of the same TF-IDF features tfidf_lr
uses; boosting stops early on the validation log loss.

Contributions: the exact two-player Shapley split of the raw score (log-odds; multiclass the predicted class's
raw score), the formula of `models.contributions`, where "a block at its baseline" means the block replaced by
training rows' values and the score averaged (`member.BackgroundSplit`; `model.classical.gbdt_background_rows`
seeded training rows; f(t̄,u) = mean_b f(t_b,u), f(t,ū) = mean_b f(t,u_b), f(t̄,ū) = mean over all pairs). A
single mean row, as the neural models use, is a poor baseline for trees: it falls in some leaves, and every row
sharing those leaves gets ≈ 0 on both sides, so its text_share is noise (measured on the planted `price > 0` task,
whose mean row sits on the split: mean text_share 0.46 with the mean row, 0.05 with the background). text + tab +
baseline = score still holds exactly. Cost: 2·B extra evaluations of the booster per scored row (B = 64).

Stored as the featurizer's JSON + arrays, `svd_components`, `text_background`, `tab_background` in safetensors
and the booster in LightGBM's own text format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..data.tabular import TabularPreprocessor
from ..precision import Precision
from ..progress import Heartbeat, say
from .member import (BackgroundSplit, ClassicalData, background_rows, cpu_threads, cv_folds, out_of_fold_logits,
                     raw_logits, sample_weights)
from .tab_features import tab_matrix
from .text_features import TextFeaturizer, distinct_texts, render_frame

BOOSTER_FILE = "lightgbm.txt"


class GBDT(BackgroundSplit):
    """Fitted gbdt: featurizer, `svd_components` `k×Dt`, the background rows' blocks `text_background` `B×k` and
    `tab_background` `B×Du`, and the LightGBM booster (its best iteration only)."""

    kind = "gbdt"
    precision = Precision("fp64", "fp64", "LightGBM/NumPy float64 on CPU; --precision applies to neural models only")

    def __init__(self, cfg: Config, text: TextFeaturizer, tabular: TabularPreprocessor, svd_components: np.ndarray,
                 text_background: np.ndarray, tab_background: np.ndarray, booster):
        super().__init__(cfg)
        self.text, self.tabular = text, tabular
        self.svd_components = svd_components
        self.text_background, self.tab_background = text_background, tab_background
        self.booster = booster
        self._both_baseline: np.ndarray | None = None

    def features(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(SVD text block `N×k`, tabular block `N×Du`), dense float64."""
        codes, distinct = self.text_blocks(frame)
        return distinct[codes], tab_matrix(self.tabular, frame)

    def text_blocks(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(`N` codes, the SVD text block of each distinct text row): row i's block is `distinct[codes[i]]`."""
        codes, distinct = distinct_texts(frame, self.cfg)
        return codes, np.asarray(self.text.transform(render_frame(distinct, self.cfg)) @ self.svd_components.T)

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Raw booster scores as `N×K` logits (binary: [0, log-odds])."""
        return raw_logits(self.booster.predict(x, raw_score=True, num_threads=cpu_threads()), self.num_classes)

    def pair_scores(self, text: np.ndarray, tab: np.ndarray) -> np.ndarray:
        return self.raw_scores(np.hstack([text, tab]))

    @classmethod
    def fit(cls, cfg: Config, data: ClassicalData) -> tuple["GBDT", dict[str, Any]]:
        return fit_gbdt(cfg, data.preprocessor.tabular, data.train_texts, data.train_tab, data.y_train,
                        data.val_texts, data.val_tab, data.y_val, sample_weight=sample_weights(cfg, data.y_train),
                        groups=data.train_groups)

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict[str, np.ndarray]:
        return {"svd_components": self.svd_components, "text_background": self.text_background,
                "tab_background": self.tab_background}

    def save_extra(self, folder: Path) -> None:
        self.booster.save_model(str(folder / BOOSTER_FILE))

    @classmethod
    def from_arrays(cls, cfg: Config, text: TextFeaturizer, tabular: TabularPreprocessor,
                    arrays: dict[str, np.ndarray], folder: Path) -> "GBDT":
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(folder / BOOSTER_FILE))
        return cls(cfg, text, tabular, arrays["svd_components"], arrays["text_background"], arrays["tab_background"],
                   booster)


def lightgbm_params(cfg: Config) -> dict[str, Any]:
    """Deterministic LightGBM parameters from `model.classical` and the seed."""
    settings = cfg.model.classical
    params = {
        "learning_rate": settings.gbdt_learning_rate, "num_leaves": settings.gbdt_num_leaves,
        "min_data_in_leaf": settings.gbdt_min_data_in_leaf, "feature_fraction": settings.gbdt_feature_fraction,
        "seed": cfg.train.seed, "deterministic": True, "force_row_wise": True, "num_threads": cpu_threads(),
        "verbosity": -1,
    }
    if cfg.model.num_classes == 2:
        params.update(objective="binary", metric="binary_logloss")
    else:
        params.update(objective="multiclass", num_class=cfg.model.num_classes, metric="multi_logloss")
    return params


def cv_logits(cv_booster, folds, x_train: np.ndarray, rounds: int, num_classes: int) -> np.ndarray:
    """`N×K` float64 out-of-fold logits: each training row scored by the fold booster that did not see it, with the
    `rounds` CV chose (binary [0, raw log-odds]; multiclass the raw class scores, logits up to a row constant)."""
    def score_held(f: int, held: np.ndarray) -> np.ndarray:
        raw = cv_booster.boosters[f].predict(x_train[held], raw_score=True, num_iteration=rounds)
        return raw_logits(raw, num_classes)

    return out_of_fold_logits(score_held, folds, len(x_train), num_classes)


def fit_gbdt(cfg: Config, tabular: TabularPreprocessor, train_texts: list[str], train_tab: np.ndarray,
             y_train: np.ndarray, val_texts: list[str], val_tab: np.ndarray, y_val: np.ndarray,
             sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> tuple[GBDT, dict[str, Any]]:
    """Fit TF-IDF and the SVD on the training threads, boost on the training rows with early stopping on the
    validation rows' log loss — or, with `model.classical.cv_folds` k ≥ 2, boosting rounds from k-fold CV on the
    training rows (`groups`: folds keep each group whole), validation unused (`gbdt_early_stopping_rounds: 0`:
    exactly `gbdt_max_rounds`). Returns the model (its best iteration) and what training saw (for meta.json)."""
    import lightgbm as lgb
    from sklearn.decomposition import TruncatedSVD

    settings = cfg.model.classical
    text = TextFeaturizer.fit(train_texts, settings, list(cfg.data.text))
    tfidf_train = text.transform(train_texts)
    k = max(1, min(settings.svd_components, tfidf_train.shape[1] - 1, tfidf_train.shape[0] - 1))
    svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=cfg.train.seed).fit(tfidf_train)
    components = np.ascontiguousarray(svd.components_, dtype=np.float64)
    svd_train = np.asarray(tfidf_train @ components.T)
    x_train = np.hstack([svd_train, train_tab])
    names = [f"svd_{i}" for i in range(k)] + [f"tab_{j}" for j in range(train_tab.shape[1])]
    train_set = lgb.Dataset(x_train, label=y_train, weight=sample_weight, feature_name=names, free_raw_data=False)
    stopping = ([lgb.early_stopping(settings.gbdt_early_stopping_rounds, verbose=False)]
                if settings.gbdt_early_stopping_rounds else [])
    max_rounds, chosen_on, out_of_fold = settings.gbdt_max_rounds, "validation", None
    if settings.cv_folds and stopping:  # the rounds from k-fold CV on the training rows; validation untouched
        folds = cv_folds(y_train, settings.cv_folds, cfg.train.seed, groups)
        beat = Heartbeat(lambda env: f"gbdt: {len(folds)}-fold CV, round {env.iteration + 1:,} of at most "
                                     f"{max_rounds:,} (early stopping after {settings.gbdt_early_stopping_rounds} "
                                     "without gain)")
        history = lgb.cv(lightgbm_params(cfg), train_set, num_boost_round=max_rounds, callbacks=[*stopping, beat],
                         folds=folds, return_cvbooster=True)
        losses = history["valid " + lightgbm_params(cfg)["metric"] + "-mean"]
        max_rounds, stopping = len(losses), []
        out_of_fold = cv_logits(history["cvbooster"], folds, x_train, max_rounds, cfg.model.num_classes)
        chosen_on = f"{len(folds)}-fold CV on the training rows"
        say(f"gbdt: {chosen_on} chose {max_rounds:,} boosting rounds (cv log loss "
            f"{losses[-1]:.4f}); fitting them on all {len(y_train):,} training rows")
    valid = {}
    if stopping:
        x_val = np.hstack([np.asarray(text.transform(val_texts) @ components.T), val_tab])  # only to stop on
        valid = {"valid_sets": [lgb.Dataset(x_val, label=y_val, reference=train_set, feature_name=names,
                                            free_raw_data=False)], "valid_names": ["validation"]}
    beat = Heartbeat(lambda env: f"gbdt: boosting round {env.iteration + 1:,} of at most {max_rounds:,}")
    booster = lgb.train(lightgbm_params(cfg), train_set, num_boost_round=max_rounds, callbacks=[*stopping, beat],
                        **valid)
    rounds = int(booster.best_iteration or booster.current_iteration())
    say(f"gbdt: {rounds:,} boosting rounds kept ({chosen_on})")
    # keep exactly what is stored: the best iteration's trees, reloaded from LightGBM's text format
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    background = background_rows(len(y_train), settings.gbdt_background_rows, cfg.train.seed)
    fitted = GBDT(cfg, text, tabular, components, svd_train[background], train_tab[background], booster)
    fitted.out_of_fold = out_of_fold
    info = {"rounds": rounds, "chosen_on": chosen_on, "svd_components": k, "svd_explained_variance": float(svd.explained_variance_ratio_.sum()),
            "text_features": text.dim, "tab_features": int(train_tab.shape[1])}
    return fitted, info
