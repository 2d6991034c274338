"""Command-line interface: `bsmfusion summary | train | evaluate | predict | export | serve | compare | split | demo`.

Signed bundles: `bsmfusion keygen | sign | verify`, `--sign-key` and `--verify-key` (docs/security.md).

User errors (`BsmFusionError`) print one line to stderr and exit with status 2. Heavy modules (torch, Lightning,
transformers) are imported inside the commands, after the arguments and input paths are checked, so `--help`,
`--version` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .version import __version__
from .errors import BsmFusionError, OptionError

EXAMPLES = {
    "summary": "bsmfusion summary --config my.yaml --fusion gate",
    "train": "bsmfusion train --config my.yaml --train train.csv --val val.csv --out model/ --set model.fusion=gate\n\n"
             "Checkpoints go to OUT.work/ (next to OUT) so --resume can continue after a crash; the folder is removed\n"
             "when training succeeds.",
    "evaluate": "bsmfusion evaluate --model model/ --data test.csv --out report/",
    "predict": "bsmfusion predict --model model/ --data new.parquet --out scores.csv --strict",
    "explain": "bsmfusion explain --model model/ --data flagged.csv --out why/ --rows 50\n\n"
               "Writes why/explanations.jsonl (per row: id, score, decision, text/tab/baseline, each message's and\n"
               "each tabular column's share of them) and why/index.html linking one page per row (docs/explain.md).",
    "export": "bsmfusion export --model model/ --format onnx --quantize int8",
    "serve": "bsmfusion serve --model model/ --port 8080 --api-key-env BSM_KEY --decision review_budget=0.05\n"
             "  curl -s localhost:8080/v1/predict -H \"Authorization: Bearer $BSM_KEY\" \\\n"
             "       -d '{\"records\": [{\"dialogue\": \"BUYER: still available?\", \"list_price\": 45, ...}]}'\n\n"
             "The model flags the top 5% of the validation scores (a threshold chosen on the validation rows stored\n"
             "in the bundle). Endpoints (docs/http-api.md has the bodies in full):\n"
             "  POST /v1/predict  one record, a list, or {\"records\": [...]} with the config's text, numeric and\n"
             "                    categorical columns (and data.id) -> {\"results\": [{\"id\", \"probabilities\",\n"
             "                    \"label\", \"text_contribution\", \"tab_contribution\", \"baseline\", \"text_share\",\n"
             "                    \"error\"}]} (the columns of 'bsmfusion predict --help', same units and signs)\n"
             "                    in request order; a record that cannot be scored gets its reason in \"error\"\n"
             "  POST /v1/explain  the same records -> per record, each message's and each tabular column's\n"
             "                    share of text_contribution / tab_contribution (docs/explain.md)\n"
             "  GET  /v1/model    fusion, labels and the positive class (and why), decision and threshold\n"
             "                    (bundle or override), calibration, precision, chunk_cache (hits, encoded\n"
             "                    chunks), validation metrics, config\n"
             "  GET  /healthz     liveness; no key. /docs, /redoc, /openapi.json: no key\n"
             "Auth: with --api-key-env, /v1/* need 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (else 401).\n"
             "Status: 200 (per-record errors inside), 401, 413 (body over --max-body-bytes or more records than\n"
             "--max-records), 422 (invalid JSON or body shape, no records, a record not an object, a number\n"
             "that is not finite: NaN, Infinity, 1e999), 500. --verify-key: serve only a bundle that key signed.",
    "compare": "bsmfusion compare --config my.yaml --train train.csv --val val.csv --test test.csv --out cmp/",
    "split": "bsmfusion split --data all.csv --group seller_id --out splits/",
    "demo": "bsmfusion demo --out demo_out --train-rows 2000 --epochs 2",
    "keygen": "bsmfusion keygen --out keys/2025-q3\n"
              "  bsmfusion train ... --out model/ --sign-key keys/2025-q3/private.pem\n"
              "  bsmfusion predict --model model/ ... --verify-key keys/2025-q3/public.pem\n\n"
              "Keep private.pem where bundles are built (a secret store or this 0600 file); give public.pem to every\n"
              "machine that scores. Rotation: docs/security.md.",
    "sign": "bsmfusion sign --model model/ --sign-key keys/new/private.pem --verify-key keys/old/public.pem\n\n"
            "Signs a bundle as it is, after checking its manifest and its current signature (by the old key with\n"
            "--verify-key, else by the sign key itself; an unsigned bundle is signed as it is).",
    "verify": "bsmfusion verify --model model/ --verify-key keys/2025-q3/public.pem\n\n"
              "Exit status 0: every file matches the closed manifest (and the signature holds, with a verify key);\n"
              "1: the bundle fails the check, with the reason; 2: a usage error (no such folder, not a key).",
}
INPUT_FILES = ("config", "train", "val", "test", "data")  # options naming a file that must exist


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends each option's default to its help (unless it has none worth showing) and keeps the examples'
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.required or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def check_inputs(args: argparse.Namespace) -> None:
    """Fail fast, before any heavy import: input files exist, --model is a bundle folder, train's --out is free."""
    from pathlib import Path

    from .errors import BundleError, DataError

    for name in INPUT_FILES:
        value = getattr(args, name, None)
        if name == "data" and getattr(args, "ray", None) is not None:
            continue  # --ray reads folders, globs and URIs: inference.ray_predict.resolve_inputs checks them
        if value is not None and not Path(value).is_file():
            raise DataError(f"--{name}: file '{value}' does not exist; check the path")
    model = getattr(args, "model", None)
    if model is not None and args.command != "verify" and not (Path(model) / "manifest.json").is_file():
        what = "does not exist" if not Path(model).exists() else "is not a bsmfusion bundle (no manifest.json)"
        raise BundleError(f"--model: '{model}' {what}; pass the folder written by 'bsmfusion train --out'")
    if args.command == "train":
        from .folders import check_out_folder, check_work_folder

        check_out_folder(args.out, args.overwrite, "--overwrite")
        check_work_folder(args.out, args.resume, args.overwrite, ("--resume", "--overwrite"))
    if args.command == "predict" and args.ray is None:
        from .folders import check_out_file

        check_out_file(args.out, args.overwrite, "--overwrite")


