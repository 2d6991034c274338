"""bsmfusion: classify buyer-seller message threads together with their order and account facts.

The Python API: `train(config, train, val, out=None)` and `load(bundle_dir)` return a `Predictor` (`predict`,
`predict_proba`, `evaluate`, `explain`, `save`); `Config` and `load_config` read configs; `ray_predict(data,
bundle)` scores on a Ray cluster (the `ray` extra). Importing the package
loads none of torch, Lightning or transformers: each entry point imports what it needs when called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .api import load, ray_predict, train
from .version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config, load_config
    from .inference.predictor import Predictor
    from .scoring.options import ScoringOptions

_LAZY = {"Config": "config", "load_config": "config", "Predictor": "inference.predictor",
         "ScoringOptions": "scoring.options"}


def __getattr__(name: str):
    """`bsmfusion.Config`, `load_config`, `Predictor` and `ScoringOptions`, imported on first use (keeps `import bsmfusion` light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'bsmfusion' has no attribute '{name}'")


__all__ = ["__version__", "Config", "Predictor", "ScoringOptions", "load", "load_config", "ray_predict", "train"]
