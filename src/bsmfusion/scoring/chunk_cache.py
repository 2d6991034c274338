"""Chunk-vector cache: re-scoring a growing thread encodes only the chunks that changed.

A live thread is scored again every time a message arrives. Chunk boundaries are stable under appending
(`data.chunking.ChunkPacker.chunk_bodies`: greedy packing from the thread's first message), so each new request
shares all its chunks but about one with the previous request of the same thread. This module keeps the encoder's
per-chunk output (the `D` vector of one chunk after the backbone and pooling, before the chunk reduce) in an LRU
cache and runs the encoder on the chunks it has not seen only.

* `ChunkVectorCache` — a thread-safe LRU of `D` vectors, bounded in MB, keyed by (namespace, chunk token ids).
  The namespace (`cache_namespace`) is the bundle's digest (SHA-256 of its manifest, which lists the SHA-256 of
  every file: weights, config, tokenizer), the precision that computed the vector (bf16 and fp32 vectors differ)
  and the device type, so one cache can serve several bundles or precisions without mixing them.
* `CachedChunkModel` — wraps a `MultimodalClassifier`: for each batch it looks the real chunks up, encodes the
  missing ones in one `N_miss×T_dyn` backbone call (each distinct chunk once), and hands the `B×C×D` chunk
  vectors to the model's chunk reduce, projection and fusion (the path a frozen encoder's cached vectors take).

In fp32 a chunk's vector does not depend on the chunks it is encoded with, so scores with and without the cache
agree to ~1e-7 (tested to 1e-6). In bf16 they differ by the batch dependence bf16 always has (docs/performance.md).
Only the torch engine caches: the ONNX graph runs encoder and fusion in one call. Memory is counted as the vectors'
bytes plus the keys' bytes plus a fixed per-entry overhead (`ENTRY_OVERHEAD_BYTES`), an estimate of Python's and
torch's bookkeeping.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.batch import Batch, TextForm

# Python and torch bookkeeping per entry besides the vector and key bytes: the tensor object and its storage,
# the key's bytes and tuple objects, the ordered dict's slot. Measured: 50,000 MiniLM entries (384 fp32, 126-token
# keys) grew the process by 3.2 KB each, of which 1.5 KB vector and 0.5 KB key.
ENTRY_OVERHEAD_BYTES = 1200


class ChunkVectorCache:
    """Thread-safe LRU cache of chunk vectors (`D` tensors), at most `max_mb` MB (10⁶ bytes); 0 keeps nothing.

    Keys are hashable (`CachedChunkModel` uses `(namespace, int32 token id bytes)`). `get_many` refreshes what it
    finds; `put_many` evicts the least recently used entries once the size passes the limit. `stats()` counts
    lookups, hits, misses, chunks encoded and evictions since creation (or `reset_stats`).
    """

    def __init__(self, max_mb: float):
        if not max_mb >= 0:
            raise ValueError(f"chunk cache size must be >= 0 MB (0 turns the cache off), got {max_mb}")
        self.max_bytes = int(max_mb * 1_000_000)
        self._entries: OrderedDict[Hashable, tuple[torch.Tensor, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("lookups", "hits", "misses", "encoded", "evictions"), 0)

    @staticmethod
    def entry_bytes(key: Hashable, vector: torch.Tensor) -> int:
        """The bytes one entry is counted as: vector + key payload + `ENTRY_OVERHEAD_BYTES`."""
        payload = key[-1] if isinstance(key, tuple) else key
        key_bytes = len(payload) if isinstance(payload, (bytes, str)) else 64
        return vector.numel() * vector.element_size() + key_bytes + ENTRY_OVERHEAD_BYTES

    def get_many(self, keys: Sequence[Hashable]) -> list[torch.Tensor | None]:
        """The cached vector of each key (None where absent); found entries become the most recently used."""
        out: list[torch.Tensor | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    out.append(None)
                    continue
                self._entries.move_to_end(key)
                out.append(entry[0])
            hits = sum(v is not None for v in out)
            self._counts["lookups"] += len(keys)
            self._counts["hits"] += hits
            self._counts["misses"] += len(keys) - hits
        return out

    def put_many(self, keys: Sequence[Hashable], vectors: Sequence[torch.Tensor]) -> None:
        """Store `vectors[i]` (`D`, owning its storage) under `keys[i]`, then evict down to the size limit. An
        entry larger than the whole cache is not stored."""
        with self._lock:
            for key, vector in zip(keys, vectors):
                size = self.entry_bytes(key, vector)
                if size > self.max_bytes:
                    continue
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= old[1]
                self._entries[key] = (vector, size)
                self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size
                self._counts["evictions"] += 1

    def count_encoded(self, n: int) -> None:
        """Record that `n` chunks went through the encoder (misses, each distinct chunk of a batch once)."""
        with self._lock:
            self._counts["encoded"] += n

    def stats(self) -> dict[str, Any]:
        """Counters and size: lookups, hits, misses, encoded (chunks run through the encoder), evictions,
        hit_rate, entries, bytes, max_bytes."""
        with self._lock:
            counts = dict(self._counts)
            counts.update(entries=len(self._entries), bytes=self._bytes, max_bytes=self.max_bytes)
        counts["hit_rate"] = counts["hits"] / counts["lookups"] if counts["lookups"] else 0.0
        return counts

    def reset_stats(self) -> None:
        """Zero the counters (the entries stay)."""
        with self._lock:
            self._counts = dict.fromkeys(self._counts, 0)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


def bundle_digest(path: str | Path) -> str:
    """SHA-256 of a bundle's manifest.json (which holds the SHA-256 of every file), else of its weights and config:
    two bundles share cached vectors only when their files are identical."""
    path = Path(path)
    digest = hashlib.sha256()
    names = ["manifest.json"] if (path / "manifest.json").is_file() else ["model.safetensors", "config.yaml"]
    for name in names:
        file = path / name
        digest.update(file.read_bytes() if file.is_file() else name.encode())
    return digest.hexdigest()


def cache_namespace(bundle_path: str | Path, precision: str, device: torch.device | str) -> str:
    """The key prefix of one bundle's vectors at one precision on one device type, e.g. `3f2a…/fp32/cpu`."""
    return f"{bundle_digest(bundle_path)}/{precision}/{torch.device(device).type}"


