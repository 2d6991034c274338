"""The tabular facts as one dense matrix for the classical members, from the fitted tabular preprocessing."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.tabular import TabularPreprocessor


def tab_matrix(tabular: TabularPreprocessor, frame: pd.DataFrame) -> np.ndarray:
    """`N×(numeric_dim + Σ cardinalities)` float64: the standardised numerics and missing indicators, then one
    one-hot block per categorical column over all its ids (missing, unknown, known values)."""
    numeric, categorical = tabular.transform(frame)
    n = len(frame)
    blocks = [numeric.astype(np.float64)]
    for j, cardinality in enumerate(tabular.cardinalities):
        onehot = np.zeros((n, cardinality), dtype=np.float64)
        onehot[np.arange(n), categorical[:, j]] = 1.0
        blocks.append(onehot)
    return np.hstack(blocks)



def tab_parts(tabular: TabularPreprocessor, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`tab_matrix` rows back to (the numeric block `N×numeric_dim`, categorical ids `N×len(categorical)`: each
    one-hot block's position, as `TabularPreprocessor.transform` gives them)."""
    d = tabular.numeric_dim
    codes = np.zeros((len(matrix), len(tabular.categorical)), dtype=np.int64)
    start = d
    for j, cardinality in enumerate(tabular.cardinalities):
        codes[:, j] = np.argmax(matrix[:, start:start + cardinality], axis=1)
        start += cardinality
    return matrix[:, :d], codes
