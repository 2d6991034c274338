"""Scorers: what turns a DataFrame into `Scores` for one bundle kind, behind one interface.

`Predictor` (predict_frame, predict_file, the server) only ever calls a scorer, so the neural fusions, the
classical members and the ensemble share every line of the output code. A scorer has:

* `score_frame(frame, targets=None) -> Scores` — `targets` (`N` class ids, multiclass) asks for the split of
  those classes' logits instead of the predicted ones' (used by the ensemble);
* `text_columns` — the text columns an input table needs;
* `precision` (a `Precision`) and `describe_precision()` — what computes the scores.

`build_scorer` wraps every one in `CalibratedScorer`, so the bundle's calibration is applied once, in one place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from ..bundle import Bundle
from ..data.dataset import Collator
from ..errors import BundleError
from ..precision import Precision, cpu_capability, resolve_precision
from .scoring import Scores, score_table

ENGINES = ("auto", "torch", "onnx")


def choose_engine(bundle: Bundle, engine: str, quantized: bool, device: str = "cpu") -> tuple[str, bool, str]:
    """(engine, quantized, why) that score `bundle` on `device`. `torch` and `onnx` are taken as asked; `auto`
    picks the faster engine for this machine: the ONNX int8 graph where the bundle has one (`bsmfusion export
    --quantize int8`, the user's opt-in to int8), the device is a CPU with VNNI and without AMX (int8 measured
    1.0–1.9× eager bf16 on an AVX-512-BF16 EPYC, 1.4× eager fp32 on AVX2 — docs/performance.md); the torch engine
    elsewhere: on AMX its bf16 tiles beat ONNX int8, the ONNX fp32 graph is no faster than eager, and only neural
    bundles have a graph."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine, quantized, "asked"
    if bundle.kind != "neural":
        return "torch", False, f"a {bundle.kind} model has no ONNX graph"
    if torch.device(device).type != "cpu":
        return "torch", False, f"{device} runs the torch engine"
    from .onnx_export import onnx_file

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

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None) -> Scores: ...

    def describe_precision(self) -> str: ...


class NeuralScorer:
    """A torch fusion bundle scored with PyTorch (at `precision`) or with its exported ONNX graph.

    `chunk_cache_mb` > 0 (torch engine only) keeps an LRU cache of chunk vectors of that many MB, so a re-scored
    growing thread encodes only its changed chunks (`inference.chunk_cache`); `chunk_cache` is that cache or None.
    `compile` (torch engine only) compiles the backbone with TorchInductor first (`inference.compiled`);
    `compile_note` says whether it took.
    """

    def __init__(self, bundle: Bundle, *, batch_size: int = 64, device: str = "cpu", precision: str | None = None,
                 engine: str = "torch", quantized: bool = False, chunk_cache_mb: float = 0, compile: bool = False):
        self.bundle = bundle
        self.batch_size = batch_size
        self.device = torch.device(device)
        requested = engine
        engine, quantized, self.engine_reason = choose_engine(bundle, engine, quantized, device)
        self.engine = engine
        self.engine_note = f"engine auto → {engine}{' int8' if quantized else ''}: {self.engine_reason}" if requested == "auto" else ""
        # default: the precision the bundle was validated (and its threshold chosen) with, `train.precision`
        self.precision = resolve_precision(precision or bundle.cfg.train.precision, self.device)
        if engine == "onnx":
            from .onnx_export import OnnxModel, onnx_file

            self.precision = Precision("onnx", "int8" if quantized else "fp32", "ONNX graph")
            path = onnx_file(bundle.path, "int8" if quantized else None)
            if not path.is_file():
                flag = " --quantize int8" if quantized else ""
                raise BundleError(f"bundle '{bundle.path}' has no {path.name}; run 'bsmfusion export --model {bundle.path} --format onnx{flag}' first")
            self.model = OnnxModel(path, threads=torch.get_num_threads())
        else:
            self.model = bundle.model.to(self.device).eval()
        self.compile_note = ""  # described only when asked for
        if compile:
            from .compiled import compile_backbone

            self.compile_note = (compile_backbone(self.model, self.precision, self.device) if engine == "torch"
                                 else "off: the ONNX engine runs its own graph")
        cfg = bundle.cfg
        self.collator = Collator.for_text(cfg.text, bundle.preprocessor.pad_token_id)
        self.chunk_cache = None
        self.chunk_cache_note = "off (size 0 MB)"
        if engine == "torch":
            from .chunk_cache import with_chunk_cache

            self.model, self.chunk_cache, self.chunk_cache_note = with_chunk_cache(
                self.model, bundle.path, max_mb=chunk_cache_mb, precision=self.precision.used, device=self.device,
                pad_token_id=bundle.preprocessor.pad_token_id)
        elif chunk_cache_mb:
            self.chunk_cache_note = "off: the ONNX engine runs encoder and fusion in one graph (--engine torch caches)"

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

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None) -> Scores:
        table = self.bundle.preprocessor.encode(frame, with_labels=False)
        return score_table(self.model, table, self.collator, batch_size=self.batch_size, device=self.device,
                           precision=self.precision, targets=targets)


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

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None) -> Scores:
        return self.calibration.apply(self.uncalibrated.score_frame(frame, targets=targets))

    @property
    def chunk_cache(self):
        """The neural scorer's `ChunkVectorCache`, or None (off, ONNX, or a classical kind)."""
        return getattr(self.uncalibrated, "chunk_cache", None)

    def chunk_cache_info(self) -> dict:
        """See `NeuralScorer.chunk_cache_info`; classical kinds and ensembles have no chunk cache."""
        info = getattr(self.uncalibrated, "chunk_cache_info", None)
        if info is None:
            return {"enabled": False, "description": "off: only neural bundles (torch engine) cache chunk vectors"}
        return info()


def build_scorer(bundle: Bundle, *, batch_size: int = 64, device: str = "cpu", precision: str | None = None,
                 engine: str = "torch", quantized: bool = False, chunk_cache_mb: float = 0,
                 compile: bool = False) -> CalibratedScorer:
    """The scorer for a bundle's kind — `NeuralScorer` for a torch fusion (PyTorch or ONNX), the classical model's
    own scorer otherwise (tfidf_lr and gbdt compute in float64 NumPy; an ensemble builds one scorer per member with
    these options) — wrapped in the bundle's calibration. `chunk_cache_mb` applies to neural bundles on the torch
    engine only, and so does `compile` (`inference.compiled`). `engine` "auto": see `choose_engine`."""
    from ..calibration import bundle_calibration

    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if bundle.kind == "neural":
        scorer = NeuralScorer(bundle, batch_size=batch_size, device=device, precision=precision, engine=engine,
                              quantized=quantized, chunk_cache_mb=chunk_cache_mb, compile=compile)
    elif engine == "onnx":
        raise BundleError(f"bundle '{Path(bundle.path)}' is a {bundle.kind} model: the ONNX engine covers the neural "
                          "fusions only; score it with --engine torch")
    else:
        scorer = bundle.model.scorer(batch_size=batch_size, device=device, precision=precision, compile=compile)
    return CalibratedScorer(scorer, bundle_calibration(bundle))
