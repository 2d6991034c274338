"""`bsmfusion compare`: rank every fusion and both single-modality baselines on one dataset in minutes.

Uses the frozen-encoder path: thread vectors are computed once per split (and cached), then each model trains
only its tabular encoder, fusion and head. The leaderboard is printed and written as markdown and JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..config import Config
from ..data.io import read_table
from ..evaluation.metrics import classification_metrics
from ..inference.scoring import score_table
from ..models.fusion import fusion_class
from .fit import embedding_cache_dir, train
from .frozen import cached_thread_vectors

MODELS = ["concat", "gate", "moe", "cross_attn", "text_only", "tab_only"]


def compare(cfg: Config, train_data, val_data, test_data, out_dir: str | Path, *, models: list[str] | None = None,
            epochs: int = 20, progress: bool = False) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [d if isinstance(d, pd.DataFrame) else read_table(d) for d in (train_data, val_data, test_data)]
    rows = []
    for name in models or MODELS:
        fusion_class(name)  # unknown names fail before any training starts
        model_cfg = cfg.model_copy(deep=True)
        model_cfg.model.fusion = name
        model_cfg.train.freeze_encoder = True
        model_cfg.train.epochs = epochs
        model_cfg.train.patience = max(model_cfg.train.patience, 4)
        model_cfg.train.lr = model_cfg.train.head_lr
        started = time.perf_counter()
        result = train(model_cfg, frames[0], frames[1], out_dir / "models" / name, progress=progress)
        fit_seconds = time.perf_counter() - started
        from ..bundle import load_bundle
        from ..data.dataset import Collator

        bundle = load_bundle(result.bundle_dir)
        test_table = bundle.preprocessor.encode(frames[2])
        collator = Collator(bundle.preprocessor.text.pad_token_id, model_cfg.text.max_chunks, model_cfg.text.chunk_tokens)
        if bundle.model.text_subnetwork is not None:
            test_table.thread_vectors = cached_thread_vectors(bundle.model.text_subnetwork, test_table, collator,
                                                              embedding_cache_dir(model_cfg))
        scores = score_table(bundle.model, test_table, collator, batch_size=model_cfg.train.eval_batch_size)
        metrics = classification_metrics(test_table.labels, scores.probs, bundle.threshold)
        rows.append({"model": name, "roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"], "f1": metrics["f1"],
                     "accuracy": metrics["accuracy"], "val_roc_auc": result.val_metrics["roc_auc"],
                     "epochs": result.epochs_run, "fit_seconds": round(fit_seconds, 1),
                     "text_weight_mean": float(scores.text_weight.mean())})
    rows.sort(key=lambda r: -r["roc_auc"])
    (out_dir / "leaderboard.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "leaderboard.md").write_text(leaderboard_markdown(rows))
    return rows


def leaderboard_markdown(rows: list[dict]) -> str:
    lines = ["| rank | model | test ROC-AUC | test PR-AUC | F1@val-thr | accuracy | val ROC-AUC | epochs | fit s | mean text_weight |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['model']} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['f1']:.3f} | {r['accuracy']:.3f} | "
                     f"{r['val_roc_auc']:.3f} | {r['epochs']} | {r['fit_seconds']:.0f} | {r['text_weight_mean']:.2f} |")
    return "\n".join(lines) + "\n"
