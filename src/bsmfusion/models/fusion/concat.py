"""Concatenation fusion (the design's first design) and the two single-modality baselines."""
from __future__ import annotations

import torch
from torch import nn

from .base import Fusion, FusionDims, FusionOutput, register_fusion


@register_fusion("concat")
class ConcatFusion(Fusion):
    """`final_merge_network = Concat → ReLU → Dropout → Linear(2H→classes)`: logits additive in text and tab."""

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        self.final_merge_network = nn.Sequential(
            nn.ReLU(), nn.Dropout(dims.dropout), nn.Linear(dims.text_dim + dims.tab_dim, dims.num_classes)
        )

    def forward(self, text: torch.Tensor, tab: torch.Tensor) -> FusionOutput:
        return FusionOutput(logits=self.final_merge_network(torch.cat([text, tab], dim=1)))


class _SingleModality(Fusion):
    """`classifier = ReLU → Dropout → Linear(H→classes)` over one modality: a baseline for the fusions."""

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        width = dims.text_dim if self.uses_text else dims.tab_dim
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dims.dropout), nn.Linear(width, dims.num_classes))

    def forward(self, text: torch.Tensor | None, tab: torch.Tensor | None) -> FusionOutput:
        return FusionOutput(logits=self.classifier(text if self.uses_text else tab))


@register_fusion("text_only")
class TextOnly(_SingleModality):
    """Baseline that sees the dialogue alone (its whole contribution is the text's)."""

    uses_tab = False


@register_fusion("tab_only")
class TabularOnly(_SingleModality):
    """Baseline that sees the tabular features alone (its whole contribution is the tabular side's)."""

    uses_text = False
