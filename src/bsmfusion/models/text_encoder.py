"""Chunked dialogue encoder: BERT over `B×C×T` token ids → one `B×H` vector per thread."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .backbone import backbone_hidden_size


class ChunkAttentionPool(nn.Module):
    """Learned, order- and position-aware attention over the REAL chunks of each thread: `B×C×D` → `B×D`.

    Each chunk vector gets two learned position embeddings added before scoring: its index from the thread's first
    chunk and its distance from the thread's last real chunk (both clamped to `max_positions − 1`). So the first
    chunk (index 0), the last chunk (distance 0) and how far a chunk is from the end are all visible to the scorer,
    whatever the thread's length. A small additive-attention scorer (LayerNorm → Linear → tanh → Linear) gives one
    score per chunk; a softmax over the real chunks only (padding slots get weight exactly 0) turns them into
    weights, and the thread vector is the weighted sum of the chunk vectors themselves.

    * The positions only steer the weights; the output stays a convex combination of chunk vectors, i.e. in the
      same space as ``masked_mean`` (which it equals when the scores are equal), so the projection and the fusions
      see the same kind of input whichever reduce is chosen.
    * No separate last-chunk path (concatenating or adding the last chunk's vector): the distance-from-end
      embedding already lets the scorer single out the last chunk (where a thread's resolution usually is), and
      a concatenation would double the thread vector's width for this reduce only (projection, frozen cache,
      ONNX graph and summary all assume `D`).
    * Batch-invariant: scores are computed per chunk, positions come from the sample's own chunk mask, and padding
      slots contribute exact zeros, so a thread's vector does not depend on its batch neighbours.
    * The LayerNorm before scoring makes the initial scores independent of the backbone's output scale (pooler
      outputs are in [-1, 1], mean-pooled MiniLM states are much smaller).
    """

    def __init__(self, chunk_dim: int, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.index_from_start = nn.Embedding(max_positions, chunk_dim)
        self.distance_from_end = nn.Embedding(max_positions, chunk_dim)
        nn.init.normal_(self.index_from_start.weight, std=0.02)
        nn.init.normal_(self.distance_from_end.weight, std=0.02)
        self.score_norm = nn.LayerNorm(chunk_dim)
        self.score_hidden = nn.Linear(chunk_dim, chunk_dim)
        self.score_out = nn.Linear(chunk_dim, 1, bias=False)  # a shared score offset cancels in the softmax

    def chunk_positions(self, chunk_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`B×C` bool → (index from the first real chunk, distance from the last real chunk), both `B×C` int64,
        clamped to `[0, max_positions − 1]`; values at padding slots are irrelevant (their weight is 0)."""
        real = chunk_mask.long()
        index = real.cumsum(dim=1) - 1
        distance = real.sum(dim=1, keepdim=True) - 1 - index
        top = self.max_positions - 1
        return index.clamp(0, top), distance.clamp(0, top)

    def forward(self, chunk_vectors: torch.Tensor, chunk_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`B×C×D` chunk vectors, `B×C` bool mask → (`B×D` thread vectors, `B×C` weights summing to 1 over the
        real chunks, 0 on padding)."""
        keep = chunk_mask.unsqueeze(-1)
        values = torch.where(keep, chunk_vectors, torch.zeros_like(chunk_vectors))  # plain-mode padding → exact 0
        index, distance = self.chunk_positions(chunk_mask)
        positions = self.index_from_start(index) + self.distance_from_end(distance)
        positioned = values + positions.to(values.dtype)
        hidden = torch.tanh(self.score_hidden(self.score_norm(positioned)))
        scores = self.score_out(hidden).squeeze(-1).float()
        scores = scores.masked_fill(~chunk_mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * chunk_mask.to(scores.dtype)  # a row without real chunks → all 0
        thread = (weights.to(values.dtype).unsqueeze(-1) * values).sum(dim=1)
        return thread, weights


# model types laid out as BERT is (embeddings; layers called as layer(hidden, mask); BERT's key mask): MiniLM and
# the tests' tiny BERT are `bert`
BERT_LIKE = frozenset({"bert", "roberta", "xlm-roberta", "electra"})


class TextEncoder(nn.Module):
    """Encode each chunk with the backbone, pool it, reduce over chunks, project to H.

    * `pooling`: ``pooler`` (the design: BERT's pooler_output), ``cls`` (last hidden state of [CLS]) or
      ``mean`` (masked mean over tokens).
    * `chunk_reduce`: ``masked_mean`` averages the real chunks of each sample only, so a sample's vector does
      not depend on its batch neighbours; ``padded_mean`` is the design's plain mean over all C slots,
      padding chunks included (kept for faithfulness; it forces the plain encode path); ``attention`` is a
      learned, position-aware attention over the real chunks (`ChunkAttentionPool`, batch-invariant too).
    * `encode`: ``plain`` runs the backbone on all `(B·C)×T` slots as the design does; ``packed`` gathers the
      real chunks into one `N_real×T_dyn` tensor (T_dyn = longest real chunk), runs the backbone once and
      scatters the chunk vectors back. Both give the same result (within 1e-5) for ``masked_mean`` and
      ``attention``.
    """

    def __init__(self, backbone: nn.Module, hidden_dim: int, *, pooling: str = "pooler",
                 chunk_reduce: str = "masked_mean", encode: str = "packed", dropout: float = 0.1,
                 max_chunks: int = 64):
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
        chunk_dim = backbone_hidden_size(backbone)
        # `max_chunks` (C) sizes the chunk-position tables of the attention reduce; other reduces ignore it.
        self.chunk_attention = ChunkAttentionPool(chunk_dim, max_chunks) if chunk_reduce == "attention" else None
        self.projection = nn.Linear(chunk_dim, hidden_dim)
        self.output_dim = hidden_dim
        self.frozen_layers = 0  # `freeze_lower_layers`: the embeddings and this many lowest layers train not

    @property
    def chunk_dim(self) -> int:
        """Size of one pooled chunk vector (the backbone's hidden size)."""
        return self.projection.in_features

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`N×T` → `N×D` chunk vectors."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return self._pool_hidden(out.last_hidden_state, attention_mask, out.pooler_output)

    def _pool_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                     pooler_output: torch.Tensor | None = None) -> torch.Tensor:
        """`N×T×D` last hidden states → `N×D` chunk vectors (`pooling`; ``pooler`` runs the pooler when the
        backbone's output is not given)."""
        if self.pooling == "pooler":
            return pooler_output if pooler_output is not None else self.backbone.pooler(hidden)
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def _layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
        """`N×T×D` through the backbone's transformer `layers`, with `N×T` `attention_mask` as BERT masks keys."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
        return hidden

    def frozen_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`N×T` token ids and mask of N real chunks → `N×T×D`: the frozen embeddings and lowest `frozen_layers`
        layers' output (what the trained layers above read; a fixed function of the tokens, computed once per
        chunk when training caches it)."""
        hidden = self.backbone.embeddings(input_ids=input_ids)
        return self._layers(hidden, attention_mask, self.backbone.encoder.layer[:self.frozen_layers])

    def pool_from_frozen(self, frozen_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`N×T×D` frozen-layer states and `N×T` mask of N real chunks → `N×D` chunk vectors: the layers above
        the frozen ones, then the pooling; equals `pool_chunks` on the chunks' tokens."""
        hidden = self._layers(frozen_hidden, attention_mask, self.backbone.encoder.layer[self.frozen_layers:])
        return self._pool_hidden(hidden, attention_mask)

    def pool_chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`N×T` token ids and mask of N real chunks → `N×D` chunk vectors (backbone + pooling, before the chunk
        reduce): what `encode_chunks` computes for each real chunk. The chunk vector cache
        (`scoring.chunk_cache`) encodes only the chunks it has not seen through this."""
        return self._pool(input_ids, attention_mask)

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
        real, real_mask = self.real_chunks(flat_mask, chunk_mask)
        pooled_real = self._pool(flat_ids[real, :real_mask.shape[1]], real_mask)
        return self._scatter(pooled_real, real, batch, chunks)

    def encode_chunks_from_frozen(self, frozen_hidden: torch.Tensor, attention_mask: torch.Tensor,
                                  chunk_mask: torch.Tensor) -> torch.Tensor:
        """`encode_chunks` from the frozen layers' output (`N_real×T×D`, `Batch.frozen_hidden`) instead of the
        token ids: `B×C×D` chunk vectors, padding rows zero (packed mode)."""
        batch, chunks, tokens = attention_mask.shape
        real, real_mask = self.real_chunks(attention_mask.reshape(batch * chunks, tokens), chunk_mask)
        pooled_real = self.pool_from_frozen(frozen_hidden[:, :real_mask.shape[1]], real_mask)
        return self._scatter(pooled_real, real, batch, chunks)

    @staticmethod
    def real_chunks(flat_mask: torch.Tensor, chunk_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions of the real chunks among the `B·C` slots, their `N_real×T_dyn` token mask: T_dyn = the
        longest real chunk)."""
        real = chunk_mask.reshape(-1).nonzero(as_tuple=True)[0]
        real_mask = flat_mask[real]
        length = int(real_mask.sum(1).max().item()) if real.numel() else 1
        return real, real_mask[:, :length]

    @staticmethod
    def _scatter(pooled_real: torch.Tensor, real: torch.Tensor, batch: int, chunks: int) -> torch.Tensor:
        """`N_real×D` vectors of the real chunks → `B×C×D`, zero at padding slots."""
        pooled = pooled_real.new_zeros(batch * chunks, pooled_real.shape[-1])
        return pooled.index_copy(0, real, pooled_real).reshape(batch, chunks, -1)

    def freeze_lower_layers(self, layers: int) -> None:
        """Stop training the backbone's embeddings and its lowest `layers` transformer layers (`train.freeze_layers`):
        they keep their weights and run without dropout (in eval mode whatever `train()` says, so they compute a
        fixed function of the tokens), and the backward pass ends at the first layer that trains. 0 freezes
        nothing."""
        if not layers:
            return
        if not self.runs_by_layer:
            raise ConfigError(f"train.freeze_layers {layers}: the encoder "
                              f"({getattr(self.backbone.config, 'model_type', '?')}) has no BERT-style layer stack "
                              "to freeze; set train.freeze_layers: 0")
        stack = self.backbone.encoder.layer
        if layers > len(stack):
            raise ConfigError(f"train.freeze_layers {layers}: the encoder has {len(stack)} transformer layers; "
                              f"set it to 0..{len(stack)}")
        self.frozen_layers = layers
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    @property
    def runs_by_layer(self) -> bool:
        """True for the BERT-style encoders (`BERT_LIKE` model types: embeddings, then `encoder.layer[i](hidden,
        mask)`) whose lower layers can be frozen and run apart from the upper ones."""
        return getattr(self.backbone.config, "model_type", None) in BERT_LIKE and hasattr(self.backbone, "encoder")

    def frozen_modules(self) -> list[nn.Module]:
        """The backbone's embeddings and lowest `frozen_layers` layers (none when nothing is frozen)."""
        if not self.frozen_layers:
            return []
        return [self.backbone.embeddings, *self.backbone.encoder.layer[:self.frozen_layers]]

    def train(self, mode: bool = True) -> "TextEncoder":
        """`nn.Module.train`, the frozen layers left in eval mode (Lightning and `model.train()` call this)."""
        super().train(mode)
        for module in self.frozen_modules():  # frozen layers never drop out
            module.eval()
        return self

    @property
    def reduce_is_learned(self) -> bool:
        """True when the chunk reduce has parameters (``attention``): a frozen encoder must then cache chunk
        vectors, not thread vectors."""
        return self.chunk_attention is not None

    def reduce_chunks(self, chunk_vectors: torch.Tensor, chunk_mask: torch.Tensor) -> torch.Tensor:
        """`B×C×D` → `B×D` (masked mean, the design's padded mean, or learned attention)."""
        return self.reduce_chunks_with_weights(chunk_vectors, chunk_mask)[0]

    def reduce_chunks_with_weights(self, chunk_vectors: torch.Tensor,
                                   chunk_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`B×C×D` → (`B×D` thread vectors, `B×C` float32 weight of each chunk slot in its thread vector).

        ``attention``: the learned attention weights; ``masked_mean``: 1/n on the n real chunks; ``padded_mean``:
        1/C on every slot, padding included.
        """
        if self.chunk_attention is not None:
            return self.chunk_attention(chunk_vectors, chunk_mask)
        if self.chunk_reduce == "padded_mean":
            weights = torch.full(chunk_mask.shape, 1.0 / chunk_mask.shape[1], device=chunk_mask.device)
            return chunk_vectors.mean(dim=1), weights
        keep = chunk_mask.unsqueeze(-1)
        summed = torch.where(keep, chunk_vectors, torch.zeros_like(chunk_vectors)).sum(dim=1)
        count = chunk_mask.sum(dim=1, keepdim=True).clamp_min(1)
        weights = chunk_mask.float() / count.float()
        return summed / count.to(summed.dtype), weights

    def project(self, thread_vectors: torch.Tensor) -> torch.Tensor:
        """`B×D` → `B×H`: Dropout + Linear, the design's text head."""
        return self.projection(self.dropout(thread_vectors))

    def encode_with_chunk_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                  chunk_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`B×C×T` → (`B×H` text vectors, `B×C` weight of each chunk in its thread vector; see
        `reduce_chunks_with_weights`), for reporting which part of a thread the model looked at."""
        chunk_vectors = self.encode_chunks(input_ids, attention_mask, chunk_mask)
        thread_vectors, weights = self.reduce_chunks_with_weights(chunk_vectors, chunk_mask)
        return self.project(thread_vectors), weights

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                chunk_mask: torch.Tensor) -> torch.Tensor:
        chunk_vectors = self.encode_chunks(input_ids, attention_mask, chunk_mask)
        return self.project(self.reduce_chunks(chunk_vectors, chunk_mask))

    def forward_from_frozen(self, frozen_hidden: torch.Tensor, attention_mask: torch.Tensor,
                            chunk_mask: torch.Tensor) -> torch.Tensor:
        """`forward` from the frozen layers' output (`Batch.frozen_hidden`): `B×H`."""
        chunk_vectors = self.encode_chunks_from_frozen(frozen_hidden, attention_mask, chunk_mask)
        return self.project(self.reduce_chunks(chunk_vectors, chunk_mask))