def cmd_summary(args: argparse.Namespace) -> None:
    from .config import load_config

    overrides = {"model.fusion": args.fusion} if args.fusion else {}
    cfg = load_config(args.config, overrides, overrides_name="--fusion")
    import torch

    from .models import build_model
    from .models.summary import summarize

    from .errors import ConfigError
    from .kinds import is_neural

    if cfg.model.fusion == "ensemble":  # the only torch model inside it (× model.ensemble.neural_seeds)
        settings = cfg.model.ensemble
        copies = len(settings.neural_member_names)
        if not copies:
            raise ConfigError(f"model.ensemble.members ({', '.join(settings.members)}) has no neural member, so this "
                              "ensemble holds no torch model to count; pick a neural fusion with --fusion")
        cfg.model.fusion = settings.neural
        print(f"model.fusion is ensemble with {copies} neural member(s): counting one ({cfg.model.fusion})",
              file=sys.stderr)  # stdout stays the table / the JSON
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
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set '{pair}': the value is not valid YAML ({str(err).splitlines()[0]}); quote it") from None
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config

    overrides = _overrides(args.set)
    if args.precision:
        overrides["train.precision"] = args.precision
    cfg = load_config(args.config, overrides)  # config errors before Lightning is imported
    if args.overwrite and not args.resume:
        from .folders import discard_work_folder

        discard_work_folder(args.out)  # check_inputs refused it without --overwrite
    from .workflows.train import train

    try:
        result = train(cfg, args.train, args.val, args.out, resume=args.resume, progress=not args.quiet,
                       log_every=args.log_every, sign_key=args.sign_key)
    except BaseException:  # interrupted or failed: say where the checkpoints wait for --resume
        from pathlib import Path

        work = Path(args.out).with_name(Path(args.out).name + ".work")
        # a neural model's own checkpoints, or an ensemble's neural members' (ensemble.train.train_ensemble)
        members = sorted((work / "members").glob("*.work"))
        kept = [str(w) for w in (work, *members) if (w / "last" / "last.ckpt").is_file()]
        if kept:
            print(f"checkpoints kept in {', '.join(kept)}; rerun the same command with --resume to continue",
                  file=sys.stderr)
        raise
    if result.work_dir is not None:
        print(f"working folder kept: {result.work_dir} (rank fingerprints; remove it when done)")
    if result.bundle_dir is not None:
        metrics = result.val_metrics
        print(f"bundle: {result.bundle_dir}")
        print(f"validation ({_fitted_on_validation(cfg)}: optimistic; 'bsmfusion evaluate' on a test table for an "
              "unbiased estimate): " + ", ".join(f"{k}={metrics[k]:.4f}" for k in ("roc_auc", "pr_auc", "f1", "accuracy")
                                                if k in metrics))
        if result.threshold is not None:
            print(_decision_line(result.bundle_dir, cfg, result.threshold))
        _print_positive_class(cfg, result.bundle_dir)
        _print_signature(result.bundle_dir)


