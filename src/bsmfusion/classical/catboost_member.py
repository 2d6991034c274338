"""`model.fusion: catboost` (optional: the extra `bsmfusion[catboost]`): CatBoost on [the dialogue as a native text
feature | scaled numerics + missing indicators | the categorical columns as native categorical features].

Features. The dialogue is rendered as for tfidf_lr and gbdt (`text_features.render_frame`: parsed, cleaned,
lowercased, role-tagged messages), its messages joined by spaces (CatBoost's default tokenizer splits on spaces
only), and given to CatBoost as one text feature with CatBoost's default text processing (space tokenizer, word and
bigram dictionaries, bag-of-words and naive-Bayes features, all learned on the training rows). Numerics: the
standardised values and missing indicators of the fitted tabular preprocessing (trees are unmoved by the scaling).
Categoricals: CatBoost's own categorical handling on string values — each cell's value as the preprocessing's
vocabulary knows it, values the vocabulary leaves out (rarer than `data.min_category_count`, past
`data.max_categories`, unseen) as one unknown value and missing cells as one missing value, so CatBoost knows
exactly the categories the preprocessing does.

Iterations, as gbdt's boosting rounds: with `model.classical.cv_folds` k ≥ 2, k-fold CV on the training rows
(`member.cv_folds`; with `data.group` each group on one side), the k fold models trained in lockstep — chunks of
`catboost_early_stopping_rounds` iterations, each continued from its last tree — until the mean held-out log loss
has not improved for that many iterations; the count with the lowest mean is fitted on all training rows, and
each training row keeps the raw score of the fold model that did not see it, at that count (`out_of_fold`, for
the ensemble's cross-fitted combination). Without CV, early stopping on the validation rows' log loss (the best
iteration kept). `catboost_early_stopping_rounds: 0`: exactly `catboost_iterations` (the folds still give the
out-of-fold scores).

Contributions: the exact two-player Shapley split of the raw score, as gbdt's (`member.BackgroundSplit`): the text
block at its baseline is a background of `catboost_background_rows` seeded training rows' rendered dialogues (a raw
text has no mean; the background is CatBoost's counterpart of gbdt's SVD rows), the tabular block the same rows'
facts; f(t̄,u) = mean_b f(t_b,u), f(t,ū) = mean_b f(t,u_b), f(t̄,ū) = mean over all pairs, so text + tab +
baseline = the row's raw score exactly. Cost: 2·B extra model evaluations (B = 64) per scored row, each with its
text processed again.

Stored without pickle: the model in CatBoost's own binary format (`catboost.cbm`, `save_model(format="cbm")`),
the background dialogues as JSON (`catboost_background.json`: B rendered training dialogues are in the bundle, as
gbdt's bundle holds B training rows' tabular facts; CatBoost's text dictionaries inside the model hold training
words too), `tab_background` in safetensors.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..config import Config
from ..data.tabular import TabularPreprocessor
from ..errors import ConfigError, DataError
from ..precision import Precision
from ..progress import Heartbeat, say
from .member import (UNSEEN_CLASS_LOG_PROB, BackgroundSplit, ClassicalData, background_rows, cpu_threads, cv_folds,
                     out_of_fold_logits, raw_logits, sample_weights)
from .tab_features import tab_parts
from .text_features import distinct_texts, render_frame

MODEL_FILE = "catboost.cbm"
BACKGROUND_FILE = "catboost_background.json"
INSTALL_HINT = 'pip install "bsmfusion[catboost]"'
TESTED_WITH = "catboost==1.2.10"
TEXT_FEATURE = "dialogue"
# categorical values for the preprocessing's missing and unknown ids: no vocabulary value is empty or starts with a
# space (`data.tabular.category_key` strips them)
MISSING_VALUE, UNKNOWN_VALUE = "", " unknown"


def require_catboost():
    """The `catboost` module, or a one-line `ConfigError` saying how to install it."""
    try:
        import catboost
    except ImportError as err:
        raise ConfigError(f"model kind 'catboost' needs the package catboost ({err.name or 'catboost'} cannot be "
                          f"imported); install it with '{INSTALL_HINT}' (bsmfusion is tested with {TESTED_WITH})"
                          ) from None
    return catboost


def dialogue_texts(rendered: list[str]) -> np.ndarray:
    """Rendered threads (one message a line) as CatBoost's text values: messages joined by spaces, an object array."""
    return np.array([text.replace("\n", " ") for text in rendered], dtype=object)


def catboost_frame(tabular: TabularPreprocessor, texts: np.ndarray, tab: np.ndarray) -> pd.DataFrame:
    """Row i: text `texts[i]`, the numeric block and the categorical values of `tab_matrix` row `tab[i]`."""
    numeric, codes = tab_parts(tabular, tab)
    columns: dict[str, Any] = {TEXT_FEATURE: texts}
    for j, name in enumerate(tabular.numeric_feature_names):
        columns[f"n{j}:{name}"] = numeric[:, j]
    for j, name in enumerate(tabular.categorical):
        values = np.array([MISSING_VALUE, UNKNOWN_VALUE, *tabular.vocab[name]], dtype=object)
        columns[f"c{j}:{name}"] = values[codes[:, j]]
    return pd.DataFrame(columns)


