"""Chunked dialogue encoder: BERT over `B×C×T` token ids → one `B×H` vector per thread."""
from __future__ import annotations

import torch
from torch import nn

from .backbone import backbone_hidden_size


class TextEncoder(nn.Module):
    """Encode each chunk with the backbone, pool it, reduce over chunks, project to H.

    * `pooling`: ``pooler`` (the design: BERT's pooler_output), ``cls`` (last hidden state of [CLS]) or
      ``mean`` (masked mean over tokens).
    * `chunk_reduce`: ``masked_mean`` averages the real chunks of each sample only, so a sample's vector does
      not depend on its batch neighbours; ``padded_mean`` is the design's plain mean over all C slots,
      padding chunks included (kept for faithfulness; it forces the plain encode path).
    * `encode`: ``plain`` runs the backbone on all `(B·C)×T` slots as the design does; ``packed`` gathers the
      real chunks into one `N_real×T_dyn` tensor (T_dyn = longest real chunk), runs the backbone once and
      scatters the chunk vectors back. Both give the same result for ``masked_mean``.
    """

    def __init__(self, backbone: nn.Module, hidden_dim: int, *, pooling: str = "pooler",
                 chunk_reduce: str = "masked_mean", encode: str = "packed", dropout: float = 0.1):
        super().__init__()
        if pooling == "pooler" and getattr(backbone, "pooler", None) is None:
            raise ValueError("text.pooling 'pooler' needs an encoder with a pooler layer; use 'cls' or 'mean'")
        if pooling != "pooler" and getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # unused: drop it so DDP sees no parameters without gradients
        self.backbone = backbone
        self.pooling = pooling
        self.chunk_reduce = chunk_reduce
        self.encode_mode = "plain" if chunk_reduce == "padded_mean" else encode
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(backbone_hidden_size(backbone), hidden_dim)
        self.output_dim = hidden_dim

    @property
    def chunk_dim(self) -> int:
        """Size of one pooled chunk vector (the backbone's hidden size)."""
        return self.projection.in_features

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`N×T` → `N×D` chunk vectors."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def encode_chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      chunk_mask: torch.Tensor) -> torch.Tensor:
        """`B×C×T` → `B×C×D` chunk vectors; rows of padding chunks are zero in packed mode."""
        batch, chunks, tokens = input_ids.shape
        flat_ids = input_ids.reshape(batch * chunks, tokens)
        flat_mask = attention_mask.reshape(batch * chunks, tokens)
        if self.encode_mode == "plain":
            # A padding chunk attends to its first (pad) token so the backbone never sees an all-masked row (NaN).
            safe_mask = flat_mask.clone()
            safe_mask[:, 0] = 1
            pooled = self._pool(flat_ids, safe_mask)
            return pooled.reshape(batch, chunks, -1)
        real = chunk_mask.reshape(-1).nonzero(as_tuple=True)[0]
        real_mask = flat_mask[real]
        length = int(real_mask.sum(1).max().item()) if real.numel() else 1
        pooled_real = self._pool(flat_ids[real, :length], real_mask[:, :length])
        pooled = pooled_real.new_zeros(batch * chunks, pooled_real.shape[-1])
        pooled = pooled.index_copy(0, real, pooled_real)
        return pooled.reshape(batch, chunks, -1)

    def reduce_chunks(self, chunk_vectors: torch.Tensor, chunk_mask: torch.Tensor) -> torch.Tensor:
        """`B×C×D` → `B×D` (masked or the design's padded mean)."""
        if self.chunk_reduce == "padded_mean":
            return chunk_vectors.mean(dim=1)
        keep = chunk_mask.unsqueeze(-1)
        summed = torch.where(keep, chunk_vectors, torch.zeros_like(chunk_vectors)).sum(dim=1)
        return summed / chunk_mask.sum(dim=1, keepdim=True).clamp_min(1).to(summed.dtype)

    def project(self, thread_vectors: torch.Tensor) -> torch.Tensor:
        """`B×D` → `B×H`: Dropout + Linear, the design's text head."""
        return self.projection(self.dropout(thread_vectors))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                chunk_mask: torch.Tensor) -> torch.Tensor:
        chunk_vectors = self.encode_chunks(input_ids, attention_mask, chunk_mask)
        return self.project(self.reduce_chunks(chunk_vectors, chunk_mask))