def _fitted_on_validation(cfg) -> str:
    """What the validation rows chose for this kind of model, for the summary's caveat."""
    from .kinds import CLASSICAL, ENSEMBLE, get_kind

    family = get_kind(cfg.model.fusion).family
    if family == ENSEMBLE:
        return "fitted on these rows: member weights, calibration, threshold"
    if family == CLASSICAL and not cfg.model.classical.cv_folds:
        return "fitted on these rows: C / boosting rounds, calibration, threshold"
    if family == CLASSICAL:
        return "fitted on these rows: calibration, threshold"
    return "fitted on these rows: early stopping, calibration, threshold"


def _decision_line(bundle_dir, cfg, threshold: float) -> str:
    """The summary's threshold line: the decision the bundle holds (max_f1 when train.decision was unreachable),
    what it flags on validation, and for a review budget what a budget is (a cut, not a cap)."""
    from pathlib import Path

    decision = json.loads((Path(bundle_dir) / "meta.json").read_text(encoding="utf-8")).get("decision") or {}
    line = f"decision: {decision.get('description') or f'{cfg.train.policy.describe()} → threshold {threshold:.4f}'}"
    flagged = (decision.get("validation") or {}).get("flagged_fraction")
    if flagged is not None:
        line += f", flags {flagged:.1%} of the validation rows"
    if decision.get("unreachable"):
        line += "; train.decision was unreachable, so max_f1 stands: choose another with --decision at scoring time"
    elif cfg.train.policy.name == "review_budget":
        line += ("; a budget is a cut fixed on the validation scores, not a cap: the share flagged on new rows "
                 "follows their scores and can differ")
    return line


def _print_positive_class(cfg, folder) -> None:
    """Say which class the metrics and the threshold are about (binary), from the bundle just written."""
    from pathlib import Path

    from .data.labels import positive_class_line, typed_labels

    meta = json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
    names = list(meta["label_names"])
    line = positive_class_line(cfg, names, typed_labels(names, meta.get("label_type")))
    if line:
        print(line)


def _print_signature(folder) -> None:
    """Say which key signed a bundle just written, when one did."""
    from .manifest import read_signature

    record = read_signature(folder)
    if record:
        print(f"signed by key {record['key_id']} at {record['signed_at']}")


def _add_decision_options(p: argparse.ArgumentParser) -> None:
    """--decision / --threshold: replace the bundle's decision policy (see bsmfusion.decision; not imported here,
    so --help stays fast)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--decision", metavar="POLICY", help="replace the bundle's train.decision: max_f1 | expected_f1 "
                       "| fixed=T | precision_at_least=P | recall_at_least=R | review_budget=F | costs=FP,FN (or a "
                       "YAML mapping); searched policies use the validation scores stored in the bundle")
    group.add_argument("--threshold", type=float, metavar="T", help="shorthand for --decision fixed=T")


def _at_least_zero(unit: str, meaning_of_zero: str):
    """An argparse type: a finite number >= 0, else a one-line error naming `unit` and what 0 means."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"'{text}' is not {unit} >= 0 ({meaning_of_zero})")
        return value
    return parse


_seconds = _at_least_zero("a number of seconds", "0 = a line at every update")  # --log-every


def _add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true",
                   help="compile the BERT backbone with TorchInductor before scoring (torch engine; ~30 s for "
                        "MiniLM on 2 cores, then 1.4-1.5x faster bf16 scoring on AMX CPUs; needs a C++ compiler, "
                        "falls back to eager and says why)")


