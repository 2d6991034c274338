"""LightGBM boosting for gbdt: the parameters, the rounds (k-fold CV on the training rows, or early stopping on the
validation rows), the out-of-fold logits CV gives and the booster of exactly the kept rounds — or, with
`gbdt_bagged`, the CV's k fold boosters cut to them (`BoosterBag`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config
from ..progress import Heartbeat, say
from .member import cpu_threads, out_of_fold_logits, raw_logits


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


def cv_logits(cv_booster, folds, x_train, rounds: int, num_classes: int) -> np.ndarray:
    """`N×K` float64 out-of-fold logits: each training row scored by the fold booster that did not see it, with the
    `rounds` CV chose (binary [0, raw log-odds]; multiclass the raw class scores, logits up to a row constant)."""
    def score_held(f: int, held: np.ndarray) -> np.ndarray:
        raw = cv_booster.boosters[f].predict(x_train[held], raw_score=True, num_iteration=rounds)
        return raw_logits(raw, num_classes)

    return out_of_fold_logits(score_held, folds, x_train.shape[0], num_classes)


class BoosterBag:
    """`model.classical.gbdt_bagged`: the k boosters of a k-fold CV, each cut to the rounds the CV chose; a row's raw
    score is their mean (AutoGluon's bagging). Each booster saw (k-1)/k of the training rows; each training row's
    out-of-fold score comes from the one booster that did not see it, and no refit on all rows is needed."""

    def __init__(self, boosters: list):
        if not boosters:
            raise ValueError("BoosterBag needs at least one booster")
        self.boosters = list(boosters)

    def predict(self, x, *, raw_score: bool = False, **kwargs) -> np.ndarray:
        """The mean raw score `N` (multiclass `N×K`) of the k boosters. Raw scores only, asked for by name: a mean
        of probabilities is not the probability of the mean score (and LightGBM's own default is probabilities)."""
        if not raw_score:
            raise ValueError("BoosterBag.predict averages raw scores only: call it with raw_score=True")
        return np.mean([b.predict(x, raw_score=True, **kwargs) for b in self.boosters], axis=0)


@dataclass
class Boosted:
    """One design's boosting: the rounds kept, the log loss that chose them (CV mean, else the validation log loss
    at the kept round — at the last one without early stopping), on what, the out-of-fold logits (CV), the
    booster (None until `final_booster` when CV chose) and the CV's fold boosters (`fold_boosters`, with CV)."""

    rounds: int
    loss: float
    chosen_on: str
    out_of_fold: np.ndarray | None
    booster: Any
    fold_boosters: list | None = None


def boost(cfg: Config, x_train, names: list[str], y_train: np.ndarray,
          sample_weight: np.ndarray | None, folds, validation: tuple[np.ndarray, np.ndarray] | None,
          label: str) -> Boosted:
    """The boosting rounds of one design: by CV over `folds` (the booster left to `final_booster`), else trained on
    all training rows, early-stopped on `validation` (x, y) when `gbdt_early_stopping_rounds` > 0."""
    import lightgbm as lgb

    settings, params = cfg.model.classical, lightgbm_params(cfg)
    metric, max_rounds = params["metric"], settings.gbdt_max_rounds
    train_set = lgb.Dataset(x_train, label=y_train, weight=sample_weight, feature_name=names, free_raw_data=False)
    stopping = ([lgb.early_stopping(settings.gbdt_early_stopping_rounds, verbose=False)]
                if settings.gbdt_early_stopping_rounds else [])
    if folds is not None:
        beat = Heartbeat(lambda env: f"{label}: {len(folds)}-fold CV, round {env.iteration + 1:,} of at most "
                                     f"{max_rounds:,} (early stopping after {settings.gbdt_early_stopping_rounds} "
                                     "without gain)")
        history = lgb.cv(params, train_set, num_boost_round=max_rounds, callbacks=[*stopping, beat], folds=folds,
                         return_cvbooster=True)
        losses = history[f"valid {metric}-mean"]
        chosen_on = f"{len(folds)}-fold CV on the training rows"
        say(f"{label}: {chosen_on} chose {len(losses):,} boosting rounds (cv log loss {losses[-1]:.4f})")
        out_of_fold = cv_logits(history["cvbooster"], folds, x_train, len(losses), cfg.model.num_classes)
        return Boosted(len(losses), float(losses[-1]), chosen_on, out_of_fold, None, history["cvbooster"].boosters)
    x_val, y_val = validation
    valid_set = lgb.Dataset(x_val, label=y_val, reference=train_set, feature_name=names, free_raw_data=False)
    beat = Heartbeat(lambda env: f"{label}: boosting round {env.iteration + 1:,} of at most {max_rounds:,}")
    booster = lgb.train(params, train_set, num_boost_round=max_rounds, callbacks=[*stopping, beat],
                        valid_sets=[valid_set], valid_names=["validation"])
    rounds = int(booster.best_iteration or booster.current_iteration())
    loss = float(booster.best_score.get("validation", {}).get(metric, np.nan))
    return Boosted(rounds, loss, "validation" if stopping else "gbdt_max_rounds", None, keep_rounds(booster, rounds))


def final_booster(cfg: Config, boosted: Boosted, x_train, names: list[str], y_train: np.ndarray,
                  sample_weight: np.ndarray | None):
    """The kept design's model: its booster when validation chose the rounds; after CV, `gbdt_bagged`'s fold
    boosters cut to the chosen rounds (`BoosterBag`, the boosters its out-of-fold logits came from), else those
    rounds boosted on all training rows."""
    if boosted.booster is not None:
        return boosted.booster
    if cfg.model.classical.gbdt_bagged:
        return BoosterBag([keep_rounds(b, boosted.rounds) for b in boosted.fold_boosters])
    return fit_booster(cfg, x_train, names, y_train, sample_weight, boosted.rounds)


def fit_booster(cfg: Config, x_train, names: list[str], y_train: np.ndarray,
                sample_weight: np.ndarray | None, rounds: int):
    """`rounds` boosting rounds on all training rows."""
    import lightgbm as lgb

    train_set = lgb.Dataset(x_train, label=y_train, weight=sample_weight, feature_name=names, free_raw_data=False)
    beat = Heartbeat(lambda env: f"gbdt: boosting round {env.iteration + 1:,} of {rounds:,}")
    return keep_rounds(lgb.train(lightgbm_params(cfg), train_set, num_boost_round=rounds, callbacks=[beat]), rounds)


def keep_rounds(booster, rounds: int):
    """Exactly what is stored: the first `rounds` trees, reloaded from LightGBM's text format."""
    import lightgbm as lgb

    return lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
