"""What tfidf_lr and gbdt share: the scorer interface, the exact two-player Shapley split, and the fitted table
preprocessing (tabular state + label names, no text pipeline: the members render the dialogue themselves).

The split is the formula of `models.contributions`, on four evaluations of the member's raw logits — real rows
(t,u), text block at its training mean (t̄,u), tabular block at its training mean (t,ū), both (t̄,ū):

    text = ½[(s(t,u) − s(t̄,u)) + (s(t,ū) − s(t̄,ū))]      tab = ½[(s(t,u) − s(t,ū)) + (s(t̄,u) − s(t̄,ū))]

with s = the positive class's log-odds (binary) or the target class's logit (multiclass), so
text + tab + s(t̄,ū) = s(t,u).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..calibration import softmax
from ..config import Config
from ..data.preprocess import RowPreprocessor
from ..models.scores import Scores
from ..precision import Precision

FP64 = Precision("fp64", "fp64", "NumPy float64 on CPU; --precision applies to neural models only")


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
    """Base of the classical members. Subclasses implement `four_logits(frame)` (the four `N×K` logit sets) and
    their storage (`arrays`, `save_extra`, classmethod `from_arrays`); scoring and the scorer interface live here."""

    kind: ClassVar[str] = ""
    precision: Precision = FP64

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    @property
    def text_columns(self) -> list[str]:
        return list(self.cfg.data.text)

    def describe_precision(self) -> str:
        return self.precision.describe()

    def scorer(self, **_options) -> "ClassicalMember":
        """The member scores itself; batch size, device and precision are neural options."""
        return self

    def four_logits(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`N×K` logits of (t,u), (t̄,u), (t,ū), (t̄,ū)."""
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """The member's own float64 arrays, stored in safetensors next to the featurizer's."""
        raise NotImplementedError

    def save_extra(self, folder: Path) -> None:
        """Files other than arrays (gbdt: the booster in LightGBM's text format)."""

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None) -> Scores:
        """Probabilities `N×K` and the split of each row's decision (or of class `targets`' logit, multiclass)."""
        if len(frame) == 0:
            empty = np.zeros(0)
            return Scores(np.zeros((0, self.num_classes)), empty, empty.copy(), empty.copy())
        return split_scores(*self.four_logits(frame), targets=targets)
