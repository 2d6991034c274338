"""What the classical members share: the scorer interface, the exact two-player Shapley split, the fitted table
preprocessing (tabular state + label names, no text pipeline: the members render the dialogue themselves), the
CV folds and out-of-fold logits, and (`BackgroundSplit`, gbdt and catboost) blocks at their baseline as averages
over training rows' blocks.

The split is the formula of `models.contributions`, on four evaluations of the member's raw logits — real rows
(t,u), text block at its training mean (t̄,u), tabular block at its training mean (t,ū), both (t̄,ū):

    text = ½[(s(t,u) − s(t̄,u)) + (s(t,ū) − s(t̄,ū))]      tab = ½[(s(t,u) − s(t,ū)) + (s(t̄,u) − s(t̄,ū))]

with s = the positive class's log-odds (binary) or the target class's logit (multiclass), so
text + tab + s(t̄,ū) = s(t,u).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd

from ..calibration import softmax
from ..config import Config
from ..data.preprocess import RowPreprocessor
from ..models.scores import Scores
from ..precision import Precision
from .tab_features import tab_matrix

FP64 = Precision("fp64", "fp64", "NumPy float64 on CPU; --precision applies to neural models only")


@dataclass
class ClassicalData:
    """Both splits, featurised as far as every member shares: rendered threads, tabular matrices, label ids."""

    preprocessor: RowPreprocessor
    train_texts: list[str]
    val_texts: list[str]
    train_tab: np.ndarray
    val_tab: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    train_groups: np.ndarray | None = None  # `data.group` codes: cross-validation folds keep each group whole


def class_weight_dict(setting, num_classes: int) -> dict[int, float] | str | None:
    """`train.class_weight` for scikit-learn: None, "balanced", or {class id: weight}."""
    from ..errors import ConfigError

    if setting in ("none", "balanced"):
        return None if setting == "none" else "balanced"
    if len(setting) != num_classes:
        raise ConfigError(f"train.class_weight has {len(setting)} weights but there are {num_classes} classes; "
                          "give one per class")
    return {k: float(w) for k, w in enumerate(setting)}


def sample_weights(cfg: Config, labels: np.ndarray) -> np.ndarray | None:
    """Per-row weights from `train.class_weight` (for fitters that take row weights rather than class weights)."""
    setting = class_weight_dict(cfg.train.class_weight, cfg.model.num_classes)
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(labels, minlength=cfg.model.num_classes).astype(np.float64)
        per_class = len(labels) / (cfg.model.num_classes * np.maximum(counts, 1.0))
    else:
        per_class = np.array([setting[k] for k in range(cfg.model.num_classes)])
    return per_class[labels]


def table_preprocessor(cfg: Config, train: pd.DataFrame | None = None, state: str | None = None) -> RowPreprocessor:
    """The fitted tabular preprocessing and label names, fitted on `train` or read from JSON `state`; built for a
    copy of `cfg` without text (tab_only), so no tokenizer is needed — the dialogue is `text_features`' job."""
    tabular_cfg = cfg.model_copy(deep=True)
    tabular_cfg.model.fusion = "tab_only"
    if state is not None:
        return RowPreprocessor.from_json(tabular_cfg, None, state)
    return RowPreprocessor.fit(tabular_cfg, None, train)


def cv_folds(labels: np.ndarray, folds: int, seed: int,
             groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (train rows, held-out rows) index pairs, seeded; k is capped by the rarest class. With
    `groups` (`data.group`'s codes) no group is on both sides of a fold: rows of one person (or the two sides of one
    dialogue) would otherwise let a held-out row be predicted from its twin, and C / rounds would be chosen to
    memorise rather than to generalise."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    k = min(folds, int(np.bincount(labels).min()))
    if groups is not None:
        k = min(k, len(np.unique(groups)))
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 rows (groups) of every class; the rarest class has {k}")
    if groups is not None:
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels, groups))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


UNSEEN_CLASS_LOG_PROB = float(np.log(1e-12))  # out-of-fold log-probability of a class the fold's model never saw


