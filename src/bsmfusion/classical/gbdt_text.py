"""The dialogue as gbdt's trees read it, from the TF-IDF features (`model.classical.gbdt_text`).

* `svd` — a TruncatedSVD of the word + char TF-IDF (`svd_components`, 64): dense `N×k`. Long, varied texts (product
  reviews) are summed up well by a few directions.
* `words` — the word 1–2-gram TF-IDF columns themselves, those at least `gbdt_min_data_in_leaf` training threads
  contain (a rarer column can never be split on): sparse `N×W`. Short dialogues turn on single phrases ("deal",
  "no thanks", "too low") that an SVD smears across its components; a tree splits on the phrase.

Both are functions of the fitted `TextFeaturizer`'s output alone, so the text/tabular split of `gbdt` is unchanged.
Stored as one array in the member's safetensors: `svd_components` (`k×Dt`) or `word_columns` (`W` column positions,
float64, exact for any vocabulary size).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


class SvdText:
    """`N×k` dense: the TF-IDF projected on `components` (`k×Dt`)."""

    name = "svd"

    def __init__(self, components: np.ndarray, explained_variance: float | None = None):
        self.components = np.ascontiguousarray(components, dtype=np.float64)
        self.explained_variance = explained_variance

    @classmethod
    def fit(cls, tfidf_train: sp.csr_matrix, components: int, seed: int) -> "SvdText":
        from sklearn.decomposition import TruncatedSVD

        k = max(1, min(components, tfidf_train.shape[1] - 1, tfidf_train.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed).fit(tfidf_train)
        return cls(svd.components_, float(svd.explained_variance_ratio_.sum()))

    def block(self, tfidf: sp.csr_matrix) -> np.ndarray:
        return np.asarray(tfidf @ self.components.T)

    def names(self) -> list[str]:
        return [f"svd_{i}" for i in range(len(self.components))]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"svd_components": self.components}

    def info(self) -> dict[str, Any]:
        return {"svd_components": len(self.components), "svd_explained_variance": self.explained_variance}


class WordText:
    """`N×W` sparse: the word-block TF-IDF columns at positions `columns`."""

    name = "words"

    def __init__(self, columns: np.ndarray):
        self.columns = np.asarray(columns, dtype=np.int64)

    @classmethod
    def fit(cls, word_block: sp.csr_matrix, min_rows: int, offset: int = 0) -> "WordText":
        """The columns of the training rows' word TF-IDF `word_block` that at least `min_rows` threads contain, as
        positions in the whole TF-IDF (the word block starts at column `offset`)."""
        rows_with = np.asarray((word_block != 0).sum(axis=0)).ravel()
        return cls(offset + np.flatnonzero(rows_with >= min_rows))

    def block(self, tfidf: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(tfidf[:, self.columns])

    def names(self) -> list[str]:  # by position: a term may hold characters LightGBM refuses in a feature name
        return [f"word_{j}" for j in range(len(self.columns))]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"word_columns": self.columns.astype(np.float64)}

    def info(self) -> dict[str, Any]:
        return {"word_columns_kept": len(self.columns)}


TextReader = SvdText | WordText


def reader_from_arrays(arrays: dict[str, np.ndarray]) -> TextReader:
    """The stored reader: `word_columns` present → `WordText`, else `SvdText` (bundles from before `gbdt_text`)."""
    if "word_columns" in arrays:
        return WordText(np.rint(arrays["word_columns"]).astype(np.int64))
    return SvdText(arrays["svd_components"])


def hstack(blocks: list) -> np.ndarray | sp.csr_matrix:
    """Columns side by side: dense float64 when every block is dense, else CSR (LightGBM reads either alike: a
    sparse zero is the value 0)."""
    if any(sp.issparse(b) for b in blocks):
        return sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr", dtype=np.float64)
    return np.hstack(blocks)


def dense_columns(block: np.ndarray | sp.csr_matrix, start: int) -> np.ndarray:
    """`block[:, start:]` as a dense array."""
    tail = block[:, start:]
    return tail.toarray() if sp.issparse(tail) else np.asarray(tail)