class CacheGroup:
    """The chunk caches of an ensemble's neural members, seen as one: `stats()` sums their counters (and lists each
    member's under `members`), `reset_stats` and `clear` reach every cache."""

    SUMMED = ("lookups", "hits", "misses", "encoded", "evictions", "entries", "bytes", "max_bytes")

    def __init__(self, caches: dict[str, ChunkVectorCache]):
        self.caches = caches

    def stats(self) -> dict[str, Any]:
        members = {name: cache.stats() for name, cache in self.caches.items()}
        counts = {key: sum(m[key] for m in members.values()) for key in self.SUMMED}
        counts["hit_rate"] = counts["hits"] / counts["lookups"] if counts["lookups"] else 0.0
        return {**counts, "members": members}

    def reset_stats(self) -> None:
        for cache in self.caches.values():
            cache.reset_stats()

    def clear(self) -> None:
        for cache in self.caches.values():
            cache.clear()

    def __len__(self) -> int:
        return sum(len(cache) for cache in self.caches.values())


class CachedChunkModel(nn.Module):
    """A `MultimodalClassifier` whose text side reads chunk vectors from a `ChunkVectorCache`.

    `forward(batch)` and `explain(batch, target)` take the same batches as the model (`input_ids`,
    `attention_mask` `B×C×T`, `chunk_mask` `B×C`, the tabular tensors); they add `chunk_vectors` (`B×C×D`) built
    from the cache plus one encoder call for the missing chunks, and the model reduces, projects and fuses them.
    Padding slots get zeros (packed encode) or the padding chunk's vector (plain encode, as the design's path).
    """

    def __init__(self, model: nn.Module, cache: ChunkVectorCache, namespace: str, pad_token_id: int = 0):
        super().__init__()
        if getattr(model, "text_subnetwork", None) is None:
            raise ValueError("CachedChunkModel needs a model with a text encoder; tab_only has no chunks to cache")
        self.model = model
        self.cache = cache
        self.namespace = namespace
        self.pad_token_id = pad_token_id
        self._padding: torch.Tensor | None = None  # the plain path's padding-chunk vector, computed once

    def forward(self, batch: Batch):
        return self.model(self.with_chunk_vectors(batch))

    def explain(self, batch: Batch, target: torch.Tensor | None = None):
        return self.model.explain(self.with_chunk_vectors(batch), target)

    def batch_scores(self, batch: Batch, target: torch.Tensor | None = None) -> tuple:
        """The model's `batch_scores` (the scoring interface of every engine) over the cached chunk vectors."""
        return self.model.batch_scores(self.with_chunk_vectors(batch), target)

    def with_chunk_vectors(self, batch: Batch) -> Batch:
        """`batch` plus `chunk_vectors` (`B×C×D`), when its text is token ids; other batches pass unchanged."""
        if batch.text_form is not TextForm.TOKENS:
            return batch
        return batch.replace(chunk_vectors=self.chunk_vectors(batch.input_ids, batch.attention_mask, batch.chunk_mask))

    def chunk_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      chunk_mask: torch.Tensor) -> torch.Tensor:
        """`B×C×T` ids and mask, `B×C` chunk mask → `B×C×D` chunk vectors: cached ones looked up, the others
        encoded in one backbone call over the distinct missing chunks (`N_miss×T_dyn`) and stored."""
        text = self.model.text_subnetwork
        device = input_ids.device
        batch, chunks, _ = input_ids.shape
        ids = input_ids.detach().cpu().numpy()
        lengths = attention_mask.detach().sum(-1).cpu().numpy()
        slots = np.flatnonzero(chunk_mask.detach().cpu().numpy().reshape(-1))
        flat_ids = ids.reshape(batch * chunks, -1)
        flat_len = lengths.reshape(-1)
        keys = [(self.namespace, flat_ids[s, :flat_len[s]].astype(np.int32).tobytes()) for s in slots]
        found = self.cache.get_many(keys)
        missing: dict[tuple, int] = {}  # distinct missing key → the first slot holding it
        for key, slot, vector in zip(keys, slots, found):
            if vector is None and key not in missing:
                missing[key] = int(slot)
        if missing:
            rows = list(missing.values())
            width = int(flat_len[rows].max())
            miss_ids = torch.from_numpy(flat_ids[rows, :width].astype(np.int64)).to(device)
            miss_mask = (torch.arange(width).unsqueeze(0) < torch.from_numpy(flat_len[rows]).unsqueeze(1)).long()
            encoded = text.pool_chunks(miss_ids, miss_mask.to(device))
            new = [row.clone() for row in encoded.detach()]
            self.cache.put_many(list(missing), new)
            self.cache.count_encoded(len(new))
            computed = dict(zip(missing, new))
            found = [vector if vector is not None else computed[key] for key, vector in zip(keys, found)]
        padding = self._padding_vector(text, device) if text.encode_mode == "plain" else None
        reference = found[0] if found else padding
        if reference is None:  # no real chunk in the batch (cannot happen with the collator): a zero vector
            return torch.zeros(batch, chunks, text.chunk_dim, device=device)
        out = (padding.expand(batch * chunks, -1).clone() if padding is not None
               else reference.new_zeros(batch * chunks, reference.shape[-1]).to(device))
        if found:
            stacked = torch.stack([v.to(device=device, dtype=out.dtype) for v in found])
            out.index_copy_(0, torch.as_tensor(slots, device=device), stacked)
        return out.reshape(batch, chunks, -1)

    def _padding_vector(self, text, device: torch.device) -> torch.Tensor:
        """The plain path's vector of a padding chunk (`D`): the backbone attends to its first (pad) token only,
        so it equals the 1-token chunk [PAD]. Computed once per wrapper (one precision, one device)."""
        if self._padding is None:
            one = torch.ones(1, 1, dtype=torch.long, device=device)
            self._padding = text.pool_chunks(one * self.pad_token_id, one)[0].detach().clone()
        return self._padding.to(device)


def with_chunk_cache(model: nn.Module, bundle_path: str | Path, *, max_mb: float, precision: str,
                     device: torch.device | str, pad_token_id: int = 0) -> tuple[nn.Module, ChunkVectorCache | None, str]:
    """(the model to score with, its cache or None, a one-line description). `max_mb` 0 turns the cache off; a model
    without a text encoder (tab_only) has nothing to cache."""
    if not max_mb >= 0:
        from ..errors import OptionError

        raise OptionError(f"{{chunk_cache_mb}} must be >= 0 MB (0 turns the cache off), got {max_mb}")
    if max_mb == 0:
        return model, None, "off (size 0 MB)"
    if getattr(model, "text_subnetwork", None) is None:
        return model, None, "off: the model reads no text (tab_only)"
    cache = ChunkVectorCache(max_mb)
    namespace = cache_namespace(bundle_path, precision, device)
    return CachedChunkModel(model, cache, namespace, pad_token_id), cache, f"{max_mb:g} MB of chunk vectors ({precision})"