def cpu_threads() -> int:
    """CPU threads for the tree libraries: as many as torch uses."""
    import torch

    return max(1, torch.get_num_threads())


def raw_logits(raw: np.ndarray, num_classes: int) -> np.ndarray:
    """A booster's raw scores as `N×K` float64 logits: binary `N` log-odds → [0, log-odds]; multiclass `N×K` (or
    flat) raw class scores, logits up to a row constant."""
    raw = np.asarray(raw, dtype=np.float64)
    if num_classes == 2:
        return np.stack([np.zeros_like(raw), raw], axis=1)
    return raw.reshape(len(raw), num_classes)


def out_of_fold_logits(score_held: Callable[[int, np.ndarray], np.ndarray], folds, rows: int,
                       num_classes: int) -> np.ndarray:
    """`rows×K` float64: the held-out rows `held` of fold f as `score_held(f, held)` gives them (fold f's model's
    `len(held)×K` logits)."""
    logits = np.zeros((rows, num_classes))
    for f, (_, held) in enumerate(folds):
        logits[held] = score_held(f, held)
    return logits


def background_rows(rows: int, count: int, seed: int) -> np.ndarray:
    """Sorted positions of `count` (at most `rows`) training rows drawn with `seed`: a `BackgroundSplit`'s
    background."""
    return np.sort(np.random.default_rng(seed).choice(rows, size=min(count, rows), replace=False))


def decision_score(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`N×K` → `N`: log-odds of class 1 when K = 2, else the logit of class `target`."""
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits[np.arange(len(logits)), target]


def split_scores(real: np.ndarray, text_base: np.ndarray, tab_base: np.ndarray, both_base: np.ndarray,
                 targets: np.ndarray | None = None) -> Scores:
    """Probabilities of the real rows and the Shapley split (all float64) from the four `N×K` logit sets."""
    target = real.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
    s_real, s_text, s_tab, s_both = (decision_score(z, target) for z in (real, text_base, tab_base, both_base))
    return Scores(probs=softmax(real),
                  text_contribution=0.5 * ((s_real - s_text) + (s_tab - s_both)),
                  tab_contribution=0.5 * ((s_real - s_tab) + (s_text - s_both)),
                  baseline_score=s_both)


class ClassicalMember:
    """Base of the classical members. Subclasses implement `fit` (classmethod: the prepared splits → the fitted
    member and what its search saw), `four_logits(frame)` (the four `N×K` logit sets) and their storage (`arrays`,
    `save_extra`, classmethod `from_arrays`; a member with a `text` attribute, a `TextFeaturizer`, has it stored
    too); scoring and the scorer interface live here. Registering one: `kinds.register_kind` with
    `family="classical"` and `member=` the subclass (docs/architecture.md)."""

    kind: ClassVar[str] = ""
    precision: Precision = FP64
    packages: ClassVar[tuple[str, ...]] = ()  # packages beyond bsmfusion's own whose versions meta.json records
    # set by `fit` when the member chose by CV: `N_train×K` float64 logits of each training row from the fold model
    # that did not see it (binary [0, log-odds]); the ensemble's cross-fitted combination reads them
    out_of_fold: np.ndarray | None = None

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    @property
    def text_columns(self) -> list[str]:
        """The text columns an input table needs: none for a member registered with `uses_text=False`."""
        return list(self.cfg.data.text) if self.cfg.model.uses_text else []

    def describe_precision(self) -> str:
        return self.precision.describe()

    @classmethod
    def fit(cls, cfg: Config, data: ClassicalData) -> tuple["ClassicalMember", dict[str, Any]]:
        """Fit on `data.train_*` (choices by `model.classical.cv_folds`-fold CV on them, or on `data.val_*` without
        CV); returns the member and what training saw, for meta.json (`rounds` there is reported as epochs)."""
        raise NotImplementedError

    def scorer(self, options=None) -> "ClassicalMember":
        """The member scores itself; every `scoring.ScoringOptions` field is a neural option."""
        return self

    def four_logits(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`N×K` logits of (t,u), (t̄,u), (t,ū), (t̄,ū)."""
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """The member's own float64 arrays, stored in safetensors next to the featurizer's."""
        raise NotImplementedError

    def save_extra(self, folder: Path) -> None:
        """Files other than arrays (gbdt: the booster in LightGBM's text format)."""

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None, memo: dict | None = None) -> Scores:
        """Probabilities `N×K` and the split of each row's decision (or of class `targets`' logit, multiclass);
        `memo` (the scorer interface's per-frame dict) is not needed here."""
        if len(frame) == 0:
            empty = np.zeros(0)
            return Scores(np.zeros((0, self.num_classes)), empty, empty.copy(), empty.copy())
        return split_scores(*self.four_logits(frame), targets=targets)

    @classmethod
    def require(cls) -> None:
        """Raise a one-line `ConfigError` when a package the member needs cannot be imported (an ensemble checks
        its members before training any); nothing for members built on bsmfusion's own dependencies."""


