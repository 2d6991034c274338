"""Batch scoring on Ray Data: the same output rows as `Predictor.predict_frame`, computed by an actor pool.

`ray_predict(data, bundle)` reads a file, a folder or a glob of Parquet / CSV / JSON Lines (local paths or any URI
pyarrow has a filesystem for, e.g. `s3://bucket/prefix/*.parquet`) with Ray Data, or takes a `ray.data.Dataset` or
a DataFrame, and returns a lazy `ray.data.Dataset` of scores: `map_batches` over a pool of actors, each of which
loads the bundle once (`predictor.load`) and scores its batches with `predict_frame`. `write_predictions` writes it
as a folder of Parquet files.

Parity with the local `bsmfusion predict`:
- CSV and JSONL are parsed by pandas inside the read tasks, in frames of `batch_rows` rows, exactly as
  `data.io.iter_table` does locally (so a non-numeric cell becomes that row's `error`, never a failed read);
  Parquet is read by Arrow, as locally.
- Every input row gives one output row, with the local columns in the local order: the id column (or `row`),
  `prob_<label>`…, `predicted_label`, the contribution columns and `error`. A bundle without an id column
  (`data.id`) gets `row` numbered in read order (files sorted by path, rows in file order), as the local predict
  numbers a single file: that costs one pass that materialises the input in Ray's object store.
- Rows come back in no particular order (join on the id); in fp32 a row's scores do not depend on its batch.

The bundle folder is read on the driver and shipped to the actors through the object store (`ship_bundle=True`),
so worker nodes need bsmfusion installed but not the bundle on a shared disk. The driver checks the bundle against
its closed manifest and, with a verify key (`options.verify_key`, else `BSMFUSION_VERIFY_KEY` on the driver), its
signature before any actor starts; the key travels to the actors as PEM text in the options, and each actor checks
the copy it loads again, so worker nodes need no key file either.
"""
from __future__ import annotations

import fnmatch
import glob as globlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..data.io import _CSV, _JSONL, _PARQUET
from ..errors import BsmFusionError, BundleError, ConfigError, DataError, OptionError
from ..scoring.options import ScoringOptions

RAY_PIN = "ray[data]==2.60.0"
INSTALL_HINT = "pip install 'bsmfusion[ray]'"
ROW_COLUMN = "__bsmfusion_row"
GLOB_CHARS = re.compile(r"[*?\[]")


def require_ray():
    """Import ray and ray.data, or raise a one-line `ConfigError` saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"Ray is not installed ({err.name or 'ray'} cannot be imported); {INSTALL_HINT} installs "
                          f"{RAY_PIN}") from None
    return ray


# --------------------------------------------------------------------------- bundle facts on the driver
@dataclass(frozen=True)
class BundleInfo:
    """What the driver needs from a bundle without loading its weights: output columns and the active decision."""

    path: Path
    id_column: str | None
    required_columns: list[str]  # the ones predict_frame requires: text (when read), numeric, categorical, id
    label_names: list[str]
    decision: Any  # decision.Decision


def bundle_info(bundle: str | Path, decision: Any = None, threshold: float | None = None,
                verify_key: Any = None) -> BundleInfo:
    """Check the bundle (its closed manifest; its signature under `verify_key`, an Ed25519 public key, when given),
    then read meta.json and config.yaml and resolve the decision (errors here, before any actor starts)."""
    import yaml

    from ..config import bundle_config
    from ..decision import active_decision
    from ..manifest import check_bundle

    path = Path(bundle)
    if not (path / "manifest.json").is_file():
        what = "does not exist" if not path.exists() else "is not a bsmfusion bundle (no manifest.json)"
        raise BundleError(f"model bundle '{path}' {what}; pass the folder written by 'bsmfusion train --out'")
    check_bundle(path, verify_key)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    cfg = bundle_config(yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")),
                        source=str(path / "config.yaml"))
    light = SimpleNamespace(path=path, cfg=cfg, meta=meta, threshold=meta.get("threshold"),
                            label_names=list(meta["label_names"]))
    chosen = active_decision(light, decision, threshold)
    data = cfg.data
    required = [*(data.text if cfg.model.uses_text else []), *data.numeric, *data.categorical,
                *([data.id] if data.id is not None else [])]
    return BundleInfo(path, data.id, list(dict.fromkeys(required)), [str(n) for n in meta["label_names"]], chosen)


def bundle_files(folder: Path) -> dict[str, bytes]:
    """Every file of a bundle folder, by its path relative to the folder (the actors rebuild the folder)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- inputs
