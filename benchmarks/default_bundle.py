"""Train the default model (`model.fusion: ensemble` with every default: two fine-tuned MiniLM members + tfidf_lr +
gbdt) on one benchmark task's full training split, for the speed and re-scoring benchmarks that measure what a user
who keeps the defaults gets.

    .venv/bin/python benchmarks/default_bundle.py --task cb_nosale --out /tmp/bench/cb_default [--seed 0]

Prints the fit time and the CPU kind; writes nothing under the repository. The bundle is the same a user gets from
`bsmfusion train` with a config naming only the task's columns (quality numbers: benchmarks/quality.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import TASKS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--out", required=True, help="the bundle folder to write (replaced if present)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from bsmfusion.config import config_from_dict
    from bsmfusion.precision import cpu_capability
    from bsmfusion.workflows.train import train

    task = TASKS[args.task]()
    raw = task.config("ensemble", train={"seed": args.seed})
    cfg = config_from_dict(raw, source=f"{args.task} default")
    started = time.perf_counter()
    train(cfg, task.train, task.val, Path(args.out), progress=False)
    print(f"{args.task}: default bundle in {args.out}; fit {time.perf_counter() - started:.0f} s on "
          f"{cpu_capability()} ({len(task.train):,} training rows)")


if __name__ == "__main__":
    main()
