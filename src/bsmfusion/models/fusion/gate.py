"""Sigmoid-gate fusion: a per-dimension gate decides how much of each modality enters the fused vector."""
from __future__ import annotations

import torch
from torch import nn

from .base import Fusion, FusionDims, FusionOutput, register_fusion


@register_fusion("gate")
class GateFusion(Fusion):
    """As the design draws it:

    `text_proj: Linear(H→F)`, `tab_proj: Linear(H→F)`,
    `gate_net: Linear(2F→F) → LayerNorm → Sigmoid` giving g (`B×F`),
    `fused = g⊙text_proj + (1−g)⊙tab_proj`, `classifier: ReLU → Dropout → Linear(F→classes)`.

    `details["gate"]` holds the per-dimension gates (`B×F`), `details["gate_mean"]` their mean per sample. The
    mean gate stays near 0.5 by construction (the LayerNorm before the sigmoid centres every sample's gate
    logits), so it is not a measure of how much the dialogue decided: see `models.contributions`.
    """

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        width = dims.fusion_dim
        self.text_proj = nn.Linear(dims.text_dim, width)
        self.tab_proj = nn.Linear(dims.tab_dim, width)
        self.gate_net = nn.Sequential(nn.Linear(2 * width, width), nn.LayerNorm(width), nn.Sigmoid())
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dims.dropout), nn.Linear(width, dims.num_classes))

    def forward(self, text: torch.Tensor, tab: torch.Tensor) -> FusionOutput:
        text_f, tab_f = self.text_proj(text), self.tab_proj(tab)
        gate = self.gate_net(torch.cat([text_f, tab_f], dim=1))
        fused = gate * text_f + (1.0 - gate) * tab_f
        return FusionOutput(logits=self.classifier(fused), details={"gate": gate, "gate_mean": gate.float().mean(dim=1)})