def _format_of(name: str) -> str | None:
    lower = name.lower()
    for fmt, suffixes in (("csv", _CSV), ("parquet", _PARQUET), ("jsonl", _JSONL)):
        if lower.endswith(suffixes):
            return fmt
    return None


def _hidden(relative: str) -> bool:
    """Spark/Hadoop markers and hidden files (`_SUCCESS`, `.part.crc`, `_temporary/`) are not data."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _glob_regex(pattern: str) -> re.Pattern:
    """A glob as a regex over '/'-separated paths: `*` and `?` stay inside one folder, `**/` spans folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i:end + 1])[4:-3])  # the class, as fnmatch writes it
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _filesystem(path: str, filesystem=None):
    """(pyarrow filesystem, path inside it, whether it is this machine's disk) for a local path or a URI."""
    import pyarrow.fs as pafs

    if filesystem is not None:
        return filesystem, path, isinstance(filesystem, pafs.LocalFileSystem)
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path), True
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"input '{path}': no filesystem for it ({str(err).splitlines()[0]})") from None
    return fs, inner, isinstance(fs, pafs.LocalFileSystem)


def resolve_inputs(data: str | Path | Sequence[str | Path], filesystem=None) -> tuple[list[str], str, Any]:
    """Expand files, folders (recursively; hidden and `_`-prefixed entries skipped) and globs into a sorted list of
    table files of ONE format. Returns (paths inside the filesystem, format, pyarrow filesystem)."""
    import pyarrow.fs as pafs

    items = [data] if isinstance(data, (str, Path)) else list(data)
    if not items:
        raise DataError("no input given; pass a file, a folder or a glob of .parquet, .csv or .jsonl files")
    found: list[str] = []
    fs_used = None
    for item in items:
        text = str(item)
        fs, inner, local = _filesystem(text, filesystem)
        fs_used = fs_used or fs
        if GLOB_CHARS.search(inner):
            if local:
                matches = sorted(m for m in globlib.glob(inner, recursive=True) if os.path.isfile(m))
            else:
                base = inner[:GLOB_CHARS.search(inner).start()].rsplit("/", 1)[0]
                regex = _glob_regex(inner)
                infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
                matches = sorted(i.path for i in infos if i.type == pafs.FileType.File and regex.match(i.path))
            matches = [m for m in matches if _format_of(m) and not _hidden(os.path.basename(m))]
            if not matches:
                raise DataError(f"input '{text}': the pattern matches no .parquet, .csv or .jsonl file")
            found.extend(matches)
            continue
        try:
            info = fs.get_file_info(inner)
        except OSError as err:
            raise DataError(f"input '{text}' cannot be read: {str(err).splitlines()[0]}") from None
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"input '{text}' does not exist; check the path")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
            root = inner.rstrip("/") + "/"
            files = sorted(i.path for i in infos if i.type == pafs.FileType.File and _format_of(i.path)
                           and not _hidden(i.path[len(root):] if i.path.startswith(root) else i.base_name))
            if not files:
                raise DataError(f"input folder '{text}' holds no .parquet, .csv or .jsonl file")
            found.extend(files)
        else:
            if _format_of(inner) is None:
                raise DataError(f"file '{text}': unknown table format; use .csv, .parquet or .jsonl")
            found.append(inner)
    formats = sorted({_format_of(p) for p in found})
    if len(formats) > 1:
        raise DataError(f"the inputs mix table formats ({', '.join(formats)}); score one format at a time")
    return sorted(dict.fromkeys(found)), formats[0], fs_used


