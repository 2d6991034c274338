"""Scorers: what turns a DataFrame into `Scores` for one bundle kind, behind one interface.

`Predictor` (predict_frame, predict_file, the server) only ever calls a scorer, so the neural fusions, the
classical members and the ensemble share every line of the output code. A scorer has:

* `score_frame(frame, targets=None, memo=None) -> Scores` — `targets` (`N` class ids, multiclass) asks for the
  split of those classes' logits instead of the predicted ones' (used by the ensemble); `memo`, a dict one caller
  shares among the scorers of one frame, keeps work that depends on the frame alone (the ensemble's neural
  members tokenise the dialogue once);
* `text_columns` — the text columns an input table needs;
* `precision` (a `Precision`) and `describe_precision()` — what computes the scores;
* `chunk_cache` and `chunk_cache_info()` — the chunk-vector cache(s), or None.

`build_scorer(bundle, options)` builds the scorer a `ScoringOptions` asks for and wraps it in `CalibratedScorer`,
so the bundle's calibration is applied once, in one place.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from ..bundle import Bundle
from ..manifest import MANIFEST
from ..data.dataset import Collator
from ..errors import BundleError, OptionError
from ..models.scores import Scores, score_table
from ..precision import Precision, cpu_capability, resolve_precision
from .options import ScoringOptions

OFF = {"enabled": False, "description": "off: only neural models (torch engine) cache chunk vectors"}


def choose_engine(bundle: Bundle, engine: str, quantized: bool, device: str = "cpu") -> tuple[str, bool, str]:
    """(engine, quantized, why) that score the torch fusion `bundle` on `device`. `torch` and `onnx` are taken as
    asked; `auto` picks the faster engine for this machine: the ONNX int8 graph where the bundle has one (`bsmfusion
    export --quantize int8`, the user's opt-in to int8) and the device is a CPU with VNNI and without AMX; the torch
    engine elsewhere: on AMX its bf16 tiles beat ONNX int8, and the ONNX fp32 graph is no faster than eager
    (docs/performance.md). An ensemble asks this for each neural member."""
    if engine != "auto":
        return engine, quantized, "asked"
    if bundle.kind != "neural":
        return "torch", False, f"a {bundle.kind} model has no ONNX graph"
    if torch.device(device).type != "cpu":
        return "torch", False, f"{device} runs the torch engine"
    from .onnx_runtime import onnx_file

    if not onnx_file(Path(bundle.path), "int8").is_file():
        return "torch", False, "no int8 graph in the bundle (bsmfusion export --format onnx --quantize int8)"
    capability = cpu_capability()
    if capability == "AMX":
        return "torch", False, "AMX: bf16 tiles beat the int8 graph"
    if not torch.cpu._is_vnni_supported():
        return "torch", False, f"{capability} without VNNI: no fast int8"
    return "onnx", True, f"{capability} with VNNI and no AMX: the int8 graph is fastest"


class Scorer(Protocol):
    precision: Precision

    @property
    def text_columns(self) -> list[str]: ...

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None,
                    memo: dict | None = None) -> Scores: ...

    def describe_precision(self) -> str: ...


def text_signature(bundle: Bundle) -> str:
    """What a neural bundle's tokenised threads depend on: its text settings, text columns and tokenizer files
    (their SHA-256 from the manifest). Two bundles with the same signature tokenise a frame identically."""
    manifest_path = Path(bundle.path) / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    tokenizer = sorted((name, digest) for name, digest in manifest.items() if name.startswith("tokenizer/"))
    settings = bundle.cfg.to_dict()
    key = json.dumps([settings["text"], settings["data"]["text"], tokenizer], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()


class NeuralScorer:
    """A torch fusion bundle scored with PyTorch (at `options.precision`) or with its exported ONNX graph.

    `options.chunk_cache_mb` > 0 (torch engine only) keeps an LRU cache of chunk vectors of that many MB, so a
    re-scored growing thread encodes only its changed chunks (`scoring.chunk_cache`); `chunk_cache` is that cache
    or None. `options.compile` (torch engine only) compiles the backbone with TorchInductor first
    (`scoring.compiled`); `compile_note` says whether it took.
    """

    def __init__(self, bundle: Bundle, options: ScoringOptions = ScoringOptions()):
        from .chunk_cache import with_chunk_cache

        self.bundle = bundle
        self.batch_size = options.batch_size
        self.device = torch.device(options.device)
        engine, quantized, self.engine_reason = choose_engine(bundle, options.engine, options.quantized,
                                                              options.device)
        self.engine = engine
        self.engine_note = (f"engine auto → {engine}{' int8' if quantized else ''}: {self.engine_reason}"
                            if options.engine == "auto" else "")
        # default: the precision the bundle was validated (and its threshold chosen) with, `train.precision`
        self.precision = resolve_precision(options.precision or bundle.cfg.train.precision, self.device)
        if engine == "onnx":
            from .onnx_runtime import OnnxModel, onnx_file

            self.precision = Precision("onnx", "int8" if quantized else "fp32", "ONNX graph")
            path = onnx_file(bundle.path, "int8" if quantized else None)
            if not path.is_file():
                flag = " --quantize int8" if quantized else ""
                raise BundleError(f"bundle '{bundle.path}' has no {path.name}; run 'bsmfusion export --model "
                                  f"{bundle.path} --format onnx{flag}' first")
            self.model = OnnxModel(path, threads=torch.get_num_threads())
        else:
            self.model = bundle.model.to(self.device).eval()
        self.compile_note = ""  # described only when asked for
        if options.compile:
            from .compiled import compile_backbone

            self.compile_note = (compile_backbone(self.model, self.precision, self.device) if engine == "torch"
                                 else "off: the ONNX engine runs its own graph")
        self.collator = Collator.for_text(bundle.cfg.text, bundle.preprocessor.pad_token_id)
        self.chunk_cache = None
        self.chunk_cache_note = "off (size 0 MB)"
        if engine == "torch":
            self.model, self.chunk_cache, self.chunk_cache_note = with_chunk_cache(
                self.model, bundle.path, max_mb=options.chunk_cache_mb, precision=self.precision.used,
                device=self.device, pad_token_id=bundle.preprocessor.pad_token_id)
        elif options.chunk_cache_mb:
            self.chunk_cache_note = "off: the ONNX engine runs encoder and fusion in one graph (--engine torch caches)"
        self.text_key = text_signature(bundle) if bundle.preprocessor.text is not None else None

    def chunk_cache_info(self) -> dict:
        """`enabled`, a one-line `description` and, when enabled, the cache's counters (`ChunkVectorCache.stats`)."""
        stats = self.chunk_cache.stats() if self.chunk_cache is not None else {}
        return {"enabled": self.chunk_cache is not None, "description": self.chunk_cache_note, **stats}

    @property
    def text_columns(self) -> list[str]:
        return self.bundle.preprocessor.text_columns

    def describe_precision(self) -> str:
        """What runs and why, e.g. `auto → bf16: AMX`; with the precision the threshold was chosen under."""
        chosen = self.bundle.meta.get("validation_precision", {}).get("used")
        text = self.precision.describe() if self.engine == "torch" else f"ONNX {self.precision.used}"
        if chosen and chosen != self.precision.used:
            text += f" (threshold chosen under {chosen})"
        notes = [note for note in (self.engine_note, self.compile_note and f"compile {self.compile_note}") if note]
        return "; ".join([text, *notes])

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None,
                    memo: dict | None = None) -> Scores:
        threads = None
        if memo is not None and self.text_key is not None:
            key = ("threads", self.text_key)
            if key not in memo:
                memo[key] = self.bundle.preprocessor.encode_text(frame)
            threads = memo[key]
        table = self.bundle.preprocessor.encode(frame, with_labels=False, threads=threads)
        model, precision = self.model, self.precision
        if targets is not None and self.engine == "onnx":  # the graph splits the predicted class only
            model, precision = self.bundle.model.to(self.device).eval(), resolve_precision("fp32", self.device)
        return score_table(model, table, self.collator, batch_size=self.batch_size, device=self.device,
                           precision=precision, targets=targets)


