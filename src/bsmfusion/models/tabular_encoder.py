"""Tabular encoder: the design's `LayerNorm → Linear(input_tab_dim→H) → ReLU` over numerics + embeddings."""
from __future__ import annotations

import torch
from torch import nn


def embedding_dim_for(cardinality: int, cap: int = 16) -> int:
    """Embedding size for a categorical column (fastai's rule of thumb, capped)."""
    return max(2, min(cap, round(1.6 * cardinality ** 0.56)))


class TabularEncoder(nn.Module):
    """`numeric B×Dn` and `categorical B×Dc` → `B×H`.

    input_tab_dim = Dn (scaled numerics + missing indicators) + the summed embedding sizes of the categoricals;
    the embeddings are concatenated with the numerics before the LayerNorm.
    """

    def __init__(self, numeric_dim: int, cardinalities: list[int], hidden_dim: int,
                 embedding_dim: int | None = None):
        super().__init__()
        dims = [embedding_dim or embedding_dim_for(card) for card in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(card, dim) for card, dim in zip(cardinalities, dims))
        self.input_dim = numeric_dim + sum(dims)
        if self.input_dim == 0:
            raise ValueError("the tabular encoder needs at least one data.numeric or data.categorical column")
        self.numeric_dim = numeric_dim
        self.norm = nn.LayerNorm(self.input_dim)
        self.linear = nn.Linear(self.input_dim, hidden_dim)
        self.activation = nn.ReLU()
        self.output_dim = hidden_dim

    def combine(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """The design's `combine_tab_data`: `B×input_tab_dim`."""
        parts = [numeric] if self.numeric_dim else []
        parts += [emb(categorical[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(self.norm(self.combine(numeric, categorical))))
