"""Shared fixtures: a tiny randomly initialised BERT (2 layers, hidden 32) over the bundled MiniLM vocabulary."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bsmfusion.config import Config, config_from_dict

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512,
}


def tiny_config(fusion: str = "concat", **sections) -> Config:
    """A config using the tiny BERT; `sections` override whole sections' keys, e.g. text={"max_chunks": 2}."""
    raw = {
        "data": {"text": "dialogue", "numeric": ["price", "ratio"], "categorical": ["category"], "label": "label"},
        "text": {"encoder": "minilm", "encoder_config": TINY_BERT, "max_chunks": 3, "chunk_tokens": 16},
        "model": {"fusion": fusion, "hidden_dim": 8, "num_heads": 2, "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "seed": 0},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture(scope="session")
def tokenizer():
    from bsmfusion.data.text import load_tokenizer
    from bsmfusion.resources import minilm_path

    return load_tokenizer(minilm_path())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def make_frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A small table with dialogue, two numerics (one with NaN), one categorical and a binary label."""
    rng = np.random.default_rng(seed)
    words = ["refund", "shipping", "broken", "thanks", "price", "offer", "deal", "late", "great", "box"]
    rows = []
    for i in range(n):
        turns = rng.integers(1, 6)
        dialogue = " <eos> ".join(
            f"{'BUYER' if t % 2 == 0 else 'SELLER'}: " + " ".join(rng.choice(words, rng.integers(2, 12)))
            for t in range(turns)
        )
        rows.append({
            "id": f"r{i}", "dialogue": dialogue, "price": float(rng.normal(100, 30)) if i % 7 else np.nan,
            "ratio": float(rng.uniform()), "category": rng.choice(["a", "b", "c"]), "label": int(rng.integers(0, 2)),
        })
    return pd.DataFrame(rows)