def _add_verify_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify-key", metavar="PUBLIC_PEM",
                   help="refuse the bundle unless this Ed25519 public key signed it as it is now (unsigned, another "
                        "key's or changed after signing: refused); default: $BSMFUSION_VERIFY_KEY (a path or PEM "
                        "text) when set, else the signature is not checked and that is said once (docs/security.md)")


def _add_sign_key(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--sign-key", metavar="PRIVATE_PEM",
                   help=f"sign {what} with this Ed25519 private key ('bsmfusion keygen'); default: $BSMFUSION_SIGN_KEY "
                        "(a path or PEM text) when set, else unsigned")


def _add_log_every(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-every", type=_seconds, default=30.0, metavar="SECONDS",
                   help="when stderr is not a terminal (nohup, CI, SLURM), print one progress line every SECONDS: "
                        "done/total, rate, ETA (train: also the epoch and the last validation metric); a terminal "
                        "gets a live bar")


# The flag of each `ScoringOptions` field (and of `TrainRun.sign_key`): library errors name the field
# (`errors.OptionError`), the CLI its flag.
OPTION_FLAGS = {"batch_size": "--batch-size", "device": "--device", "precision": "--precision", "engine": "--engine",
                "quantized": "--int8", "chunk_cache_mb": "--chunk-cache-mb", "compile": "--compile",
                "decision": "--decision", "threshold": "--threshold", "verify_key": "--verify-key",
                "sign_key": "--sign-key"}


def _scoring_options(args: argparse.Namespace):
    """The `ScoringOptions` a scoring command's flags ask for (fields whose flag the command lacks keep defaults)."""
    from dataclasses import fields

    from .scoring.options import ScoringOptions

    given = {}
    for field in fields(ScoringOptions):
        attribute = OPTION_FLAGS[field.name].removeprefix("--").replace("-", "_")  # --int8 → args.int8
        if hasattr(args, attribute):
            given[field.name] = getattr(args, attribute)
    return ScoringOptions(**given)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .api import load
    from .evaluation.report import evaluate

    predictor = load(args.model, _scoring_options(args))
    if not args.quiet:
        print(f"precision: {predictor.describe_precision()}", file=sys.stderr)
        print(predictor.decision.summary(), file=sys.stderr)
    metrics = evaluate(predictor, args.data, args.out, progress=not args.quiet, log_every=args.log_every)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, indent=2))
    print(f"report: {args.out}/report.md")


def cmd_predict(args: argparse.Namespace) -> None:
    if args.ray is not None:
        return cmd_predict_ray(args)
    from .api import load

    predictor = load(args.model, _scoring_options(args))
    if not args.quiet:
        print(f"precision: {predictor.describe_precision()}", file=sys.stderr)
        if args.chunk_cache_mb:
            print(f"chunk cache: {predictor.chunk_cache_info()['description']}", file=sys.stderr)
        print(predictor.decision.summary(), file=sys.stderr)
    explain = None
    if args.explain:
        from .explain.attribution import ExplainOptions

        explain = ExplainOptions()
    summary = predictor.predict_file(args.data, args.out, batch_rows=args.batch_rows, progress=not args.quiet,
                                     log_every=args.log_every, explain=explain)
    print(f"wrote {summary.rows:,} rows to {args.out}; {summary.failed:,} with errors"
          + (" (see the 'error' column)" if summary.failed else ""))
    if args.strict and summary.failed:
        from .errors import DataError

        raise DataError(f"--strict: {summary.failed:,} of {summary.rows:,} rows could not be scored; their reasons are "
                        f"in the 'error' column of {args.out}")


def cmd_explain(args: argparse.Namespace) -> None:
    """`explain`: which messages and which facts moved each row's score, as JSONL and HTML pages."""
    from .api import load
    from .data.io import iter_table
    from .explain.attribution import ExplainOptions
    from .explain.page import write_report
    from .folders import check_out_folder

    check_out_folder(args.out, args.overwrite, "--overwrite")
    options = ExplainOptions(method=args.method, exact_max=args.exact_max, permutations=args.permutations,
                             seed=args.seed)
    predictor = load(args.model, _scoring_options(args))
    frame = next(iter_table(args.data, args.rows), None)
    if frame is None or not len(frame):
        raise OptionError(f"--data {args.data} holds no rows; give a table with at least one row")
    records = predictor.explain_records(frame.head(args.rows), options)
    id_column = predictor.cfg.data.id if predictor.cfg.data.id in frame.columns else "row"
    write_report(records, args.out, id_column)
    failed = sum(1 for r in records if r.get("error"))
    print(f"wrote {len(records):,} explanations to {args.out}/explanations.jsonl and {args.out}/index.html"
          + (f"; {failed:,} rows could not be scored (see 'error')" if failed else ""))