def catboost_pool(tabular: TabularPreprocessor, texts: np.ndarray, tab: np.ndarray, labels: np.ndarray | None = None,
                  weight: np.ndarray | None = None):
    frame = catboost_frame(tabular, texts, tab)
    categorical = [f"c{j}:{name}" for j, name in enumerate(tabular.categorical)]
    return require_catboost().Pool(frame, label=labels, weight=weight, cat_features=categorical,
                                   text_features=[TEXT_FEATURE])


def threads(cfg: Config) -> int:
    return cfg.model.classical.catboost_thread_count or cpu_threads()


def raw_scores(model, pool, cfg: Config, trees: int = 0) -> np.ndarray:
    """`N×K` logits of `pool` (binary [0, log-odds]; multiclass the raw class scores), from the first `trees`
    trees (0: all). A class the model never saw in training (a CV fold's, with group folds) scores -inf in
    CatBoost; it gets log(1e-12) of the probability instead, as tfidf_lr's out-of-fold logits do."""
    from scipy.special import logsumexp

    raw = model.predict(pool, prediction_type="RawFormulaVal", ntree_end=trees, thread_count=threads(cfg))
    logits = raw_logits(raw, cfg.model.num_classes)
    unseen = np.isneginf(logits)
    if unseen.any():
        logits = np.where(unseen, logsumexp(logits, axis=1, keepdims=True) + UNSEEN_CLASS_LOG_PROB, logits)
    return logits


class CatBoostMember(BackgroundSplit):
    """Fitted catboost: the tabular preprocessing, the CatBoost model (its chosen iterations only), the background
    rows' rendered dialogues `text_background` (`B` strings) and their `tab_matrix` rows `tab_background` `B×Du`."""

    kind = "catboost"
    precision = Precision("fp64", "fp64", "CatBoost/NumPy float64 on CPU; --precision applies to neural models only")
    packages = ("catboost",)

    def __init__(self, cfg: Config, tabular: TabularPreprocessor, model, text_background: np.ndarray,
                 tab_background: np.ndarray):
        super().__init__(cfg)
        self.tabular, self.model = tabular, model
        self.text_background = np.asarray(text_background, dtype=object)
        self.tab_background = tab_background
        self._both_baseline: np.ndarray | None = None

    def text_blocks(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(`N` codes, the text value of each distinct text row)."""
        codes, distinct = distinct_texts(frame, self.cfg)
        return codes, dialogue_texts(render_frame(distinct, self.cfg))

    def pair_scores(self, text: np.ndarray, tab: np.ndarray) -> np.ndarray:
        return raw_scores(self.model, catboost_pool(self.tabular, text, tab), self.cfg)

    @classmethod
    def require(cls) -> None:
        require_catboost()

    @classmethod
    def fit(cls, cfg: Config, data: ClassicalData) -> tuple["CatBoostMember", dict[str, Any]]:
        return fit_catboost(cfg, data)

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict[str, np.ndarray]:
        return {"tab_background": self.tab_background}

    def save_extra(self, folder: Path) -> None:
        self.model.save_model(str(folder / MODEL_FILE), format="cbm")
        (folder / BACKGROUND_FILE).write_text(json.dumps({"texts": [str(t) for t in self.text_background]},
                                                         ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_arrays(cls, cfg: Config, text, tabular: TabularPreprocessor, arrays: dict[str, np.ndarray],
                    folder: Path) -> "CatBoostMember":
        model = require_catboost().CatBoostClassifier()
        model.load_model(str(folder / MODEL_FILE), format="cbm")
        texts = json.loads((folder / BACKGROUND_FILE).read_text(encoding="utf-8"))["texts"]
        return cls(cfg, tabular, model, np.array(texts, dtype=object), arrays["tab_background"])


def catboost_params(cfg: Config) -> dict[str, Any]:
    """Deterministic CatBoost parameters from `model.classical` and the seed (nothing written to disk)."""
    settings = cfg.model.classical
    params = {"learning_rate": settings.catboost_learning_rate, "depth": settings.catboost_depth,
              "random_seed": cfg.train.seed, "thread_count": threads(cfg), "allow_writing_files": False,
              "logging_level": "Silent"}
    if cfg.model.num_classes == 2:
        params["loss_function"] = "Logloss"
    else:
        params.update(loss_function="MultiClass", classes_count=cfg.model.num_classes)
    return params


class _Beat:
    """A CatBoost callback that feeds a `Heartbeat` the iteration number."""

    def __init__(self, text: Callable[[int], str]):
        self.beat = Heartbeat(text)

    def after_iteration(self, info) -> bool:
        self.beat(info.iteration)
        return True


def _fitter(cfg: Config) -> Callable:
    """`fit(iterations, pool, **options)` → a fitted `CatBoostClassifier`; CatBoost's "dictionary size is 0" (no
    word in any training thread) becomes a one-line `DataError`."""
    catboost = require_catboost()
    params = catboost_params(cfg)

    def fit(iterations: int, pool, **options):
        try:
            return catboost.CatBoostClassifier(**params, iterations=iterations).fit(pool, **options)
        except catboost.CatBoostError as err:
            if "Dictionary size is 0" not in str(err):
                raise
            raise DataError(f"column(s) {', '.join(map(repr, cfg.data.text))}: no word of the training threads is "
                            "left for CatBoost's text features; check the text columns") from None

    return fit


def cross_validate(cfg: Config, fit: Callable, pool, folds) -> tuple[int, float, np.ndarray]:
    """(iterations, their mean held-out log loss, `N×K` out-of-fold logits): the fold models trained in lockstep,
    `catboost_early_stopping_rounds` iterations at a time (each continued from its last tree), until the mean
    held-out log loss has not improved for that many iterations (0: all `catboost_iterations`)."""
    settings = cfg.model.classical
    most, patience = settings.catboost_iterations, settings.catboost_early_stopping_rounds
    parts = [(pool.slice(fit_rows), pool.slice(held)) for fit_rows, held in folds]
    metric = catboost_params(cfg)["loss_function"]
    models: list[Any] = [None] * len(parts)
    curves: list[list[float]] = [[] for _ in parts]
    beat = Heartbeat(lambda done: f"catboost: {len(folds)}-fold CV, iteration {done:,} of at most {most:,} (early "
                                  f"stopping after {patience} without gain)")
    trained = best = 0
    while trained < most:
        step = min(patience or most, most - trained)
        for f, (fit_pool, held_pool) in enumerate(parts):
            # use_best_model off: CatBoost would otherwise cut each fold model at its own held-out best
            models[f] = fit(step, fit_pool, eval_set=held_pool, use_best_model=False, init_model=models[f])
            curves[f].extend(models[f].get_evals_result()["validation"][metric])
        trained += step
        mean = np.mean(curves, axis=0)
        best = int(np.argmin(mean)) + 1
        beat(trained)
        if patience and trained - best >= patience:
            break
    chosen = best if patience else most
    oof = out_of_fold_logits(lambda f, held: raw_scores(models[f], parts[f][1], cfg, chosen), folds, pool.num_row(),
                             cfg.model.num_classes)
    return chosen, float(mean[chosen - 1]), oof


def _as_stored(model):
    """`model` saved in CatBoost's binary format and loaded back: exactly what the bundle will score with."""
    loaded = require_catboost().CatBoostClassifier()
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / MODEL_FILE)
        model.save_model(path, format="cbm")
        loaded.load_model(path, format="cbm")
    return loaded


