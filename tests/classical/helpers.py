"""Small configs and planted tables for the classical members (seconds per fit)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import tiny_config
from tests.synthetic import planted_frame

# fewer boosting rounds than the default 2,000: the planted tasks converge in well under 200
FAST_CLASSICAL = {"gbdt_max_rounds": 200, "gbdt_early_stopping_rounds": 20}


def classical_config(kind: str, **model):
    """tiny_config with data.id and fast LightGBM settings; `model` overrides model keys."""
    cfg = tiny_config(kind, data={"id": "id"})
    for key, value in FAST_CLASSICAL.items():
        setattr(cfg.model.classical, key, value)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def planted(n: int, signal: str, seed: int) -> pd.DataFrame:
    """planted_frame plus `nonlinear`: label = |price| > 0.8 (a tabular signal no linear model can use)."""
    if signal != "nonlinear":
        return planted_frame(n, signal, seed)
    frame = planted_frame(n, "tab", seed)
    frame["label"] = (np.abs(frame["price"]) > 0.8).astype(int)
    return frame
