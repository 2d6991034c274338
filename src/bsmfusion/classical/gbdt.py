"""`model.fusion: gbdt`: LightGBM on [the dialogue's TF-IDF, read by `gbdt_text` | scaled numerics + missing
indicators + one-hot categoricals].

The text block is the same TF-IDF features tfidf_lr uses, read as `model.classical.gbdt_text` says (`gbdt_text`:
a TruncatedSVD, or the word n-gram columns themselves), and with `model.classical.quoted_numbers` the numbers the
thread quotes (`quoted_numbers`: each role's last and first number, their gap; their ratios to the numeric columns
are computed from both blocks in `pair_scores`); boosting stops early on the validation log loss, or after the
rounds k-fold CV chose (then one booster refitted on all training rows, or with `gbdt_bagged` the k fold boosters
averaged). Each `auto` boosts every design it names and keeps the lowest CV (else validation) log loss.

Contributions: the exact two-player Shapley split of the raw score (log-odds; multiclass the predicted class's
raw score), the formula of `models.contributions`, where "a block at its baseline" means the block replaced by
training rows' values and the score averaged (`member.BackgroundSplit`; `model.classical.gbdt_background_rows`
seeded training rows; f(t̄,u) = mean_b f(t_b,u), f(t,ū) = mean_b f(t,u_b), f(t̄,ū) = mean over all pairs). A
single mean row, as the neural models use, is a poor baseline for trees: it falls in some leaves, and every row
sharing those leaves gets ≈ 0 on both sides, so its text_share is noise (measured on the planted `price > 0` task,
whose mean row sits on the split: mean text_share 0.46 with the mean row, 0.05 with the background). text + tab +
baseline = score still holds exactly. Cost: 2·B extra evaluations of the booster per scored row (B = 64; each
evaluation runs k boosters when bagged).

Stored as the featurizer's JSON + arrays, the reader's array (`svd_components` or `word_columns`),
`text_background`, `tab_background` in safetensors, the booster in LightGBM's own text format (`lightgbm.txt`;
`gbdt_bagged`: one per fold, `lightgbm_fold_1.txt` … `lightgbm_fold_k.txt`) and, when used, the quoted-numbers
block's roles in `quoted_numbers.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..config import Config
from ..data.tabular import TabularPreprocessor
from ..precision import Precision
from ..errors import BundleError, DataError
from ..progress import say
from .boosting import Boosted, BoosterBag, boost, final_booster
from .gbdt_text import SvdText, TextReader, WordText, dense_columns, hstack, reader_from_arrays
from .member import BackgroundSplit, ClassicalData, background_rows, cpu_threads, cv_folds, raw_logits, sample_weights
from .quoted_numbers import QuotedNumbers
from .tab_features import tab_matrix
from .text_features import TextFeaturizer, distinct_texts, render_frame

BOOSTER_FILE = "lightgbm.txt"
FOLD_BOOSTER_FILE = "lightgbm_fold_{}.txt"  # gbdt_bagged: fold 1..k
QUOTED_FILE = "quoted_numbers.json"


class GBDT(BackgroundSplit):
    """Fitted gbdt: featurizer, the text `reader` (`gbdt_text`: k SVD components or W word columns), the
    quoted-numbers block (`quoted`, or None), the background rows' blocks `text_background` `B×(k|W + Q)` (CSR with
    `words`) and `tab_background` `B×Du`, and the LightGBM booster (its kept rounds only; `gbdt_bagged`: a
    `BoosterBag` of the k fold boosters). The booster reads [text block | tab block | ratios of the two]
    (`pair_scores`)."""

    kind = "gbdt"
    precision = Precision("fp64", "fp64", "LightGBM/NumPy float64 on CPU; --precision applies to neural models only")

    def __init__(self, cfg: Config, text: TextFeaturizer, tabular: TabularPreprocessor, reader: TextReader,
                 text_background, tab_background: np.ndarray, booster, quoted: QuotedNumbers | None = None):
        super().__init__(cfg)
        self.text, self.tabular = text, tabular
        self.reader = reader
        # the words block is sparse: its background pairs (64k per call) would not fit as dense rows
        self.text_background = (sp.csr_matrix(text_background) if isinstance(reader, WordText)
                                else np.asarray(text_background))
        self.tab_background = tab_background
        self.booster = booster
        self.quoted = quoted
        self._both_baseline: np.ndarray | None = None

    def features(self, frame: pd.DataFrame) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
        """(text block `N×(k|W + Q)`: the read TF-IDF, then the quoted numbers; tabular block `N×Du`), float64."""
        codes, distinct = self.text_blocks(frame)
        return distinct[codes], tab_matrix(self.tabular, frame)

    def text_blocks(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | sp.csr_matrix]:
        """(`N` codes, the text block of each distinct text row): row i's block is `distinct[codes[i]]`."""
        codes, distinct = distinct_texts(frame, self.cfg)
        threads = render_frame(distinct, self.cfg)
        quoted = self.quoted.text_part(threads) if self.quoted is not None else None
        return codes, text_block(self.reader.block(self.text.transform(threads)), quoted)

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Raw booster scores as `N×K` logits (binary: [0, log-odds])."""
        return raw_logits(self.booster.predict(x, raw_score=True, num_threads=cpu_threads()), self.num_classes)

    def pair_scores(self, text: np.ndarray | sp.csr_matrix, tab: np.ndarray) -> np.ndarray:
        return self.raw_scores(booster_input(text, tab, self.quoted, self.tabular))

    @classmethod
    def fit(cls, cfg: Config, data: ClassicalData) -> tuple["GBDT", dict[str, Any]]:
        return fit_gbdt(cfg, data.preprocessor.tabular, data.train_texts, data.train_tab, data.y_train,
                        data.val_texts, data.val_tab, data.y_val, sample_weight=sample_weights(cfg, data.y_train),
                        groups=data.train_groups)

    # ------------------------------------------------------------------ storage
    def arrays(self) -> dict[str, np.ndarray]:
        background = self.text_background
        return {**self.reader.arrays(), "tab_background": self.tab_background,
                "text_background": background.toarray() if sp.issparse(background) else background}

    def save_extra(self, folder: Path) -> None:
        if isinstance(self.booster, BoosterBag):
            for fold, booster in enumerate(self.booster.boosters, 1):
                booster.save_model(str(folder / FOLD_BOOSTER_FILE.format(fold)))
        else:
            self.booster.save_model(str(folder / BOOSTER_FILE))
        if self.quoted is not None:
            (folder / QUOTED_FILE).write_text(json.dumps(self.quoted.to_dict()), encoding="utf-8")

    @classmethod
    def from_arrays(cls, cfg: Config, text: TextFeaturizer, tabular: TabularPreprocessor,
                    arrays: dict[str, np.ndarray], folder: Path) -> "GBDT":
        import lightgbm as lgb

        if (folder / BOOSTER_FILE).exists():
            booster = lgb.Booster(model_file=str(folder / BOOSTER_FILE))
        else:  # gbdt_bagged: the fold boosters, in fold order
            booster = BoosterBag([lgb.Booster(model_file=str(path)) for path in fold_booster_files(folder)])
        quoted = folder / QUOTED_FILE
        return cls(cfg, text, tabular, reader_from_arrays(arrays), arrays["text_background"], arrays["tab_background"],
                   booster, QuotedNumbers.from_dict(json.loads(quoted.read_text(encoding="utf-8")))
                   if quoted.exists() else None)


def fold_booster_files(folder: Path) -> list[Path]:
    """A bagged gbdt's `lightgbm_fold_1.txt` … `lightgbm_fold_k.txt`, in fold order; a missing or extra one is a
    BundleError (k − 1 boosters would score without a word)."""
    files = sorted(folder.glob(FOLD_BOOSTER_FILE.format("*")), key=lambda p: p.stem.rsplit("_", 1)[1].zfill(9))
    expected = [folder / FOLD_BOOSTER_FILE.format(fold) for fold in range(1, len(files) + 1)]
    if not files or files != expected:
        raise BundleError(f"{folder}: no {BOOSTER_FILE} and no complete lightgbm_fold_1.txt … lightgbm_fold_k.txt "
                          f"(found {', '.join(p.name for p in files) or 'none'}); copy the whole bundle folder again "
                          "or re-train")
    return files


def text_block(read: np.ndarray | sp.csr_matrix, quoted: np.ndarray | None) -> np.ndarray | sp.csr_matrix:
    """`N×(k|W + Q)` float64: the threads' TF-IDF as the reader read it (`read`, `N×(k|W)`), then, when the design
    has them, their quoted numbers (`quoted`, `N×Q`); CSR when the read block is."""
    return read if quoted is None else hstack([read, quoted])


def raw_numeric(tabular: TabularPreprocessor, tab: np.ndarray) -> np.ndarray:
    """`N×M` the numeric columns' values back from a `tab_matrix` block (`tab`'s first M columns are their
    standardised values, float32; a missing value reads as the training median, a clipped one as the clip bound).
    A value within float32 rounding of 0 is 0 (so a ratio to it is NaN, not ±10⁷ times the number)."""
    stats = [tabular.numeric_stats[column] for column in tabular.numeric]
    mean, std = np.array([s.mean for s in stats]), np.array([s.std for s in stats])
    raw = tab[:, :len(stats)] * std + mean
    return np.where(np.abs(raw) <= 1e-6 * (np.abs(mean) + std), 0.0, raw)


def booster_input(text: np.ndarray | sp.csr_matrix, tab: np.ndarray, quoted: QuotedNumbers | None,
                  tabular: TabularPreprocessor) -> np.ndarray | sp.csr_matrix:
    """What the booster reads for row i's text block `text[i]` with tabular block `tab[i]`: [text | tab], and with
    `quoted` the ratios of the text block's quoted numbers to the numeric columns (a function of both blocks)."""
    if quoted is None:
        return hstack([text, tab])
    ratios = quoted.ratio_part(dense_columns(text, text.shape[1] - quoted.text_dim), raw_numeric(tabular, tab))
    return hstack([text, tab, ratios])