def cmd_predict_ray(args: argparse.Namespace) -> None:
    """`predict --ray [ADDRESS]`: Ray Data over an actor pool (inference.ray_predict); --out is a Parquet folder."""
    import logging

    from .errors import ConfigError, DataError
    from .folders import check_out_folder
    from .inference.ray_predict import (bundle_info, ray_predict, require_ray, resolve_inputs, user_error,
                                        write_predictions)

    if "://" not in args.out:
        check_out_folder(args.out, args.overwrite, "--overwrite")  # before Ray starts
    if "://" not in args.data:
        resolve_inputs(args.data)  # a missing path or mixed formats: one line, before Ray starts
    if args.engine == "onnx" and args.ray_gpus_per_actor:
        raise ConfigError("--ray-gpus-per-actor needs --engine torch (the ONNX engine runs on CPU)")
    options = _scoring_options(args)  # a bad option: one line, before Ray starts
    from .inference.predictor import verify_key_of

    info = bundle_info(args.model, options.decision, options.threshold, verify_key_of(options))  # the signature too
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        address = args.ray or None  # `--ray` alone: a local Ray on this machine
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=not args.quiet)
        except ConnectionError as err:
            raise ConfigError(f"--ray {args.ray}: cannot reach a Ray cluster ({str(err).splitlines()[0]}); start one "
                              "with 'ray start --head', or pass --ray alone for a local Ray") from None
        started = True
    from ray.data import DataContext

    context = DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = not args.quiet
    if not args.quiet:
        where = "a local Ray" if started and not args.ray else f"the Ray cluster ({args.ray or 'already connected'})"
        pool = f"{args.ray_actors} actors" if args.ray_actors else "an autoscaling actor pool"
        gpus = f", {args.ray_gpus_per_actor:g} GPU(s) each" if args.ray_gpus_per_actor else ""
        precision = args.precision or "the bundle's train.precision"
        print(f"scoring on {where}: {pool}{gpus}; precision per actor: {precision}", file=sys.stderr)
        print(info.decision.summary(), file=sys.stderr)
    try:
        scores = ray_predict(args.data, args.model, options, actors=args.ray_actors,
                             gpus_per_actor=args.ray_gpus_per_actor, batch_rows=args.batch_rows)
        rows, failed = write_predictions(scores, args.out, overwrite=args.overwrite, overwrite_flag="--overwrite")
    except Exception as err:  # a bsmfusion error inside a Ray task arrives wrapped: print its one line
        cause = user_error(err)
        if cause is None:
            raise
        raise cause from None
    finally:
        context.enable_progress_bars = bars
        if started:
            ray.shutdown()
    print(f"wrote {rows:,} rows to {args.out} (Parquet folder); {failed:,} with errors"
          + (" (see the 'error' column)" if failed else ""))
    if args.strict and failed:
        raise DataError(f"--strict: {failed:,} of {rows:,} rows could not be scored; their reasons are in the 'error' "
                        f"column of {args.out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .config import load_config

    cfg = load_config(args.config, _overrides(args.set))
    from .workflows.compare import compare, leaderboard_markdown

    models = args.models.split(",") if args.models else None
    rows = compare(cfg, args.train, args.val, args.test, args.out, models=models, epochs=args.epochs, progress=True)
    print(leaderboard_markdown(rows))
    print(f"leaderboard: {args.out}/leaderboard.md, {args.out}/leaderboard.json")


def cmd_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .inference.onnx_export import export_onnx

    def size(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    before = size(Path(args.model))
    for path in export_onnx(args.model, quantize=args.quantize, sign_key=args.sign_key, verify_key=args.verify_key):
        print(f"wrote {path} ({_megabytes(path.stat().st_size)})")
    print(f"bundle {args.model}: {_megabytes(before)} → {_megabytes(size(Path(args.model)))}")
    _print_signature(args.model)


def cmd_keygen(args: argparse.Namespace) -> None:
    from .signing import generate

    private, public, key_id = generate(args.out)
    print(f"key {key_id}: private key {private} (mode 0600: keep it where bundles are built), public key {public} "
          "(give it to every machine that scores)")


def cmd_sign(args: argparse.Namespace) -> None:
    from .bundle import private_key, public_key
    from .manifest import sign_bundle

    key = private_key(args.sign_key, env=True)
    if key is None:
        raise OptionError("sign needs a private key: pass {sign_key} or set BSMFUSION_SIGN_KEY ('bsmfusion keygen' "
                          "makes one)")
    record = sign_bundle(args.model, key, public_key(args.verify_key, env=True))
    print(f"signed bundle {args.model} with key {record['key_id']} at {record['signed_at']}")


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 with one OK line; 1 when the bundle fails (the reason on stderr); 2 for usage errors."""
    from pathlib import Path

    from .bundle import public_key
    from .errors import BundleError
    from .manifest import check_bundle

    if not Path(args.model).is_dir():
        raise BundleError(f"--model: '{args.model}' does not exist; pass a bundle folder")
    key = public_key(args.verify_key, env=True)
    try:
        checked = check_bundle(args.model, key)
    except BundleError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    print(f"OK: bundle {args.model}: {checked.describe()}")
    return 0


_cache_megabytes = _at_least_zero("a size in MB", "0 turns the chunk cache off")  # --chunk-cache-mb


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def cmd_serve(args: argparse.Namespace) -> None:
    import os

    from .errors import ConfigError
    from .serving.app import serve

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is unset or empty; export it first")
    serve(args.model, _scoring_options(args), host=args.host, port=args.port, api_key=api_key,
          max_records=args.max_records, max_body_bytes=args.max_body_bytes)


def cmd_split(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data.groups import group_split
    from .data.io import read_table, table_format, write_table

    from .folders import check_out_file

    out = Path(args.out)
    suffix = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}[table_format(args.data)]
    for name in ("train", "val", "test"):  # before reading the table: nothing is replaced unasked
        check_out_file(out / f"{name}{suffix}", args.overwrite, "--overwrite")
    frame = read_table(args.data)
    parts = group_split(frame, args.group, test_frac=args.test_frac, val_frac=args.val_frac, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "val", "test"), parts):
        write_table(part, out / f"{name}{suffix}")
        print(f"{out / (name + suffix)}: {len(part):,} rows, {part[args.group].nunique():,} groups")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out_dir=args.out, train_rows=args.train_rows, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsmfusion", description=__doc__.splitlines()[0],
                                     epilog="'bsmfusion VERB --help' shows each verb's options, defaults and an example")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("summary", help="parameter counts per sub-network, as in the design's tables")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--fusion", help="override model.fusion")
    p.add_argument("--json", action="store_true", help='print {"modules": {name: count}, "total": N}')
    p.add_argument("--categories", type=int, default=10,
                   help="assumed distinct values per categorical column (the real count comes from training data)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="fine-tune a model and write a bundle")
    p.add_argument("--config", required=True, help="YAML config (examples/config.yaml lists every key)")
    p.add_argument("--train", required=True, help="training table (.csv, .parquet, .jsonl)")
    p.add_argument("--val", required=True, help="validation table: early stopping and the decision threshold")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT.work/")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists and is not empty, and discard "
                   "an interrupted training's OUT.work/ (both refused otherwise)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. model.fusion=gate")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="overrides train.precision: auto (bf16 where the hardware computes it natively) | fp32 | bf16")
    _add_sign_key(p, "the bundle (an ensemble's members too)")
    _add_log_every(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics, plots and a report on a labelled table")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--data", required=True, help="labelled table (.csv, .parquet, .jsonl) with the data.label column")
    p.add_argument("--out", required=True, help="folder for metrics.json, PNG plots and report.md")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="default: the bundle's train.precision, resolved on this machine (the output says when it differs from the one its threshold was chosen under)")
    p.add_argument("--quiet", action="store_true", help="no progress, precision or decision lines on stderr (the "
                   "metrics JSON still goes to stdout)")
    _add_decision_options(p)
    _add_verify_key(p)
    _add_log_every(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score a table, streaming, one output row per input row")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--data", required=True, help="table to score (.csv, .parquet, .jsonl); with --ray also a folder, "
                   "a glob or a URI")
    p.add_argument("--out", required=True, help="output table (.csv, .parquet, .jsonl); with --ray a Parquet folder")
    p.add_argument("--batch-size", type=int, default=64, help="rows per model batch")
    p.add_argument("--batch-rows", type=int, default=2048, help="rows read from the input at a time (with --ray: "
                   "rows per batch an actor scores)")
    p.add_argument("--engine", choices=["torch", "onnx", "auto"], default="torch",
                   help="onnx needs 'bsmfusion export' first; auto: the bundle's int8 graph on CPUs with VNNI and no "
                        "AMX, torch elsewhere (it prints which and why)")
    p.add_argument("--int8", action="store_true", help="with --engine onnx: use the int8-quantised graph")
    p.add_argument("--strict", action="store_true", help="exit with status 2 when any row could not be scored (the "
                   "output is still written, with the reasons in its 'error' column)")
    p.add_argument("--quiet", action="store_true", help="no progress or precision lines on stderr")
    p.add_argument("--explain", action="store_true", help="add top_messages and top_features: JSON lists of the 3 "
                   "messages and tabular columns that moved the score most (docs/explain.md; costs many scorings "
                   "per row)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="default: the bundle's train.precision, resolved on this machine (the output says when it differs from the one its threshold was chosen under)")
    p.add_argument("--chunk-cache-mb", type=_cache_megabytes, default=0, metavar="MB",
                   help="cache this many MB of chunk vectors (torch engine): for files holding a thread several times "
                        "as it grew, each later copy encodes only its changed chunks; 0 = off (a file of distinct "
                        "threads gains nothing)")
    p.add_argument("--device", default="cpu", help="torch device for the torch engine: cpu, cuda, cuda:1 (with --ray, "
                   "--ray-gpus-per-actor decides)")
    _add_compile(p)
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="score with Ray Data on an actor pool (needs pip install 'bsmfusion[ray]'): --data may then be "
                        "a file, a folder or a glob, local or s3://..., and --out is a folder of Parquet files; no "
                        "ADDRESS starts a local Ray, 'auto' joins the running cluster, or ray://HOST:10001")
    p.add_argument("--ray-actors", type=int, metavar="N", help="with --ray: a fixed pool of N actors, each loading "
                   "the bundle once (unset: a pool that grows with the cluster's free resources)")
    p.add_argument("--ray-gpus-per-actor", type=float, default=0, metavar="G",
                   help="with --ray: GPUs per actor (0.5 puts two actors on one GPU); > 0 scores on CUDA")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (with --ray: an existing "
                   "non-empty --out folder); refused otherwise")
    _add_decision_options(p)
    _add_verify_key(p)
    _add_log_every(p)
    p.set_defaults(func=cmd_predict)
    from .inference.columns import columns_help  # standard library only: --help stays fast

    p.epilog = f"example:\n  {EXAMPLES['predict']}\n\n{columns_help()}"

    p = sub.add_parser("explain", help="which messages and facts moved each row's score: JSONL + HTML pages")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--data", required=True, help="table to explain (.csv, .parquet, .jsonl)")
    p.add_argument("--out", required=True, help="output folder: explanations.jsonl, index.html, rows/row-N.html")
    p.add_argument("--rows", type=int, default=100, help="explain the first N rows of --data")
    p.add_argument("--method", choices=("auto", "shapley", "occlusion"), default="auto",
                   help="auto: exact Shapley values up to 3 messages (columns), occlusion above (each left out "
                        "once, n scorings); shapley: exact up to --exact-max, sampled above (docs/explain.md)")
    p.add_argument("--exact-max", type=int, default=8, metavar="N",
                   help="with --method shapley: exact Shapley values up to N messages (columns); above, permutation "
                        "sampling")
    p.add_argument("--permutations", type=int, default=32, help="orderings sampled per row when sampling")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed")
    p.add_argument("--batch-size", type=int, default=64, help="rows per model batch")
    p.add_argument("--chunk-cache-mb", type=_cache_megabytes, default=64, metavar="MB",
                   help="chunk vectors cached (torch engine): a thread with one message removed re-encodes only "
                        "the chunks that changed; 0 = off")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    _add_decision_options(p)
    _add_verify_key(p)
    p.set_defaults(func=cmd_explain)
    p.epilog = f"example:\n  {EXAMPLES['explain']}"

    p = sub.add_parser("export", help="export the whole model to ONNX inside the bundle")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    p.add_argument("--quantize", choices=["int8"], help="also write a dynamically int8-quantised graph")
    _add_sign_key(p, "the rewritten manifests (needed for a signed bundle, whose signature is checked first)")
    p.add_argument("--verify-key", metavar="PUBLIC_PEM",
                   help="check the bundle's current signature with this public key before re-signing (default: "
                        "$BSMFUSION_VERIFY_KEY when set, else the sign key's own public half)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="HTTP scoring server (FastAPI + uvicorn)")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--port", type=int, default=8080, help="TCP port to listen on; one in use is refused before the "
                   "model loads")
    p.add_argument("--api-key-env", help="name of the environment variable holding the API key")
    p.add_argument("--max-records", type=int, default=256, help="records per request")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, metavar="BYTES",
                   help="refuse a request body larger than this with 413 (checked on Content-Length and on the body "
                        "read)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="default: the bundle's train.precision, resolved on this machine (the output says when it differs from the one its threshold was chosen under)")
    p.add_argument("--chunk-cache-mb", type=_cache_megabytes, default=256, metavar="MB",
                   help="cache this many MB of chunk vectors, so a thread re-scored after each new message encodes "
                        "about one chunk per request (~3.2 KB per MiniLM chunk); 0 = off")
    _add_compile(p)
    _add_decision_options(p)
    _add_verify_key(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("compare", help="rank every fusion, both baselines and the classical members (minutes)")
    p.add_argument("--config", required=True, help="YAML config (examples/config.yaml lists every key)")
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
    p.add_argument("--test-frac", type=float, default=0.15, help="share of rows for test")
    p.add_argument("--val-frac", type=float, default=0.15, help="share of rows for validation")
    p.add_argument("--seed", type=int, default=0, help="shuffles the groups")
    p.add_argument("--overwrite", action="store_true", help="replace train/val/test files already in --out (refused "
                   "otherwise)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("demo", help="download real data, fine-tune, evaluate and score a few rows")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("keygen", help="write an Ed25519 key pair for signing bundles (private.pem 0600, public.pem)")
    p.add_argument("--out", required=True, help="folder for private.pem and public.pem (created 0700; an existing key "
                   "there is never replaced)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign", help="sign a bundle as it is (after checking it), e.g. with a new key when rotating")
    p.add_argument("--model", required=True, help="bundle folder")
    _add_sign_key(p, "the bundle")
    p.add_argument("--verify-key", metavar="PUBLIC_PEM",
                   help="the bundle's current signature must hold under this public key (rotation: the old key); "
                        "default: $BSMFUSION_VERIFY_KEY when set, else the sign key's own public half")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("verify", help="check a bundle against its closed manifest and, with a verify key, its signature")
    p.add_argument("--model", required=True, help="bundle folder")
    p.add_argument("--verify-key", metavar="PUBLIC_PEM",
                   help="also require this Ed25519 public key's signature; default: $BSMFUSION_VERIFY_KEY when set")
    p.set_defaults(func=cmd_verify)
    summaries = {action.dest: action.help for action in sub._choices_actions}  # the one-liners listed above
    for name, verb in sub.choices.items():  # every verb: what it does, defaults in --help, and an example
        verb.formatter_class = HelpFormatter
        verb.description = verb.description or summaries.get(name)
        if name in EXAMPLES and not verb.epilog:
            verb.epilog = "example:\n  " + EXAMPLES[name]
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from .resources import quiet_hugging_face

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_hugging_face()
    handler: Callable[[argparse.Namespace], int | None] = args.func
    try:
        check_inputs(args)
        code = handler(args)
    except OptionError as err:  # the library names the option's field; say the flag
        print(f"error: {err.render(OPTION_FLAGS)}", file=sys.stderr)
        return 2
    except BsmFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
