"""Bidirectional cross-attention fusion exactly as the design draws it (one token per modality)."""
from __future__ import annotations

import torch
from torch import nn

from .base import Fusion, FusionDims, FusionOutput, register_fusion


class BidirectionalCrossAttention(nn.Module):
    """Text attends to tab, then tab attends to the updated text, each with residual + LayerNorm.

    X̃ = LN(X + MHA(q=X, k=A, v=A)); Ã = LN(A + MHA(q=A, k=X̃, v=X̃)), X, A: `B×1×H`.

    With a single key per side the attention softmax is always exactly 1, so the output is
    `out_proj(v_proj(key))` and the query/key projections never receive a gradient. This is the design's
    behaviour, kept for parity; a token-level cross-attention is the better choice.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.text2tab = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.tab2text = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.text_norm = nn.LayerNorm(dim)
        self.tab_norm = nn.LayerNorm(dim)

    def forward(self, text: torch.Tensor, tab: torch.Tensor):
        x, a = text.unsqueeze(1), tab.unsqueeze(1)
        u_t, attn_text = self.text2tab(x, a, a, need_weights=True)
        x_new = self.text_norm(x + u_t)
        u_a, attn_tab = self.tab2text(a, x_new, x_new, need_weights=True)
        a_new = self.tab_norm(a + u_a)
        return x_new.squeeze(1), a_new.squeeze(1), attn_text.squeeze(1).squeeze(-1), attn_tab.squeeze(1).squeeze(-1)


@register_fusion("cross_attn")
class CrossAttentionFusion(Fusion):
    """`cross_att` then `final_merge_network: Linear(2H→H) → ReLU → Dropout → Linear(H→classes)`.

    `details` holds both attention weights (always 1 with one token per side). After the cross-attention each
    half already mixes both modalities, so neither half is "the text's part" of the decision.
    """

    def __init__(self, dims: FusionDims):
        super().__init__(dims)
        if dims.text_dim != dims.tab_dim:
            raise ValueError("cross_attn needs equal text and tabular embedding sizes (model.hidden_dim)")
        width = dims.text_dim
        self.cross_att = BidirectionalCrossAttention(width, dims.num_heads)
        self.final_merge_network = nn.Sequential(
            nn.Linear(2 * width, width), nn.ReLU(), nn.Dropout(dims.dropout), nn.Linear(width, dims.num_classes)
        )

    def forward(self, text: torch.Tensor, tab: torch.Tensor) -> FusionOutput:
        text_new, tab_new, attn_text, attn_tab = self.cross_att(text, tab)
        logits = self.final_merge_network(torch.cat([text_new, tab_new], dim=1))
        return FusionOutput(logits=logits, details={"text2tab_attention": attn_text, "tab2text_attention": attn_tab})
