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

