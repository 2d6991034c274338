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
        "train": {"epochs": 1, "batch_size": 8, "seed": 0, "precision": "fp32"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


# bf16 keeps 8 significant bits: one rounding moves a value by up to 2^-8 relative (0.4%). Through the tiny
# models here (logits of size ≲ 2, a handful of rounded layers) a logit moves by ≲ 4 · 2^-8 · 2 ≈ 0.03, and a
# probability by at most a quarter of that (the sigmoid's slope is ≤ 1/4): 0.008, rounded up to 0.01.
BF16_PROB_TOL = 0.01
FP32_PROB_TOL = 1e-5


def pytest_report_header(config):
    from bsmfusion.precision import cpu_capability, resolve_precision

    return (f"bsmfusion: CPU capability {cpu_capability()}; precision {resolve_precision('auto').describe()}; "
            "tests pin fp32 and repeat numeric comparisons in bf16 where it is native")


def _precision_params():
    from bsmfusion.precision import fast_bf16

    native, reason = fast_bf16("cpu")
    skip = pytest.mark.skipif(not native, reason=f"bf16 is emulated on this CPU ({reason}): too slow to test")
    return [pytest.param("fp32", id="fp32"), pytest.param("bf16", id="bf16", marks=skip)]


PRECISIONS = _precision_params()


def prob_tolerance(precision: str) -> float:
    """The probability tolerance a comparison between two code paths gets in `precision`."""
    return BF16_PROB_TOL if precision == "bf16" else FP32_PROB_TOL


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
