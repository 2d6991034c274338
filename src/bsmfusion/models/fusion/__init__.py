"""Fusion heads. Importing this package registers every built-in fusion in `FUSIONS`."""
from . import concat, cross_attention, gate, moe  # noqa: F401  (registration side effect)
from .base import FUSIONS, Batch, Fusion, FusionDims, FusionOutput, build_fusion, fusion_class, register_fusion

__all__ = ["FUSIONS", "Batch", "Fusion", "FusionDims", "FusionOutput", "build_fusion", "fusion_class", "register_fusion"]
