"""Mixture-of-experts fusion: a router picks, per sample, how much of each modality's expert to use."""
from __future__ import annotations

import torch
from torch import nn

from .base import Fusion, FusionDims, FusionOutput, register_fusion


def projection(in_dim: int, out_dim: int) -> nn.Module:
    """Identity when sizes already match (as in the design's parameter table), else Linear(in→out)."""
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)


class MixtureOfExperts(nn.Module):
    """`router: Linear(2F→2) + Softmax` over `[text_proj(t), tab_proj(u)]`; output `w_txt·t + w_tab·u` (`B×F`)."""

    def __init__(self, text_dim: int, tab_dim: int, fusion_dim: int):
        super().__init__()
        self.text_proj = projection(text_dim, fusion_dim)
        self.tab_proj = projection(tab_dim, fusion_dim)
        self.router = nn.Sequential(nn.Linear(2 * fusion_dim, 2), nn.Softmax(dim=-1))

    def forward(self, text: torch.Tensor, tab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text_f, tab_f = self.text_proj(text), self.tab_proj(tab)
        weights = self.router(torch.cat([text_f, tab_f], dim=1))
        fused = weights[:, :1] * text_f + weights[:, 1:] * tab_f
        return fused, weights


@register_fusion("moe")
class MoEFusion(Fusion):
    """`moe_fusion` (projections + router) then `classifier: ReLU → Dropout → Linear(F→classes)`.

    `details["router_probabilities"]` holds the router's weights for (text, tab) (`B×2`). They weigh the two
    expert vectors, whatever their sizes, so they are not the dialogue's share of the decision.
    """

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        self.moe_fusion = MixtureOfExperts(dims.text_dim, dims.tab_dim, dims.fusion_dim)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dims.dropout), nn.Linear(dims.fusion_dim, dims.num_classes))

    def forward(self, text: torch.Tensor, tab: torch.Tensor) -> FusionOutput:
        fused, weights = self.moe_fusion(text, tab)
        return FusionOutput(logits=self.classifier(fused), details={"router_probabilities": weights})
