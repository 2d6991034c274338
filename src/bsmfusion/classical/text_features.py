"""The dialogue as TF-IDF features for the classical members.

Threads are parsed and cleaned exactly as for the neural path (`data.text.render_threads`: role-tagged messages,
HTML, zero-width/control characters, URLs and e-mails handled the same way), then vectorised as word 1–2-grams
plus char_wb 3–5-grams, sublinear tf, L2-normalised per block. A fitted featurizer is stored as JSON (vectorizer
parameters and vocabularies in column order) plus the idf vectors as arrays, and rebuilt without pickle.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from ..config import ClassicalConfig, Config
from ..data.tabular import require_columns
from ..data.text import cleaning_options, render_threads
from ..errors import DataError

# the fixed parts of each vectorizer; min_df and max_features come from `model.classical`
BLOCKS: dict[str, dict[str, Any]] = {
    "word": {"analyzer": "word", "ngram_range": [1, 2], "sublinear_tf": True, "lowercase": True},
    "char": {"analyzer": "char_wb", "ngram_range": [3, 5], "sublinear_tf": True, "lowercase": True},
}


def render_frame(frame: pd.DataFrame, cfg: Config) -> list[str]:
    """`N` strings: each row's `data.text` cells parsed into role-tagged, cleaned messages, one per line."""
    columns = list(cfg.data.text)
    require_columns(frame, columns, "input data")
    rows = list(frame[columns].itertuples(index=False, name=None))
    # TF-IDF lowercases itself, so the tokenizer-dependent lowercasing of the neural path makes no difference here
    return render_threads(rows, cfg.text, cleaning_options(cfg.text, lowercase=True))


def distinct_texts(frame: pd.DataFrame, cfg: Config) -> tuple[np.ndarray, pd.DataFrame]:
    """(`N` codes, the distinct rows of the `data.text` cells): `frame`'s text rows are `distinct.iloc[codes]`.
    Copies of a row that share its text (the feature game of `explain` scores many) are rendered and vectorised
    once."""
    columns = list(cfg.data.text)
    require_columns(frame, columns, "input data")
    seen: dict[tuple, int] = {}
    codes = np.array([seen.setdefault(row, len(seen)) for row in frame[columns].itertuples(index=False, name=None)],
                     dtype=np.int64)
    first = np.zeros(len(seen), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # each code's first row
    return codes, frame.iloc[first]


def _vectorizer(params: dict[str, Any]) -> TfidfVectorizer:
    return TfidfVectorizer(**{**params, "ngram_range": tuple(params["ngram_range"])}, dtype=np.float64)


class TextFeaturizer:
    """Word + char TF-IDF of rendered threads → `N×(Vw + Vc)` sparse float64 (word columns first)."""

    def __init__(self, vectorizers: dict[str, TfidfVectorizer], params: dict[str, dict[str, Any]]):
        self.vectorizers = vectorizers
        self.params = params

    @classmethod
    def fit(cls, texts: list[str], settings: ClassicalConfig, columns: list[str]) -> "TextFeaturizer":
        """Learn vocabularies and idf on the training threads (`columns` only names them in errors)."""
        caps = {"word": settings.word_max_features, "char": settings.char_max_features}
        params = {name: {**block, "min_df": settings.min_df, "max_features": caps[name]} for name, block in BLOCKS.items()}
        vectorizers = {}
        for name, block in params.items():
            vectorizer = _vectorizer(block)
            try:
                vectorizer.fit(texts)
            except ValueError:
                raise DataError(
                    f"column(s) {', '.join(map(repr, columns))}: no {name} n-gram occurs in {settings.min_df} training "
                    "threads; check the text columns or lower model.classical.min_df") from None
            vectorizers[name] = vectorizer
        return cls(vectorizers, params)

    @property
    def dim(self) -> int:
        return sum(len(v.vocabulary_) for v in self.vectorizers.values())

    def block_columns(self, name: str) -> slice:
        """The columns of block `name` ("word", "char") in `transform`'s output."""
        start = 0
        for block in BLOCKS:
            width = len(self.vectorizers[block].vocabulary_)
            if block == name:
                return slice(start, start + width)
            start += width
        raise KeyError(name)

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """`N×dim` sparse float64, each block L2-normalised."""
        blocks = [self.vectorizers[name].transform(texts) for name in BLOCKS]
        return sp.csr_matrix(sp.hstack(blocks, format="csr", dtype=np.float64))

    def transform_frame(self, frame: pd.DataFrame, cfg: Config) -> sp.csr_matrix:
        """`transform(render_frame(frame, cfg))`, each distinct text row computed once (`distinct_texts`)."""
        codes, distinct = distinct_texts(frame, cfg)
        return self.transform(render_frame(distinct, cfg))[codes]

    # ------------------------------------------------------------------ storage (no pickle)
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON: per block its parameters and terms in column order, arrays: `<block>_idf`)."""
        spec, arrays = {}, {}
        for name, vectorizer in self.vectorizers.items():
            vocabulary = vectorizer.vocabulary_
            spec[name] = {"params": self.params[name], "terms": sorted(vocabulary, key=vocabulary.__getitem__)}
            arrays[f"{name}_idf"] = np.ascontiguousarray(vectorizer.idf_, dtype=np.float64)
        return spec, arrays

    @classmethod
    def from_state(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TextFeaturizer":
        """Rebuild fitted vectorizers from vocabulary and idf: `transform` equals the original's exactly."""
        vectorizers, params = {}, {}
        for name in BLOCKS:
            vectorizer = _vectorizer(spec[name]["params"])
            vectorizer.vocabulary_ = {term: i for i, term in enumerate(spec[name]["terms"])}
            vectorizer.fixed_vocabulary_ = False  # as after fit(): the vocabulary was learned, not given
            vectorizer.idf_ = np.asarray(arrays[f"{name}_idf"], dtype=np.float64)
            vectorizers[name], params[name] = vectorizer, spec[name]["params"]
        return cls(vectorizers, params)