def fit_gbdt(cfg: Config, tabular: TabularPreprocessor, train_texts: list[str], train_tab: np.ndarray,
             y_train: np.ndarray, val_texts: list[str], val_tab: np.ndarray, y_val: np.ndarray,
             sample_weight: np.ndarray | None = None, groups: np.ndarray | None = None) -> tuple[GBDT, dict[str, Any]]:
    """Fit TF-IDF (and the text readers `gbdt_text` names) on the training threads, boost on the training rows with
    early stopping on the validation rows' log loss — or, with `model.classical.cv_folds` k ≥ 2, boosting rounds from
    k-fold CV on the training rows (`groups`: folds keep each group whole), validation unused, then one booster of
    those rounds on all training rows or (`gbdt_bagged`) the k fold boosters averaged
    (`gbdt_early_stopping_rounds: 0`: exactly `gbdt_max_rounds` on all rows, no CV). Every design — a text reader (`gbdt_text`: svd,
    words, auto both; auto leaves words out when no word column is in enough threads), without or with the quoted
    numbers (`quoted_numbers`: off, on, auto both; auto tries them only when a training thread quotes a number) — is
    boosted, and the one of lowest CV (else validation) log loss kept; a tie keeps the earlier (svd before words,
    without before with). Returns the model (its best iteration) and what training saw (for meta.json)."""
    settings = cfg.model.classical
    text = TextFeaturizer.fit(train_texts, settings, list(cfg.data.text))
    tfidf_train = text.transform(train_texts)
    folds = (cv_folds(y_train, settings.cv_folds, cfg.train.seed, groups)
             if settings.cv_folds and settings.gbdt_early_stopping_rounds else None)
    readers = text_readers(cfg, text, tfidf_train)
    block = QuotedNumbers.fit(train_texts, len(tabular.numeric)) if settings.quoted_numbers != "off" else None
    quoted_designs = {"off": [None], "on": [block], "auto": [None, block]}[settings.quoted_numbers]
    # each split's threads vectorised, read and parsed once for every design
    splits = {"train": (tfidf_train, train_texts)} | ({} if folds else {"val": (text.transform(val_texts), val_texts)})
    read = {(name, reader.name): reader.block(tfidf) for name, (tfidf, _) in splits.items() for reader in readers}
    quoted = {name: block.text_part(threads) for name, (_, threads) in splits.items()} if block else {}
    if settings.quoted_numbers == "auto" and not quoted["train"][:, block.count_column].any():
        quoted_designs = [None]  # no training thread quotes a number: nothing to try
    designs = [(reader, q) for reader in readers for q in quoted_designs]

    def inputs(split: str, reader: TextReader, q: QuotedNumbers | None, tab: np.ndarray):
        text_part = text_block(read[split, reader.name], quoted[split] if q is not None else None)
        return text_part, booster_input(text_part, tab, q, tabular)

    def boosted(reader: TextReader, q: QuotedNumbers | None) -> Design:
        train_text, x_train = inputs("train", reader, q, train_tab)
        names = (reader.names() + (q.text_names() if q else []) + [f"tab_{j}" for j in range(train_tab.shape[1])]
                 + (q.ratio_names() if q else []))
        validation = None if folds else (inputs("val", reader, q, val_tab)[1], y_val)
        label = f"gbdt ({design_name(reader, q)})" if len(designs) > 1 else "gbdt"
        return Design(boost(cfg, x_train, names, y_train, sample_weight, folds, validation, label), reader, q,
                      train_text, x_train, names)

    kept: Design | None = None  # the best design so far: only it and the one boosting hold a training input
    losses: dict[str, float] = {}
    for reader, q in designs:
        design = boosted(reader, q)
        losses[design_name(reader, q)] = design.boosted.loss
        if kept is None or design.boosted.loss < kept.boosted.loss:  # a tie keeps the earlier
            kept = design
        del design  # a loser's inputs go now, not when the next design is boosted
    best = kept.boosted
    best.booster = final_booster(cfg, best, kept.x_train, kept.names, y_train, sample_weight)
    best.fold_boosters = None
    bagged = len(best.booster.boosters) if isinstance(best.booster, BoosterBag) else 0
    say(f"gbdt: {best.rounds:,} boosting rounds kept ({best.chosen_on})"
        + (f", the {bagged} fold boosters averaged" if bagged else "")
        + (f"; design {design_name(kept.reader, kept.quoted)}" if len(designs) > 1 else ""))
    background = background_rows(len(y_train), settings.gbdt_background_rows, cfg.train.seed)
    fitted = GBDT(cfg, text, tabular, kept.reader, kept.train_text[background], train_tab[background], best.booster,
                  kept.quoted)
    fitted.out_of_fold = best.out_of_fold
    info = {"rounds": best.rounds, "chosen_on": best.chosen_on, "bagged_boosters": bagged,
            "design": design_name(kept.reader, kept.quoted),
            "text": kept.reader.name, **kept.reader.info(), "text_features": text.dim,
            "tab_features": int(train_tab.shape[1]),
            "quoted_numbers": {"setting": settings.quoted_numbers, "used": kept.quoted is not None,
                               "roles": list(kept.quoted.roles) if kept.quoted else None},
            "design_log_loss": losses}
    return fitted, info


