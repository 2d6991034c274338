"""The fusion base class, its common output type and the registry that maps fusion names to classes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from ...data.batch import Batch, TextForm  # noqa: F401  (a model's input, built by the collator, next to its output)
from ...errors import ConfigError


@dataclass
class FusionOutput:
    """What every fusion returns.

    * `logits`: `B×num_classes`.
    * `details`: fusion-specific tensors with dimension 0 = batch, named for what they are (per-dimension
      gates, router probabilities, attention weights). How much each modality contributed is NOT a fusion's
      own business: `models.contributions` computes one Shapley split for every fusion from the head alone.
    """

    logits: torch.Tensor
    details: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FusionDims:
    """Sizes a fusion is built from: text and tabular embedding sizes (H), fusion size F, classes, heads, and the
    dropout every head applies before its last Linear (`model.dropout`)."""

    text_dim: int
    tab_dim: int
    fusion_dim: int
    num_classes: int
    num_heads: int = 4
    dropout: float = 0.1


class Fusion(nn.Module):
    """Base class: subclasses set `uses_text`/`uses_tab`, build named parts in `__init__` and implement `forward`.

    `forward` must treat every row on its own (no batch statistics): the contribution split evaluates the head
    on four stacked copies of the batch.

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
