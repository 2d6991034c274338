"""Time `bsmfusion compare` (frozen encoder, six models) on a benchmark task, embedding included.

    .venv/bin/python benchmarks/compare.py [--task dnd_nodeal]

Writes the task's splits to a temporary folder (the data stays in ../shared/data), runs the CLI, and records the
leaderboard and the wall time in benchmarks/results/compare_<task>.json / .md.
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

from bsmfusion.cli import main as cli  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="dnd_nodeal")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
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
        table = (tmp / "out" / "leaderboard.md").read_text()
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    (RESULTS / f"compare_{args.task}.json").write_text(json.dumps({"command": command, "wall_seconds": wall, "leaderboard": board}, indent=2))
    (RESULTS / f"compare_{args.task}.md").write_text(f"Command: `{command}` — wall time {wall:.0f} s including embedding\n\n{table}")
    print(f"compare on {args.task}: {wall:.0f} s including embedding")


if __name__ == "__main__":
    main()
