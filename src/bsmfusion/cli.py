"""Command-line interface: `bsmfusion summary | train | evaluate | predict | export | serve | compare | split | demo`.

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
    from .errors import ConfigError
    from .models.kinds import is_neural

    if not is_neural(cfg.model.fusion):
        raise ConfigError(f"model.fusion '{cfg.model.fusion}' is a classical member, not a torch model: summary counts "
                          "torch parameters; pick a neural fusion with --fusion")
    cardinalities = [args.categories] * len(cfg.data.categorical)
    with torch.device("meta"):  # counts only: no memory, no random init
        model = build_model(cfg, numeric_dim=len(cfg.data.numeric), cardinalities=cardinalities, load_weights=False)
    summary = summarize(model.summary_parts(), model)
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(f"fusion: {cfg.model.fusion}")
        print(summary.to_table())


def _overrides(pairs: list[str] | None) -> dict:
    """`--set key.path=value` pairs; values are parsed as YAML (numbers, booleans, lists)."""
    import yaml

    from .errors import ConfigError

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set '{pair}' must look like section.key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .training.fit import train

    overrides = _overrides(args.set)
    if args.precision:
        overrides["train.precision"] = args.precision
    cfg = load_config(args.config, overrides)
    result = train(cfg, args.train, args.val, args.out, resume=args.resume, progress=not args.quiet)
    if result.bundle_dir is not None:
        metrics = result.val_metrics
        print(f"bundle: {result.bundle_dir}")
        print("validation: " + ", ".join(f"{k}={metrics[k]:.4f}" for k in ("roc_auc", "pr_auc", "f1", "accuracy") if k in metrics))
        if result.threshold is not None:
            print(f"threshold (max F1 on validation): {result.threshold:.4f}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from . import load
    from .evaluation.report import evaluate

    predictor = load(args.model, batch_size=args.batch_size, precision=args.precision)
    print(f"precision: {predictor.describe_precision()}", file=sys.stderr)
    metrics = evaluate(predictor, args.data, args.out)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, indent=2))
    print(f"report: {args.out}/report.md")


def cmd_predict(args: argparse.Namespace) -> None:
    from . import load

    predictor = load(args.model, batch_size=args.batch_size, engine=args.engine, quantized=args.int8,
                     precision=args.precision)
    if not args.quiet:
        print(f"precision: {predictor.describe_precision()}", file=sys.stderr)
    rows = predictor.predict_file(args.data, args.out, batch_rows=args.batch_rows, progress=not args.quiet)
    print(f"wrote {rows:,} rows to {args.out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .config import load_config
    from .training.compare import compare, leaderboard_markdown

    cfg = load_config(args.config, _overrides(args.set))
    models = args.models.split(",") if args.models else None
    rows = compare(cfg, args.train, args.val, args.test, args.out, models=models, epochs=args.epochs)
    print(leaderboard_markdown(rows))
    print(f"leaderboard: {args.out}/leaderboard.md, {args.out}/leaderboard.json")


def cmd_export(args: argparse.Namespace) -> None:
    from .inference.onnx_export import export_onnx

    path = export_onnx(args.model, quantize=args.quantize)
    print(f"wrote {path}")


def cmd_serve(args: argparse.Namespace) -> None:
    import os

    from .errors import ConfigError
    from .serving.app import serve

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty; export it first")
    serve(args.model, host=args.host, port=args.port, api_key=api_key, max_records=args.max_records,
          max_body_bytes=args.max_body_bytes, precision=args.precision)


def cmd_split(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data.groups import group_split
    from .data.io import read_table, table_format, write_table

    frame = read_table(args.data)
    parts = group_split(frame, args.group, test_frac=args.test_frac, val_frac=args.val_frac, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}[table_format(args.data)]
    for name, part in zip(("train", "val", "test"), parts):
        write_table(part, out / f"{name}{suffix}")
        print(f"{out / (name + suffix)}: {len(part):,} rows, {part[args.group].nunique():,} groups")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out_dir=args.out, train_rows=args.train_rows, epochs=args.epochs)


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

    p = sub.add_parser("train", help="fine-tune a model and write a bundle")
    p.add_argument("--config", required=True)
    p.add_argument("--train", required=True, help="training table (.csv, .parquet, .jsonl)")
    p.add_argument("--val", required=True, help="validation table: early stopping and the decision threshold")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT.work/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. model.fusion=gate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="overrides train.precision: auto (bf16 where the hardware computes it natively) | fp32 | bf16")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics, plots and a report on a labelled table")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="folder for metrics.json, PNG plots and report.md")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="default: the bundle's train.precision, resolved on this machine (the output says when it differs from the one its threshold was chosen under)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score a table, streaming, one output row per input row")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output table (.csv, .parquet, .jsonl)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per model batch")
    p.add_argument("--batch-rows", type=int, default=2048, help="rows read from the input at a time")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch", help="onnx needs 'bsmfusion export' first")
    p.add_argument("--int8", action="store_true", help="with --engine onnx: use the int8-quantised graph")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="default: the bundle's train.precision, resolved on this machine (the output says when it differs from the one its threshold was chosen under)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export the whole model to ONNX inside the bundle")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--quantize", choices=["int8"], help="also write a dynamically int8-quantised graph")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="HTTP scoring server (FastAPI + uvicorn)")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key-env", help="name of the environment variable holding the API key")
    p.add_argument("--max-records", type=int, default=256, help="records per request")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="default: the bundle's train.precision, resolved on this machine (the output says when it differs from the one its threshold was chosen under)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("compare", help="rank every fusion, both baselines and the classical members (minutes)")
    p.add_argument("--config", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", default="compare_out", help="folder for leaderboard.md/json and the bundles")
    p.add_argument("--models", help="comma-separated subset (default: every registered neural fusion, tfidf_lr and gbdt; "
                   "ensemble on request)")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs per model (early stopping applies)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("split", help="write group-disjoint train/val/test files (no buyer or seller in two of them)")
    p.add_argument("--data", required=True, help="the whole table (.csv, .parquet, .jsonl)")
    p.add_argument("--group", required=True, help="column naming who a row belongs to, e.g. seller_id")
    p.add_argument("--out", required=True, help="folder for train/val/test files in the input's format")
    p.add_argument("--test-frac", type=float, default=0.15, help="share of rows for test (default 0.15)")
    p.add_argument("--val-frac", type=float, default=0.15, help="share of rows for validation (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="shuffles the groups (default 0)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("demo", help="download real data, fine-tune, evaluate and score a few rows")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from .resources import quiet_hugging_face

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_hugging_face()  # after parsing: --help need not import transformers
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
