"""Time `bsmfusion compare` (frozen encoder, six models) on a benchmark task, embedding included.

    .venv/bin/python benchmarks/compare.py [--task dnd_nodeal]

Writes the task's splits to a temporary folder (the data stays in ../shared/data), runs the CLI, and records the
leaderboard and the wall time in benchmarks/results/compare_<task>.json; the .md is rendered from that JSON
(`--render` rewrites every compare_*.md without running anything).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import TASKS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def render_markdown(results: dict) -> str:
    """The record's leaderboard; runs stored before text_share existed show their 'mean text_weight' instead."""
    share = "text_share_mean" in results["leaderboard"][0]
    lines = [f"Command: `{results['command']}` — wall time {results['wall_seconds']:.0f} s including embedding", "",
             "| rank | model | test ROC-AUC | test PR-AUC | F1@val-thr | accuracy | val ROC-AUC | epochs | fit s | "
             f"mean {'text_share' if share else 'text_weight'} |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results["leaderboard"], 1):
        lines.append(f"| {i} | {r['model']} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['f1']:.3f} | "
                     f"{r['accuracy']:.3f} | {r['val_roc_auc']:.3f} | {r['epochs']} | {r['fit_seconds']:.0f} | "
                     f"{r['text_share_mean' if share else 'text_weight_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="dnd_nodeal")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--render", action="store_true", help="only rewrite every compare_*.md from its JSON")
    args = parser.parse_args()
    if args.render:
        for path in sorted(RESULTS.glob("compare_*.json")):
            path.with_suffix(".md").write_text(render_markdown(json.loads(path.read_text())))
        return
    from bsmfusion.cli import main as cli

    task = TASKS[args.task]()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("train", "val", "test"):
            getattr(task, name).to_parquet(tmp / f"{name}.parquet", index=False)
        cfg = task.config("concat", text={"max_chunks": 4, "chunk_tokens": 128, "pooling": "mean"},
                          train={"batch_size": 64, "head_lr": 2e-3, "seed": 0, "embedding_cache": str(tmp / "cache")})
        (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        started = time.perf_counter()
        code = cli(["compare", "--config", str(tmp / "cfg.yaml"), "--train", str(tmp / "train.parquet"),
                    "--val", str(tmp / "val.parquet"), "--test", str(tmp / "test.parquet"), "--out", str(tmp / "out"),
                    "--epochs", str(args.epochs)])
        wall = time.perf_counter() - started
        if code:
            raise SystemExit(code)
        board = json.loads((tmp / "out" / "leaderboard.json").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    results = {"command": command, "wall_seconds": wall, "leaderboard": board}
    (RESULTS / f"compare_{args.task}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"compare_{args.task}.md").write_text(render_markdown(results))
    print(f"compare on {args.task}: {wall:.0f} s including embedding")


if __name__ == "__main__":
    main()