def _pandas_datasource():
    """A Ray file datasource that parses CSV/JSONL with pandas, in frames of `batch_rows` rows, like `iter_table`."""
    import io

    from ray.data.datasource import FileBasedDatasource

    class _Raw(io.RawIOBase):
        """A pyarrow stream as a raw binary file, so pandas decodes it through one large buffer."""

        def __init__(self, stream):
            self._stream = stream

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            data = self._stream.read(len(buffer))
            buffer[:len(data)] = data
            return len(data)

        def close(self) -> None:  # the datasource closes the stream
            super().close()

    class PandasTableDatasource(FileBasedDatasource):
        def __init__(self, paths, *, fmt: str, batch_rows: int, **kwargs):
            super().__init__(paths, **kwargs)
            self._fmt = fmt
            self._batch_rows = batch_rows

        def _read_stream(self, f, path: str):
            stream = io.BufferedReader(_Raw(f), buffer_size=1 << 20)
            if self._fmt == "csv":
                sep = "\t" if path.lower().endswith(".tsv") else ","
                reader = pd.read_csv(stream, sep=sep, chunksize=self._batch_rows, encoding_errors="replace")
            else:
                reader = pd.read_json(stream, lines=True, chunksize=self._batch_rows)
            with reader:
                for frame in reader:
                    frame.columns = [str(c) for c in frame.columns]
                    yield frame.reset_index(drop=True)

    return PandasTableDatasource


def read_dataset(data, *, batch_rows: int = 2048, filesystem=None):
    """A `ray.data.Dataset` of the input rows: a Dataset as is, a DataFrame through `from_pandas`, else files."""
    ray = require_ray()
    if isinstance(data, ray.data.Dataset):
        return data
    if isinstance(data, pd.DataFrame):
        return ray.data.from_pandas(data)
    paths, fmt, fs = resolve_inputs(data, filesystem)
    if fmt == "parquet":
        return ray.data.read_parquet(paths, filesystem=fs, partitioning=None, file_extensions=None)
    datasource = _pandas_datasource()(paths, fmt=fmt, batch_rows=batch_rows, filesystem=fs, partitioning=None,
                                      file_extensions=None)
    return ray.data.read_datasource(datasource)


# --------------------------------------------------------------------------- row numbers
def _numbered(ds):
    """The dataset with a `ROW_COLUMN` of 0.. in read order (blocks materialised in order, then offset)."""
    ray = require_ray()
    context = ds.context  # a Dataset keeps the context it was created with
    before = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        refs = ds.materialize().to_pandas_refs()
    finally:
        context.execution_options.preserve_order = before

    @ray.remote(num_cpus=0.25)
    def count(frame: pd.DataFrame) -> int:
        return len(frame)

    @ray.remote(num_cpus=0.25)
    def number(frame: pd.DataFrame, start: int) -> pd.DataFrame:
        frame = frame.copy()
        frame[ROW_COLUMN] = np.arange(start, start + len(frame), dtype=np.int64)
        return frame

    counts = ray.get([count.remote(ref) for ref in refs])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int) if counts else []
    return ray.data.from_pandas_refs([number.remote(ref, int(start)) for ref, start in zip(refs, starts)])


# --------------------------------------------------------------------------- the actors
ARROW_LABEL_TYPES = {"int": "int64", "float": "float64", "bool": "bool_"}  # data.labels.LABEL_TYPES; else string


