"""`ScoringOptions`: every choice about how a bundle scores, as one value passed whole from the Python API, the CLI,
`serve` and Ray actors through the `Predictor` to each scorer — an ensemble hands it to every member."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import OptionError

ENGINES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class ScoringOptions:
    """How to score.

    batch_size: rows per model batch.
    device: a torch device for the torch engine ("cpu", "cuda", "cuda:1").
    precision: "auto" (bf16 where the hardware computes it natively), "fp32" or "bf16"; None: the bundle's
        `train.precision`, the one its validation metrics and threshold were computed with.
    engine: "torch"; "onnx" runs the graphs `bsmfusion export` wrote (each neural member's, in an ensemble; the
        classical members compute in NumPy either way); "auto" picks per neural model (`scorers.choose_engine`).
    quantized: with engine "onnx", the int8 graphs (`bsmfusion export --quantize int8`).
    chunk_cache_mb: MB of chunk vectors kept in an LRU cache (torch engine; 0: off), so re-scoring a growing thread
        encodes only the chunks its new messages changed. An ensemble splits it evenly among its neural members,
        each with a cache of its own.
    compile: compile each BERT backbone with TorchInductor when loading (torch engine).
    decision: replace the bundle's decision policy ("max_f1", "review_budget=0.05", {"costs": {...}}, ...).
    threshold: shorthand for decision {"fixed": threshold}.
    verify_key: an Ed25519 public key (its PEM file's path, or the PEM text) whose signature the bundle must carry:
        an unsigned bundle, a signature by another key or a bundle changed after signing is refused
        (`manifest.check_signature`). None: `BSMFUSION_VERIFY_KEY` when set, else the signature is not checked
        (said once per bundle). The closed manifest is checked either way.
    """

    batch_size: int = 64
    device: str = "cpu"
    precision: str | None = None
    engine: str = "torch"
    quantized: bool = False
    chunk_cache_mb: float = 0
    compile: bool = False
    decision: Any = None
    threshold: float | None = None
    verify_key: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptionError(f"{{batch_size}} must be a whole number >= 1, got {self.batch_size!r}")
        if self.engine not in ENGINES:
            raise OptionError(f"{{engine}} '{self.engine}' is unknown; use one of {', '.join(ENGINES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise OptionError(f"{{precision}} '{self.precision}' is unknown; use one of {', '.join(PRECISIONS)}")
        if not isinstance(self.chunk_cache_mb, (int, float)) or not self.chunk_cache_mb >= 0 \
                or self.chunk_cache_mb == float("inf"):
            raise OptionError(f"{{chunk_cache_mb}} must be a size in MB >= 0 (0 turns the cache off), got "
                              f"{self.chunk_cache_mb!r}")
        if self.quantized and self.engine == "torch":
            raise OptionError("{quantized} needs the ONNX engine (the int8 graphs run there); pass {engine}=onnx or "
                              "{engine}=auto")
        if self.decision is not None and self.threshold is not None:
            raise OptionError("pass {decision} or {threshold}, not both ({threshold}=T is {decision} fixed=T)")
        if self.verify_key is not None and not isinstance(self.verify_key, (str, bytes, os.PathLike)):
            raise OptionError(f"{{verify_key}} must be a public key file's path or its PEM text, not "
                              f"{type(self.verify_key).__name__}")

    @classmethod
    def of(cls, options: "ScoringOptions | None" = None, **settings) -> "ScoringOptions":
        """`options` (or the defaults) with `settings` replacing fields; an unknown name is an `OptionError`."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise OptionError(f"unknown scoring option '{unknown[0]}'; choose from {', '.join(names)}")
        if options is not None and not isinstance(options, ScoringOptions):
            raise TypeError(f"options must be a ScoringOptions, not {type(options).__name__}")
        return replace(options or cls(), **settings)

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        key = values["verify_key"]
        if isinstance(key, (bytes, os.PathLike)):
            values["verify_key"] = key.decode("ascii", "replace") if isinstance(key, bytes) else os.fspath(key)
        return values
