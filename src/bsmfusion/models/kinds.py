"""Every name `model.fusion` accepts: the registered torch fusions plus the classical members and the ensemble.

The torch fusions live in `models.fusion.FUSIONS` and are built by `build_model`; the other kinds are trained
and scored by `bsmfusion.classical` and never reach the torch forward path. Config validation, `train`
(which dispatches on the kind) and `compare` all read this one list.
"""
from __future__ import annotations

import sys

from ..errors import ConfigError

# The built-in torch fusions and whether each reads the dialogue, known without importing torch: config validation
# (and so every CLI config error) stays fast. tests/models/test_fusions.py checks it against the registry.
BUILTIN_FUSIONS: dict[str, bool] = {"concat": True, "cross_attn": True, "gate": True, "moe": True,
                                    "tab_only": False, "text_only": True}

# name → what it is (the classical kinds read the dialogue through TF-IDF, the tabular facts directly)
CLASSICAL_KINDS: dict[str, str] = {
    "tfidf_lr": "TF-IDF (word 1–2-grams + char 3–5-grams) of the parsed dialogue + numerics + one-hot → "
                "logistic regression",
    "gbdt": "LightGBM on numerics + one-hot categoricals + a 64-component SVD of the dialogue's TF-IDF",
    "ensemble": "a neural fusion + tfidf_lr + gbdt, weights by greedy selection on validation (model.ensemble)",
}
ENSEMBLE = "ensemble"


def _registered() -> dict:
    """The fusion registry when `models.fusion` is imported (it is once anyone registered a fusion), else {}."""
    module = sys.modules.get(f"{__package__}.fusion")
    return getattr(module, "FUSIONS", {})


def neural_kinds() -> list[str]:
    """The torch fusions: the built-in ones and any registered with `@register_fusion`."""
    return sorted(set(BUILTIN_FUSIONS) | set(_registered()))


def model_kinds() -> list[str]:
    """Every accepted `model.fusion` value: torch fusions first, then the classical kinds."""
    return [*neural_kinds(), *CLASSICAL_KINDS]


def is_neural(name: str) -> bool:
    """True for a registered torch fusion (trained by Lightning, stored as safetensors weights)."""
    return name in BUILTIN_FUSIONS or name in _registered()


def check_kind(name: str) -> str:
    """`name` when it is a model kind; else a `ConfigError` listing the choices."""
    if name not in model_kinds():
        raise ConfigError(f"unknown model.fusion '{name}'; choose one of {', '.join(model_kinds())}")
    return name


def kind_uses_text(name: str) -> bool:
    """Whether a kind reads the dialogue (tab_only does not; the classical members always do)."""
    if name in BUILTIN_FUSIONS:
        return BUILTIN_FUSIONS[name]
    if name in _registered():
        from .fusion import fusion_class

        return fusion_class(name).uses_text
    return name in CLASSICAL_KINDS