def fit_catboost(cfg: Config, data: ClassicalData) -> tuple[CatBoostMember, dict[str, Any]]:
    """Fit CatBoost on the training rows (`train.class_weight` as row weights) with early stopping on the validation
    rows' log loss — or, with `model.classical.cv_folds` k ≥ 2, the iterations from k-fold CV on the training rows
    (`data.train_groups`: folds keep each group whole), validation unused. Returns the model and what training saw
    (for meta.json)."""
    tabular, y_train = data.preprocessor.tabular, data.y_train
    settings = cfg.model.classical
    fit = _fitter(cfg)
    texts = dialogue_texts(data.train_texts)
    train_pool = catboost_pool(tabular, texts, data.train_tab, y_train, sample_weights(cfg, y_train))
    most, patience = settings.catboost_iterations, settings.catboost_early_stopping_rounds
    chosen_on, out_of_fold, extra = "validation", None, {}
    options: dict[str, Any] = {}
    if settings.cv_folds:  # the iterations from k-fold CV on the training rows; validation untouched
        folds = cv_folds(y_train, settings.cv_folds, cfg.train.seed, data.train_groups)
        most, loss, out_of_fold = cross_validate(cfg, fit, train_pool, folds)
        chosen_on = f"{len(folds)}-fold CV on the training rows"
        extra = {"cv_log_loss": loss}
        say(f"catboost: {chosen_on} chose {most:,} iterations (cv log loss {loss:.4f}); fitting them on all "
            f"{len(y_train):,} training rows")
    elif patience:
        val_pool = catboost_pool(tabular, dialogue_texts(data.val_texts), data.val_tab, data.y_val)  # to stop on
        options = {"eval_set": val_pool, "early_stopping_rounds": patience, "use_best_model": True}
    else:
        chosen_on = "catboost_iterations (no early stopping)"
    beat = _Beat(lambda i: f"catboost: iteration {i:,} of at most {most:,}")
    model = _as_stored(fit(most, train_pool, callbacks=[beat], **options))
    iterations = int(model.tree_count_)
    say(f"catboost: {iterations:,} iterations kept ({chosen_on})")
    background = background_rows(len(y_train), settings.catboost_background_rows, cfg.train.seed)
    fitted = CatBoostMember(cfg, tabular, model, texts[background], data.train_tab[background])
    fitted.out_of_fold = out_of_fold
    info = {"rounds": iterations, "chosen_on": chosen_on, **extra, "numeric_features": tabular.numeric_dim,
            "categorical_features": len(tabular.categorical), "text_feature": "CatBoost's default text processing"}
    return fitted, info