def text_readers(cfg: Config, text: TextFeaturizer, tfidf_train: sp.csr_matrix) -> list[TextReader]:
    """The readers `gbdt_text` names, fitted on the training rows' TF-IDF: `words` alone with no word column in
    `gbdt_min_data_in_leaf` threads is an error (the trees would read no text); under `auto` it is left out."""
    settings = cfg.model.classical
    readers: list[TextReader] = []
    if settings.gbdt_text in ("svd", "auto"):
        readers.append(SvdText.fit(tfidf_train, settings.svd_components, cfg.train.seed))
    if settings.gbdt_text in ("words", "auto"):
        words = WordText.fit(tfidf_train[:, text.block_columns("word")], settings.gbdt_min_data_in_leaf,
                             text.block_columns("word").start)
        if len(words.columns):
            readers.append(words)
        elif settings.gbdt_text == "words":
            raise DataError(f"column(s) {', '.join(map(repr, cfg.data.text))}: no word n-gram is in "
                            f"{settings.gbdt_min_data_in_leaf} training threads (gbdt_min_data_in_leaf), so gbdt's "
                            "words reader would read no text; set model.classical.gbdt_text: svd (or auto)")
    return readers


def design_name(reader: TextReader, quoted: QuotedNumbers | None) -> str:
    """"svd", "words", "svd + quoted numbers", …: how meta.json and the progress lines name a design."""
    return reader.name + (" + quoted numbers" if quoted is not None else "")


@dataclass
class Design:
    """One design boosted: its `Boosted`, text reader and quoted-numbers block (or None), and its training input
    (the text block, the booster's input and its feature names) for the final fit and the background rows."""

    boosted: Boosted
    reader: TextReader
    quoted: QuotedNumbers | None
    train_text: Any
    x_train: Any
    names: list[str]