CHUNK_EVALUATIONS = 65_536  # model evaluations per call when averaging over the background rows


class BackgroundSplit(ClassicalMember):
    """A member whose blocks sit at their baseline by being replaced with training rows' blocks, the scores averaged
    (gbdt, catboost): f(t̄,u) = mean_b f(t_b,u), f(t,ū) = mean_b f(t,u_b), f(t̄,ū) = the mean over all pairs. A
    single mean row is a poor baseline for trees (gbdt's docstring says why); text + tab + baseline = score still
    holds exactly. Cost: 2·B extra evaluations per scored row, B = the background rows.

    Subclasses give `text_blocks(frame)` (`N` codes, and the text block of each distinct text row — an array or a
    CSR matrix, indexed by rows: row i's block is `distinct[codes[i]]`), `pair_scores(text, tab)` (`N×K` logits of row i's text
    block with row i's tabular block) and the attributes `tabular`, `text_background` (B text blocks, an array or
    CSR) and `tab_background` (B `tab_matrix` rows, which `explain` takes as its tabular reference)."""

    tabular: Any
    text_background: Any  # B×Dt: an array, or CSR (gbdt's words block)
    tab_background: np.ndarray
    _both_baseline: np.ndarray | None = None

    def text_blocks(self, frame: pd.DataFrame) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def pair_scores(self, text: Any, tab: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def averaged(self, block: Any, replace_text: bool) -> np.ndarray:
        """`N×K`: each row's score with its own `block` (the tabular one when `replace_text`, else the text one)
        and the background rows' other block, averaged over the background rows."""
        background = self.text_background if replace_text else self.tab_background
        b, rows = background.shape[0], block.shape[0]  # either may be sparse (gbdt's words block)
        step = CHUNK_EVALUATIONS // b + 1  # bounded memory: ~64k pairs per call
        out = []
        for start in range(0, rows, step):
            m = min(step, rows - start)
            own, other = block[start + np.repeat(np.arange(m), b)], background[np.tile(np.arange(b), m)]
            scores = self.pair_scores(other, own) if replace_text else self.pair_scores(own, other)
            out.append(scores.reshape(m, b, -1).mean(axis=1))
        return np.vstack(out) if out else np.zeros((0, self.num_classes))

    def both_baseline(self) -> np.ndarray:
        """`K`: the mean score over every (background text, background tabular) pair (computed once)."""
        if self._both_baseline is None:
            self._both_baseline = self.averaged(self.tab_background, replace_text=True).mean(axis=0)
        return self._both_baseline

    def four_logits(self, frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
        """The background averages are computed once per distinct block: copies of a row that share its text (or
        its tabular facts), as `explain` scores them, cost one evaluation each plus one average."""
        codes, distinct = self.text_blocks(frame)
        tab = tab_matrix(self.tabular, frame)
        real = self.pair_scores(distinct[codes], tab)
        tabs, tab_codes = np.unique(tab, axis=0, return_inverse=True)
        return (real, self.averaged(tabs, replace_text=True)[tab_codes.reshape(-1)],
                self.averaged(distinct, replace_text=False)[codes],
                np.broadcast_to(self.both_baseline(), real.shape))
