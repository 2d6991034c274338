"""The fusion base class, its common output type and the registry that maps fusion names to classes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from ...errors import ConfigError


@dataclass
class FusionOutput:
    """What every fusion returns.

    * `logits`: `B×num_classes`.
    * `text_weight`: `B`, the share of the decision attributed to the dialogue (0 = tabular only, 1 = text only),
      computed the way each fusion's docstring says.
    * `details`: fusion-specific tensors (per-dimension gates, router weights, attention weights).
    """

    logits: torch.Tensor
    text_weight: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)

    def contributions(self) -> dict[str, torch.Tensor]:
        """Per-sample contribution columns for reports and predictions: text_weight and tab_weight."""
        return {"text_weight": self.text_weight, "tab_weight": 1.0 - self.text_weight}


@dataclass(frozen=True)
class FusionDims:
    """Sizes a fusion is built from: text and tabular embedding sizes (H), fusion size F, classes, heads."""

    text_dim: int
    tab_dim: int
    fusion_dim: int
    num_classes: int
    num_heads: int = 4
    dropout: float = 0.1


class Fusion(nn.Module):
    """Base class: subclasses set `uses_text`/`uses_tab`, build named parts in `__init__` and implement `forward`.

    The direct child modules are the fusion's *parts* as the design names them (``final_merge_network``,
    ``moe_fusion``, ``classifier``, ``cross_att``); `bsmfusion summary` counts parameters per part.
    """

    name: ClassVar[str] = ""
    uses_text: ClassVar[bool] = True
    uses_tab: ClassVar[bool] = True

    def __init__(self, dims: FusionDims):
        super().__init__()
        self.dims = dims

    def forward(self, text: torch.Tensor | None, tab: torch.Tensor | None) -> FusionOutput:  # pragma: no cover
        raise NotImplementedError

    def parts(self) -> dict[str, nn.Module]:
        return dict(self.named_children())


FUSIONS: dict[str, type[Fusion]] = {}


def register_fusion(name: str) -> Callable[[type[Fusion]], type[Fusion]]:
    """Class decorator: `@register_fusion("gate")` makes the fusion available as `model.fusion: gate`."""

    def decorate(cls: type[Fusion]) -> type[Fusion]:
        if name in FUSIONS:
            raise ValueError(f"fusion '{name}' is registered twice")
        cls.name = name
        FUSIONS[name] = cls
        return cls

    return decorate


def fusion_class(name: str) -> type[Fusion]:
    """The registered class for a fusion name; a `ConfigError` listing the choices otherwise."""
    try:
        return FUSIONS[name]
    except KeyError:
        raise ConfigError(f"unknown model.fusion '{name}'; choose one of {', '.join(sorted(FUSIONS))}") from None


def build_fusion(name: str, dims: FusionDims) -> Fusion:
    return fusion_class(name)(dims)


def linear_share(text_part: torch.Tensor, tab_part: torch.Tensor) -> torch.Tensor:
    """Share of the text side in two additive logit contributions (`B×K` each): |text| / (|text| + |tab|)."""
    text_mass = text_part.float().abs().sum(dim=-1)
    tab_mass = tab_part.float().abs().sum(dim=-1)
    return text_mass / (text_mass + tab_mass).clamp_min(1e-12)