def _as_arrow(frame: pd.DataFrame, label_type: str | None = None):
    """The output frame as an Arrow table with fixed types, so every Parquet file of the output has one schema;
    `predicted_label` in the training labels' type (`data.labels`), as the local predict writes it."""
    import pyarrow as pa

    from .columns import CONTRIBUTION_COLUMNS

    fields, arrays = [], []
    for column in frame.columns:
        values = frame[column]
        if column == "row":
            array = pa.array(values.to_numpy(dtype=np.int64), type=pa.int64())
        elif column.startswith("prob_"):  # float64: exactly what the decision compared with the threshold
            array = pa.array(values.to_numpy(dtype=np.float64), type=pa.float64())
        elif column in CONTRIBUTION_COLUMNS:
            array = pa.array(values.to_numpy(dtype=np.float32), type=pa.float32())
        elif column == "predicted_label" and label_type in ARROW_LABEL_TYPES:
            array = pa.array(values, type=getattr(pa, ARROW_LABEL_TYPES[label_type])(), from_pandas=True)
        elif column in ("predicted_label", "error"):
            array = pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                              for v in values], type=pa.string())
        else:  # the id column: its own type, or text when a batch mixes types
            try:
                array = pa.array(values, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                array = pa.array([None if pd.isna(v) else str(v) for v in values], type=pa.string())
            if pa.types.is_null(array.type):
                array = array.cast(pa.string())
        fields.append(pa.field(column, array.type))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class BundleScorer:
    """One Ray actor: loads the bundle once, then scores pandas batches into the local predict's columns."""

    def __init__(self, bundle: list, options):
        from ..bundle import load_bundle
        from .predictor import Predictor

        source = bundle[0]
        self._folder = None
        if isinstance(source, (str, Path)):
            folder = Path(source)
        else:  # the bundle's files, shipped through the object store
            import ray

            files = ray.get(source) if isinstance(source, ray.ObjectRef) else source
            self._folder = folder = Path(tempfile.mkdtemp(prefix="bsmfusion-bundle-"))
            for name, payload in files.items():
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)
        # the driver resolved the verify key (PEM text here) or its absence, and said so: no environment lookup
        self.predictor = Predictor(load_bundle(folder, verify_key=options.verify_key), options)

    def __call__(self, batch: pd.DataFrame):
        rows = batch.pop(ROW_COLUMN).to_numpy(dtype=np.int64) if ROW_COLUMN in batch.columns else None
        result = self.predictor.predict_frame(batch.reset_index(drop=True))
        if rows is not None:
            result["row"] = rows
        return _as_arrow(result, self.predictor.bundle.preprocessor.label_type)

    def __del__(self):
        if getattr(self, "_folder", None) is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