class CalibratedScorer:
    """A bundle's scorer followed by the bundle's calibration (`calibration.Calibration`): the one place every
    engine's and every kind's probabilities are calibrated. `uncalibrated` is the model's own scorer."""

    def __init__(self, uncalibrated: Scorer, calibration):
        self.uncalibrated = uncalibrated
        self.calibration = calibration
        self.precision = uncalibrated.precision

    @property
    def text_columns(self) -> list[str]:
        return self.uncalibrated.text_columns

    def describe_precision(self) -> str:
        return self.uncalibrated.describe_precision()

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None,
                    memo: dict | None = None) -> Scores:
        return self.calibration.apply(self.uncalibrated.score_frame(frame, targets=targets, memo=memo))

    @property
    def chunk_cache(self):
        """The neural scorer's `ChunkVectorCache`, an ensemble's `CacheGroup`, or None (off, ONNX, classical)."""
        return getattr(self.uncalibrated, "chunk_cache", None)

    def chunk_cache_info(self) -> dict:
        """See `NeuralScorer.chunk_cache_info` (an ensemble adds `members`: one entry per neural member)."""
        info = getattr(self.uncalibrated, "chunk_cache_info", None)
        return dict(OFF) if info is None else info()


def member_scorer(bundle: Bundle, options: ScoringOptions = ScoringOptions()) -> CalibratedScorer:
    """`build_scorer` without its check that the engine asked for exists: an ensemble builds every member with
    the same options, and its classical members compute in NumPy whatever the engine."""
    from ..calibration import bundle_calibration

    scorer = NeuralScorer(bundle, options) if bundle.kind == "neural" else bundle.model.scorer(options)
    return CalibratedScorer(scorer, bundle_calibration(bundle))


def build_scorer(bundle: Bundle, options: ScoringOptions | None = None) -> CalibratedScorer:
    """The scorer for a bundle's kind — `NeuralScorer` for a torch fusion (PyTorch or ONNX), the model's own
    scorer otherwise (tfidf_lr and gbdt compute in float64 NumPy; an ensemble builds one scorer per member with
    these options) — wrapped in the bundle's calibration. `options.engine` "onnx" needs a graph: a bundle without
    a neural model is refused (`BundleError`)."""
    options = options or ScoringOptions()
    if options.engine == "onnx" and bundle.kind != "neural" and not getattr(bundle.model, "neural_members", list)():
        raise OptionError(f"bundle '{Path(bundle.path)}' is a {bundle.kind} model with no neural member: the ONNX "
                          "engine covers the neural models only; pass {engine}=torch")
    return member_scorer(bundle, options)
