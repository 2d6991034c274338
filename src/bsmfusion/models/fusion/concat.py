"""Concatenation fusion (the design's first design) and the two single-modality baselines."""
from __future__ import annotations

import torch
from torch import nn

from .base import Fusion, FusionDims, FusionOutput, linear_share, register_fusion


@register_fusion("concat")
class ConcatFusion(Fusion):
    """`final_merge_network = Concat → ReLU → Linear(2H→classes)`.

    Because the head is linear after the ReLU, the logits split exactly into a text part and a tabular part;
    `text_weight` is the text part's share of their absolute sizes.
    """

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        self.final_merge_network = nn.Sequential(nn.ReLU(), nn.Linear(dims.text_dim + dims.tab_dim, dims.num_classes))

    def forward(self, text: torch.Tensor, tab: torch.Tensor) -> FusionOutput:
        fused = torch.cat([text, tab], dim=1)
        logits = self.final_merge_network(fused)
        linear = self.final_merge_network[1]
        activated = torch.relu(fused)
        text_part = activated[:, : self.dims.text_dim] @ linear.weight[:, : self.dims.text_dim].T
        tab_part = activated[:, self.dims.text_dim:] @ linear.weight[:, self.dims.text_dim:].T
        return FusionOutput(logits=logits, text_weight=linear_share(text_part, tab_part))


class _SingleModality(Fusion):
    """`classifier = ReLU → Linear(H→classes)` over one modality: a baseline for the fusions."""

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        width = dims.text_dim if self.uses_text else dims.tab_dim
        self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(width, dims.num_classes))

    def forward(self, text: torch.Tensor | None, tab: torch.Tensor | None) -> FusionOutput:
        features = text if self.uses_text else tab
        logits = self.classifier(features)
        weight = torch.full((logits.shape[0],), 1.0 if self.uses_text else 0.0, device=logits.device)
        return FusionOutput(logits=logits, text_weight=weight)


@register_fusion("text_only")
class TextOnly(_SingleModality):
    """Baseline that sees the dialogue alone (text_weight = 1)."""

    uses_tab = False


@register_fusion("tab_only")
class TabularOnly(_SingleModality):
    """Baseline that sees the tabular features alone (text_weight = 0)."""

    uses_text = False