# --------------------------------------------------------------------------- the entry point
def ray_predict(data, bundle: str | Path, options: ScoringOptions | None = None, *, actors: int | None = None,
                gpus_per_actor: float = 0, cpus_per_actor: float | None = None, batch_rows: int = 2048,
                ship_bundle: bool = True, filesystem=None):
    """Score `data` with the bundle on a Ray actor pool; returns a lazy `ray.data.Dataset` (see the module doc).
    The arguments are those of `bsmfusion.ray_predict`, which documents them; `options.device` is set from
    `gpus_per_actor`."""
    from dataclasses import replace

    from ..manifest import note_unchecked
    from ..signing import public_pem
    from .predictor import verify_key_of

    options = options or ScoringOptions()
    device = "cuda" if gpus_per_actor > 0 else "cpu"
    if options.device not in ("cpu", device):
        raise OptionError(f"{{device}} '{options.device}' on Ray comes from gpus_per_actor ({gpus_per_actor:g}): "
                          f"actors score on {device}; set gpus_per_actor instead")
    options = replace(options, device=device)
    key = verify_key_of(options)
    options = replace(options, verify_key=None if key is None else public_pem(key))
    ray = require_ray()
    for name, value in (("actors", actors), ("batch_rows", batch_rows)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ConfigError(f"{name} must be a whole number ≥ 1 (got {value!r})")
    if gpus_per_actor < 0 or (cpus_per_actor is not None and cpus_per_actor <= 0):
        raise ConfigError(f"gpus_per_actor must be ≥ 0 and cpus_per_actor > 0 (got {gpus_per_actor}, {cpus_per_actor})")
    info = bundle_info(bundle, options.decision, options.threshold, key)
    if key is None:
        note_unchecked(info.path)
    ds = read_dataset(data, batch_rows=batch_rows, filesystem=filesystem)
    try:
        columns = ds.columns()
    except Exception:  # noqa: BLE001  (a source without a schema: predict_frame names a missing column)
        columns = None
    if columns is not None:
        from ..data.tabular import require_columns

        require_columns(pd.DataFrame(columns=columns), info.required_columns, "input data")
    if info.id_column is None:  # predict_frame's `row`: numbered in read order
        ds = _numbered(ds)
    source = ray.put(bundle_files(info.path)) if ship_bundle else str(info.path.resolve())
    resources = {"num_gpus": gpus_per_actor} if gpus_per_actor > 0 else {"num_cpus": cpus_per_actor or 1}
    if gpus_per_actor > 0 and cpus_per_actor is not None:
        resources["num_cpus"] = cpus_per_actor
    compute = (ray.data.ActorPoolStrategy(size=actors) if actors is not None
               else ray.data.ActorPoolStrategy(min_size=1, max_size=None))
    return ds.map_batches(BundleScorer, fn_constructor_kwargs={"bundle": [source], "options": options},
                          batch_size=batch_rows, batch_format="pandas", compute=compute, zero_copy_batch=False,
                          **resources)


_REMOTE_ERROR = re.compile(r"bsmfusion\.errors\.(\w+): (.+)")


def user_error(err: BaseException) -> BsmFusionError | None:
    """The bsmfusion error a Ray task raised, so the CLI prints its one line instead of Ray's traceback: found in
    the exception chain, or (Ray Data keeps only the worker's traceback text) rebuilt from that text."""
    from .. import errors

    seen, stack, texts = set(), [err], []
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BsmFusionError):
            return current
        texts.append(str(current))
        stack.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    for text in texts:
        found = _REMOTE_ERROR.findall(text)
        if found:
            name, message = found[-1]
            kind = getattr(errors, name, None)
            kind = kind if isinstance(kind, type) and issubclass(kind, BsmFusionError) else BsmFusionError
            return kind(message.strip())
    return None


def write_predictions(scores, out: str | Path, *, overwrite: bool = False, filesystem=None,
                      overwrite_flag: str = "overwrite=True") -> tuple[int, int]:
    """Write a `ray_predict` dataset as a folder of Parquet files; returns (rows written, rows with an error).
    A local `out` is written next to itself first and moved into place, so a failure leaves no half folder; an
    existing non-empty folder is refused unless `overwrite`."""
    import pyarrow.parquet as pq

    from ..folders import check_out_folder

    text = str(out)
    if _format_of(text) in ("csv", "jsonl"):
        raise ConfigError(f"output '{text}': Ray writes a folder of Parquet files; name a folder, not a .csv/.jsonl file")
    fs, inner, local = _filesystem(text, filesystem)
    if local:
        check_out_folder(inner, overwrite, overwrite_flag)
        target = Path(inner)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            scores.write_parquet(str(staging))
            if not staging.exists():  # no rows at all: an empty folder
                staging.mkdir()
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        written = pq.read_table(str(target), columns=["error"]) if any(target.iterdir()) else None
    else:
        from ray.data import SaveMode

        scores.write_parquet(inner, filesystem=fs, mode=SaveMode.OVERWRITE if overwrite else SaveMode.ERROR)
        written = pq.read_table(inner, columns=["error"], filesystem=fs)
    if written is None:
        return 0, 0
    errors = written.column("error").to_numpy(zero_copy_only=False)
    return len(errors), int(sum(1 for e in errors if e))
