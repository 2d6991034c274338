"""Quality benchmark: the three tasks of ../shared/benchmarks/TASKS.md × four fusions + two single-modality
baselines, default encoder (MiniLM-L6) fine-tuned. Writes benchmarks/results/quality.json and quality.md.

    .venv/bin/python benchmarks/quality.py [--tasks dnd_nodeal,cb_nosale,clothing_recommend]
        [--models concat,gate,moe,cross_attn,text_only,tab_only] [--max-train-rows N] [--epochs E]

A benchmark, not a test: hours on two CPU cores at full size; CI does not run it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import TASKS  # noqa: E402

import bsmfusion  # noqa: E402
from bsmfusion.config import config_from_dict  # noqa: E402
from bsmfusion.evaluation.metrics import classification_metrics  # noqa: E402
from bsmfusion.training.fit import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["concat", "gate", "moe", "cross_attn", "text_only", "tab_only"]


def run_one(task, model: str, args, work: Path) -> dict:
    train_df = task.train
    if args.max_train_rows and len(train_df) > args.max_train_rows:
        train_df = train_df.sample(n=args.max_train_rows, random_state=0).reset_index(drop=True)
    tab_only = model == "tab_only"
    cfg = config_from_dict(task.config(
        model,
        text={"max_chunks": args.max_chunks, "chunk_tokens": args.chunk_tokens, "pooling": "mean"},
        train={"epochs": args.tab_epochs if tab_only else args.epochs, "batch_size": 16 if not tab_only else 64,
               "lr": 5e-5, "head_lr": 1e-3 if not tab_only else 3e-3, "seed": 0, "patience": 3 if tab_only else 2,
               "checkpoint_every_steps": 10_000},
    ), source=f"{task.name}/{model}")
    started = time.perf_counter()
    result = train(cfg, train_df, task.val, work / f"{task.name}_{model}", progress=False)
    fit_seconds = time.perf_counter() - started
    predictor = bsmfusion.load(result.bundle_dir)
    started = time.perf_counter()
    scores = predictor.score_frame(task.test)
    predict_seconds = time.perf_counter() - started
    labels = predictor.bundle.preprocessor.encode_labels(task.test)
    metrics = classification_metrics(labels, scores.probs, predictor.threshold)
    return {
        "task": task.name, "model": model, "roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"],
        "f1": metrics["f1"], "accuracy": metrics["accuracy"], "threshold": predictor.threshold,
        "epochs": result.epochs_run, "train_rows": len(train_df), "fit_seconds": round(fit_seconds, 1),
        "predict_rows_per_s": round(len(task.test) / predict_seconds, 1),
        "text_weight_mean": float(scores.text_weight.mean()), "val_roc_auc": result.val_metrics["roc_auc"],
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| task | model | ROC-AUC | PR-AUC | F1@val-thr | accuracy | epochs | train rows | fit s | predict rows/s | mean text_weight |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['model']} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['f1']:.3f} | "
                     f"{r['accuracy']:.3f} | {r['epochs']} | {r['train_rows']:,} | {r['fit_seconds']:.0f} | "
                     f"{r['predict_rows_per_s']:.1f} | {r['text_weight_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tab-epochs", type=int, default=30)
    parser.add_argument("--max-chunks", type=int, default=4)
    parser.add_argument("--chunk-tokens", type=int, default=128)
    parser.add_argument("--work", default="/tmp/bsmfusion-quality")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "quality.json"
    rows = json.loads(out_json.read_text())["results"] if out_json.is_file() else []
    done = {(r["task"], r["model"]) for r in rows}
    for task_name in args.tasks.split(","):
        task = TASKS[task_name]()
        for model in args.models.split(","):
            if (task_name, model) in done:
                continue
            row = run_one(task, model, args, Path(args.work))
            rows.append(row)
            print(json.dumps(row), flush=True)
            out_json.write_text(json.dumps({"command": " ".join(sys.argv), "results": rows}, indent=2))
            (RESULTS / "quality.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
