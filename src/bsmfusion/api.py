"""`bsmfusion.train` and `bsmfusion.load`: the package's Python entry points, each returning a `Predictor`.

Heavy modules (torch, Lightning, transformers) are imported inside the functions, so `import bsmfusion` and the
CLI's argument checks stay fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .folders import check_out_folder  # noqa: F401  (also `bsmfusion.api.check_out_folder`)
from .folders import check_work_folder, discard_work_folder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .config import Config
    from .inference.predictor import Predictor
    from .scoring.options import ScoringOptions


def load(bundle_dir: str | Path, options: ScoringOptions | None = None, **settings) -> Predictor:
    """Load a bundle folder (written by `train` or `bsmfusion train --out`) for scoring.

    The folder is checked against the bundle's closed SHA-256 manifest first (no file missing, changed or
    unlisted); with a verify key, so is its Ed25519 signature (docs/security.md).

    Args:
        bundle_dir: the bundle folder.
        options: how to score, as one `bsmfusion.ScoringOptions` value (reuse it for many bundles).
        settings: single `ScoringOptions` fields as keywords, on top of `options`:
            engine: "torch"; "onnx" runs the graphs `bsmfusion export` wrote (every neural member's, in an
                ensemble); "auto" picks the faster engine per neural model on this machine.
            precision: "auto" (bf16 where the hardware computes it natively), "fp32" or "bf16"; None: the
                bundle's `train.precision`, the one its validation metrics and decision threshold were computed with.
            device: a torch device for the torch engine ("cpu", "cuda", "cuda:1").
            batch_size: rows per model batch.
            quantized: with engine "onnx", run the int8 graphs (`bsmfusion export --quantize int8`).
            chunk_cache_mb: keep an LRU cache of this many MB of chunk vectors (torch engine; 0: off; an ensemble
                splits it among its neural members), for re-scoring growing threads: only the chunks a new message
                changed are encoded again (`predictor.chunk_cache.stats()` counts hits and encoded chunks).
            compile: compile the BERT backbone(s) with TorchInductor now (torch engine; about 30 s for MiniLM on 2
                cores per neural model, then faster bf16 scoring on an AMX CPU); where compiling fails, scoring
                stays eager and `describe_precision()` says why.
            decision: replace the bundle's decision policy (`train.decision`): "max_f1", "precision_at_least=0.9",
                {"costs": {"false_positive": 1, "false_negative": 20}}, ... (see `bsmfusion.decision`).
            threshold: shorthand for decision {"fixed": threshold}.
            verify_key: a public key (its PEM file's path, or the PEM text; `bsmfusion keygen` writes one):
                refuse the bundle unless that key signed it as it is now. None: `BSMFUSION_VERIFY_KEY` when set;
                else the signature is not checked, which is logged once per bundle.

    Returns:
        A `Predictor` for the bundle's kind (a neural fusion, a classical member or an ensemble).

    Raises:
        BundleError: the folder is missing, not a bundle, modified (a file changed, missing or not in the
            manifest), not signed by `verify_key`, or lacks the ONNX graph asked for.
        OptionError (a ConfigError): an unknown or invalid option; `decision` malformed, binary-only on a
            multiclass model, or unreachable on the bundle's validation scores (the message says the best
            achievable value).
    """
    from .inference.predictor import load as load_predictor

    return load_predictor(bundle_dir, options, **settings)


def resolve_config(config: str | Path | dict[str, Any] | Config, overrides: dict[str, Any] | None = None) -> Config:
    """A `Config` from a YAML path, a plain dict or a `Config`, with dotted `overrides` applied on top."""
    from .config import Config, build_config, load_config

    if isinstance(config, (str, Path)):
        return load_config(config, overrides, overrides_name="override")
    if isinstance(config, Config):
        return build_config(config.to_dict(), overrides, source="config", overrides_name="override")
    if isinstance(config, dict):
        return build_config(config, overrides, source="config dict", overrides_name="override")
    raise TypeError(f"config must be a YAML path, a dict or a bsmfusion.Config, not {type(config).__name__}")


def train(config: str | Path | dict[str, Any] | Config, train: str | Path | pd.DataFrame,
          val: str | Path | pd.DataFrame, out: str | Path | None = None, *, overrides: dict[str, Any] | None = None,
          overwrite: bool = False, resume: bool = False, progress: bool = True,
          log_every: float = 30.0, sign_key: str | Path | None = None) -> Predictor | None:
    """Train the model `config` describes and write its bundle.

    Args:
        config: a YAML file, a dict of sections (data, text, model, train) or a `bsmfusion.Config`.
        train: training table: a DataFrame or a .csv, .parquet or .jsonl file.
        val: validation table (early stopping, best checkpoint and the decision threshold).
        out: the bundle folder; None: a new temporary folder, kept (its path is the returned predictor's `.path`).
        overrides: dotted config keys set on top of `config`, e.g. `{"model.fusion": "gate"}`.
        overwrite: replace an existing non-empty `out` (refused otherwise) and discard an interrupted run's
            `<out>.work/` (without `resume` or `overwrite`, an existing one is refused).
        resume: continue from the last checkpoint in `<out>.work/` after an interruption.
        progress: show progress on stderr: a live bar on a terminal, else a plain line every `log_every` seconds
            (epoch, steps done of the total, samples/s, ETA, the last validation metric).
        log_every: seconds between two progress lines when stderr is not a terminal.
        sign_key: sign the bundle with this Ed25519 private key (its PEM file's path or the PEM text;
            `bsmfusion keygen` writes one), so scoring with the public key refuses any later change. None:
            `BSMFUSION_SIGN_KEY` when set, else unsigned.

    Returns:
        A `Predictor` over the new bundle; None on the non-zero ranks of a multi-process (DDP/FSDP) run, where
        only rank 0 writes the bundle.

    Raises:
        ConfigError: an invalid config or override, `out` exists and is not empty without `overwrite`,
            `<out>.work/` exists without `resume` or `overwrite`, or
            `sign_key` is not an Ed25519 private key (an `OptionError`).
        DataError: a training or validation table is unusable (the message names the column and row).
    """
    import tempfile

    cfg = resolve_config(config, overrides)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="bsmfusion-")) / "model"
    check_out_folder(out, overwrite)
    check_work_folder(out, resume, overwrite)  # an interrupted run's <out>.work/ is never discarded unasked
    if overwrite and not resume:
        discard_work_folder(out)
    from .workflows.train import train as fit

    result = fit(cfg, train, val, out, resume=resume, progress=progress, log_every=log_every, sign_key=sign_key)
    if result.bundle_dir is None:
        return None
    from .bundle import load_bundle
    from .inference.predictor import Predictor

    return Predictor(load_bundle(result.bundle_dir))  # the bundle just written: no signature to report on


def ray_predict(data: Any, bundle: str | Path, options: ScoringOptions | None = None, *, actors: int | None = None,
                gpus_per_actor: float = 0, cpus_per_actor: float | None = None, batch_rows: int = 2048,
                ship_bundle: bool = True, filesystem: Any = None, **settings) -> Any:
    """Score a table, a folder or a glob of tables on a Ray cluster (Ray Data `map_batches` over an actor pool).

    Needs the optional extra: `pip install 'bsmfusion[ray]'`. Uses the Ray that is running in this process
    (`ray.init(...)` first to join a cluster, e.g. `ray.init(address="auto")`); without one, Ray Data starts a
    local Ray. Each actor loads the bundle once; the output rows are exactly `Predictor.predict_frame`'s (the id
    column or `row`, `prob_<label>`..., `predicted_label`, the contributions and `error`), one per input row, in no
    particular order. Write them with `ds.write_parquet(folder)` or read them with `ds.to_pandas()`.

    Args:
        data: a `ray.data.Dataset`, a pandas DataFrame, or a path, folder, glob or list of them of .parquet, .csv or
            .jsonl files, local or any URI pyarrow has a filesystem for (`s3://bucket/scores/in/*.parquet`,
            `gs://...`). CSV and JSONL are parsed with pandas, as the local predict does.
        bundle: the bundle folder on this machine (the driver).
        options: how each actor scores (`bsmfusion.ScoringOptions`, as `load`); `settings` replace single fields
            (engine, precision, batch_size, quantized, chunk_cache_mb — per actor —, compile, decision, threshold,
            verify_key). `device` is set by `gpus_per_actor`. The driver checks the bundle (and, with a verify
            key, its signature) before any actor starts; the actors get the public key as PEM text and check the
            copy they load again.
        actors: a fixed pool of this many actors; None: a pool that grows with the cluster's free resources.
        gpus_per_actor: GPUs per actor (fractions share a GPU: 0.5 puts two actors on one); > 0 scores on CUDA.
        cpus_per_actor: CPUs per actor (default 1 on CPU actors; unset on GPU actors).
        batch_rows: rows per Ray batch handed to an actor (and per pandas frame when parsing CSV/JSONL).
        ship_bundle: send the bundle's files to the actors through Ray's object store (no shared disk needed);
            False: every node loads `bundle` from the same path (a shared filesystem).
        filesystem: a `pyarrow.fs.FileSystem` to read `data` with (e.g. an `S3FileSystem` with explicit
            credentials or endpoint); None: inferred from the path.

    Returns:
        A lazy `ray.data.Dataset` of the scores (nothing runs until it is written, iterated or materialised).
        When the bundle has no id column (`data.id`), the rows are numbered (`row`) in read order first, which
        reads the input once into Ray's object store.

    Raises:
        ConfigError: Ray is not installed (the message says how to install it), or a bad option or decision.
        BundleError: `bundle` is not a bundle folder, does not match its manifest, or is not signed by the verify
            key.
        DataError: an input path does not exist, matches no table file, or mixes formats.
    """
    from .inference.ray_predict import ray_predict as run
    from .scoring.options import ScoringOptions

    return run(data, bundle, ScoringOptions.of(options, **settings), actors=actors, gpus_per_actor=gpus_per_actor,
               cpus_per_actor=cpus_per_actor, batch_rows=batch_rows, ship_bundle=ship_bundle, filesystem=filesystem)
