"""Tabular encoders, chosen by `model.tab_encoder` through `build_tab_encoder`.

* `plr` (default, `PLRTabularEncoder`): every numeric column gets its own periodic embedding
  (Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning", PLR:
  x → [sin(2π c x), cos(2π c x)] with trainable frequencies c, then a per-column Linear → ReLU), every
  categorical column an embedding table; everything is flattened and an MLP maps it to H. Distinct values of
  one column stay distinct, and thresholds, bands and interactions are easy to fit.
* `design` (`TabularEncoder`): the design note's `LayerNorm → Linear(input_tab_dim→H) → ReLU`, kept for parity
  with its parameter tables. Its LayerNorm normalises across the features of ONE row, so with one numeric
  column every row maps to the same output and with two only the sign of their difference survives.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..data.tabular import UNKNOWN_ID

TAB_ENCODERS = ("plr", "design")
FIRST_KNOWN_ID = UNKNOWN_ID + 1  # ids 0 (missing) and 1 (unknown) are reserved; known values start here


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


class CategoryIdDropout(nn.Module):
    """In training mode, replace each KNOWN categorical id (≥ 2) by the unknown id (1) with probability `p`.

    `B×Dc` int64 → `B×Dc` int64. The unknown row thus keeps learning what "a value we know nothing about" means,
    and the model cannot lean on any single category. Missing ids (0) stay missing: missingness is information.
    Draws from torch's global generator, so a run is deterministic under `torch.manual_seed` (training re-seeds it
    every step). In eval mode it is the identity.
    """

    def __init__(self, p: float = 0.05):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"category id dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or ids.numel() == 0:
            return ids
        dropped = (torch.rand(ids.shape, device=ids.device) < self.p) & (ids >= FIRST_KNOWN_ID)
        return ids.masked_fill(dropped, UNKNOWN_ID)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PeriodicNumericEmbeddings(nn.Module):
    """PLR embeddings: `B×Dn` → `B×Dn×d`, one embedding per numeric column.

    Per column j: x → v = [sin(2π c_j x), cos(2π c_j x)] (`K` trainable frequencies c_j, initialised from
    N(0, σ²)) → ReLU(v W_j + b_j) with its own `W_j: 2K×d` (the paper's non-lite PLR). The inputs are the
    preprocessor's standardised numerics (clipped to ±clip); σ sets the initial resolution in standard deviations.
    """

    def __init__(self, num_columns: int, embedding_dim: int = 16, num_frequencies: int = 16, sigma: float = 0.5):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(num_columns, num_frequencies) * sigma)  # Dn×K
        bound = 1.0 / math.sqrt(2 * num_frequencies)  # nn.Linear's default init for fan_in 2K
        self.weight = nn.Parameter(torch.empty(num_columns, 2 * num_frequencies, embedding_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_columns, embedding_dim).uniform_(-bound, bound))
        self.embedding_dim = embedding_dim

    def forward(self, numeric: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * self.frequencies * numeric.unsqueeze(-1)  # B×Dn×K
        periodic = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # B×Dn×2K
        return torch.relu(torch.einsum("bjk,jkd->bjd", periodic, self.weight) + self.bias)  # B×Dn×d


class PLRTabularEncoder(nn.Module):
    """`numeric B×Dn` and `categorical B×Dc` → `B×H` (the default, `model.tab_encoder: plr`).

    numerics → `PeriodicNumericEmbeddings` (B×Dn×d, flattened to B×(Dn·d)); categoricals → id dropout →
    one `nn.Embedding` per column (B×e_j); concatenated (B×input_dim) → Linear(input_dim→H) → ReLU → Dropout →
    Linear(H→H) → ReLU.

    The preprocessor's missing-indicator columns (0/1, after the scaled numerics) are embedded like every other
    numeric column: a periodic embedding of a binary input is simply two learned vectors, i.e. a 2-row embedding
    table, so no special case (and no extra constructor argument) is needed.
    """

    def __init__(self, numeric_dim: int, cardinalities: list[int], hidden_dim: int, *,
                 categorical_embedding_dim: int | None = None, numeric_embedding_dim: int = 16,
                 num_frequencies: int = 16, sigma: float = 0.5, dropout: float = 0.1, category_dropout: float = 0.05):
        super().__init__()
        if numeric_dim + len(cardinalities) == 0:
            raise ValueError("the tabular encoder needs at least one data.numeric or data.categorical column")
        self.numeric_dim = numeric_dim
        self.numeric_embeddings = (PeriodicNumericEmbeddings(numeric_dim, numeric_embedding_dim, num_frequencies, sigma)
                                   if numeric_dim else None)
        dims = [categorical_embedding_dim or embedding_dim_for(card) for card in cardinalities]
        self.category_dropout = CategoryIdDropout(category_dropout)
        self.embeddings = nn.ModuleList(nn.Embedding(card, dim) for card, dim in zip(cardinalities, dims))
        self.input_dim = numeric_dim * numeric_embedding_dim + sum(dims)
        self.mlp = nn.Sequential(
            nn.Linear(self.input_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.output_dim = hidden_dim

    def combine(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """`B×input_dim`: flattened numeric embeddings, then the categorical embeddings."""
        parts = [self.numeric_embeddings(numeric).flatten(1)] if self.numeric_embeddings is not None else []
        if len(self.embeddings):
            ids = self.category_dropout(categorical)
            parts += [emb(ids[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.combine(numeric, categorical))


def build_tab_encoder(kind: str, numeric_dim: int, cardinalities: list[int], hidden_dim: int, *,
                      categorical_embedding_dim: int | None = None, dropout: float = 0.1) -> nn.Module:
    """The tabular encoder named by `model.tab_encoder` (`plr` or `design`); both map `B×Dn, B×Dc` → `B×H`."""
    if kind == "plr":
        return PLRTabularEncoder(numeric_dim, cardinalities, hidden_dim,
                                 categorical_embedding_dim=categorical_embedding_dim, dropout=dropout)
    if kind == "design":
        return TabularEncoder(numeric_dim, cardinalities, hidden_dim, categorical_embedding_dim)
    raise ValueError(f"unknown model.tab_encoder '{kind}'; use one of {', '.join(TAB_ENCODERS)}")
