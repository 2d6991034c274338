"""Synthetic tables with a planted signal in the text, in the tabular features, or in their interaction."""
from __future__ import annotations

import numpy as np
import pandas as pd

FILLER = ["hello", "item", "price", "ship", "today", "thanks", "ok", "sure", "box", "color", "size", "when"]


def planted_frame(n: int, signal: str, seed: int) -> pd.DataFrame:
    """label = keyword in text (`text`), x > 0 (`tab`), or keyword XOR x > 0 (`interaction`)."""
    rng = np.random.default_rng(seed)
    keyword = rng.integers(0, 2, n).astype(bool)
    x = rng.normal(size=n)
    rows = []
    for i in range(n):
        words = list(rng.choice(FILLER, rng.integers(3, 8)))
        if keyword[i]:
            words.insert(int(rng.integers(0, len(words))), "refund")
        rows.append(f"BUYER: {' '.join(words)} <eos> SELLER: {' '.join(rng.choice(FILLER, 3))}")
    label = {"text": keyword, "tab": x > 0, "interaction": keyword ^ (x > 0)}[signal].astype(int)
    return pd.DataFrame({
        "id": np.arange(n), "dialogue": rows, "price": x, "ratio": rng.normal(size=n),
        "category": rng.choice(["a", "b"], n), "label": label,
    })
