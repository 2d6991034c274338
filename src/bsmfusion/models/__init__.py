"""Model side: plain nn.Modules (encoders, fusions, the composed classifier). No training loop here.

The names below are imported on first use: `bsmfusion.kinds`, which config validation reads, must not import torch.
"""
_EXPORTS = {"MultimodalClassifier": "classifier", "build_model": "classifier", "FUSIONS": "fusion",
            "FusionOutput": "fusion", "register_fusion": "fusion", "PLRTabularEncoder": "tabular_encoder",
            "TabularEncoder": "tabular_encoder", "build_tab_encoder": "tabular_encoder", "TextEncoder": "text_encoder"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'bsmfusion.models' has no attribute '{name}'")


__all__ = list(_EXPORTS)
