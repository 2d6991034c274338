"""Encoded dataset (tokenised once) and the collate function that builds `B×C×T` batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .batch import Batch
from .chunking import ChunkedThread


@dataclass
class EncodedTable:
    """A table after preprocessing: chunked threads, tabular arrays, optional labels, row ids."""

    threads: list[ChunkedThread] | None  # None: the model reads no text (tab_only), nothing was tokenised
    numeric: np.ndarray  # N×Dn float32
    categorical: np.ndarray  # N×Dc int64
    labels: np.ndarray | None  # N int64
    ids: list[Any]
    thread_vectors: np.ndarray | None = None  # N×D, set by the frozen-encoder path (parameter-free chunk reduce)
    chunk_vectors: np.ndarray | None = None  # N×C×D, set by the frozen-encoder path when the chunk reduce is learned
    chunk_vector_mask: np.ndarray | None = None  # N×C bool, True for real chunks (goes with chunk_vectors)
    # per row, per real chunk: `T_i×D` float32, the encoder's frozen lower layers at the chunk's T_i tokens; set
    # while training with train.freeze_layers (`training.frozen_layers`)
    frozen_states: list[list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.threads) if self.threads is not None else len(self.ids)

    def token_counts(self) -> np.ndarray:
        """Tokens per row (all chunks): the key for length bucketing (all 0 without text)."""
        if self.threads is None:
            return np.zeros(len(self), dtype=np.int64)
        return np.array([t.num_tokens for t in self.threads], dtype=np.int64)


class EncodedDataset(Dataset):
    """Map-style dataset over an `EncodedTable`; items carry their row position for order restoration."""

    def __init__(self, table: EncodedTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.table
        return {
            "index": i,
            "chunks": None if t.threads is None else t.threads[i].chunks,
            "empty": True if t.threads is None else t.threads[i].empty,
            "numeric": t.numeric[i],
            "categorical": t.categorical[i],
            "label": None if t.labels is None else int(t.labels[i]),
            "thread_vector": None if t.thread_vectors is None else t.thread_vectors[i],
            "chunk_vectors": None if t.chunk_vectors is None else t.chunk_vectors[i],
            "chunk_vector_mask": None if t.chunk_vector_mask is None else t.chunk_vector_mask[i],
            "frozen_states": None if t.frozen_states is None else t.frozen_states[i],
        }


class Collator:
    """Pads a list of items to a `Batch` of `B×C_b×T_b` (batch maxima) — or of the full `B×C×T` of the design when
    `pad_to_max`. Items with cached thread or chunk vectors (the frozen encoder) give batches of those instead of
    token ids; items without text (tab_only) give tabular tensors only."""

    def __init__(self, pad_token_id: int, max_chunks: int, chunk_tokens: int, pad_to_max: bool = False):
        self.pad_token_id = pad_token_id
        self.max_chunks = max_chunks
        self.chunk_tokens = chunk_tokens
        self.pad_to_max = pad_to_max

    @classmethod
    def for_text(cls, text_cfg, pad_token_id: int | None, *, pad_to_max: bool = False) -> "Collator":
        """The collator for a config's `text` section (`max_chunks`, `chunk_tokens`) and a tokenizer's pad id."""
        return cls(int(pad_token_id or 0), text_cfg.max_chunks, text_cfg.chunk_tokens, pad_to_max=pad_to_max)

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        if items[0].get("thread_vector") is not None:
            return self._with_thread_vectors(items)
        if items[0].get("chunk_vectors") is not None:
            return self._with_chunk_vectors(items)
        if items[0]["chunks"] is None:  # a table without text (tab_only): tabular tensors only
            return self._batch({}, items)
        batch = len(items)
        if self.pad_to_max:
            chunks, tokens = self.max_chunks, self.chunk_tokens
        else:
            chunks = max(len(item["chunks"]) for item in items)
            tokens = max(len(c) for item in items for c in item["chunks"])
        input_ids = torch.full((batch, chunks, tokens), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, chunks, tokens), dtype=torch.long)
        chunk_mask = torch.zeros((batch, chunks), dtype=torch.bool)
        for b, item in enumerate(items):
            for c, ids in enumerate(item["chunks"]):
                input_ids[b, c, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
                attention_mask[b, c, : len(ids)] = 1
                chunk_mask[b, c] = True
        text = {"input_ids": input_ids, "attention_mask": attention_mask, "chunk_mask": chunk_mask,
                "text_empty": torch.tensor([bool(item["empty"]) for item in items])}
        if items[0].get("frozen_states") is not None:
            text["frozen_hidden"] = self._frozen_hidden(items)
        return self._batch(text, items)

    @staticmethod
    def _frozen_hidden(items: list[dict[str, Any]]) -> torch.Tensor:
        """`N_real×T_dyn×D` (T_dyn: the longest real chunk): each real chunk's frozen-layer states, in chunk_mask
        order (row by row), zero-padded."""
        states = [chunk for item in items for chunk in item["frozen_states"]]
        width = states[0].shape[1] if states else 0
        out = np.zeros((len(states), max((len(c) for c in states), default=1), width), dtype=np.float32)
        for i, chunk in enumerate(states):
            out[i, : len(chunk)] = chunk
        return torch.from_numpy(out)

    @staticmethod
    def _batch(text: dict[str, torch.Tensor], items: list[dict[str, Any]]) -> Batch:
        """The `Batch`: `text` (its text fields) plus the tabular tensors, row positions and labels."""
        labels = None
        if items[0]["label"] is not None:
            labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
        return Batch(numeric=torch.from_numpy(np.stack([item["numeric"] for item in items]).astype(np.float32)),
                     categorical=torch.from_numpy(np.stack([item["categorical"] for item in items]).astype(np.int64)),
                     index=torch.tensor([item["index"] for item in items], dtype=torch.long), labels=labels, **text)

    def _with_thread_vectors(self, items: list[dict[str, Any]]) -> Batch:
        """Frozen-encoder batches: precomputed `B×D` thread vectors instead of token ids."""
        vectors = torch.from_numpy(np.stack([item["thread_vector"] for item in items]).astype(np.float32))
        return self._batch({"thread_vectors": vectors}, items)

    def _with_chunk_vectors(self, items: list[dict[str, Any]]) -> Batch:
        """Frozen-encoder batches for a learned chunk reduce: precomputed `B×C_b×D` chunk vectors and the `B×C_b`
        chunk mask (C_b = the batch's most real chunks), instead of token ids."""
        mask = np.stack([item["chunk_vector_mask"] for item in items]).astype(bool)
        width = max(1, int(mask.any(axis=0).nonzero()[0].max(initial=0)) + 1)
        vectors = np.stack([item["chunk_vectors"][:width] for item in items]).astype(np.float32)
        text = {"chunk_vectors": torch.from_numpy(vectors), "chunk_mask": torch.from_numpy(mask[:, :width].copy())}
        return self._batch(text, items)
