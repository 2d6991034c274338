"""Command-line interface: `bsmfusion summary | train | evaluate | predict | export | serve | compare | demo`.

User errors (`BsmFusionError`) print one line to stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .errors import BsmFusionError


def cmd_summary(args: argparse.Namespace) -> None:
    import torch

    from .config import load_config
    from .models import build_model
    from .models.summary import summarize

    overrides = {"model.fusion": args.fusion} if args.fusion else {}
    cfg = load_config(args.config, overrides)
    cardinalities = [args.categories] * len(cfg.data.categorical)
    with torch.device("meta"):  # counts only: no memory, no random init
        model = build_model(cfg, numeric_dim=len(cfg.data.numeric), cardinalities=cardinalities, load_weights=False)
    summary = summarize(model.summary_parts(), model)
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(f"fusion: {cfg.model.fusion}")
        print(summary.to_table())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsmfusion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="parameter counts per sub-network, as in the design's tables")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--fusion", help="override model.fusion")
    p.add_argument("--json", action="store_true", help='print {"modules": {name: count}, "total": N}')
    p.add_argument("--categories", type=int, default=10,
                   help="assumed distinct values per categorical column (the real count comes from training data)")
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.func
    try:
        handler(args)
    except BsmFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
