"""Frozen-encoder fast path: encode every thread once, cache the result on disk, and train only what follows
the backbone (the text projection, a learned chunk reduce, the tabular encoder, the fusion and the head).

What is cached depends on the chunk reduce:
* ``masked_mean`` (no parameters): the reduce runs once; `threads-<key>.npy` holds `N×D` thread vectors;
* ``attention`` (learned): the reduce must run in every training step; `chunks-<key>.npz` holds the `N×C×D`
  chunk vectors (``vectors``, padding slots zero) and the `N×C` chunk mask (``mask``).

The cache key hashes the chunked token ids of every row (so data, tokenizer and chunking settings), the
encoder's identity (its config and a digest of its weights), the pooling and chunk-reduce settings and
`CACHE_FORMAT`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.sampling import sorted_batches
from ..errors import ConfigError
from ..precision import Precision, resolve_precision
from ..models.text_encoder import TextEncoder

log = logging.getLogger("bsmfusion.frozen")

CACHE_FORMAT = 2  # 2: chunk-vector caches for learned reduces; continuation chunks repeat the role prefix


def encoder_digest(text_encoder: TextEncoder) -> str:
    """Digest of the backbone's config and weights (a sample of every tensor keeps it fast)."""
    digest = hashlib.sha256(text_encoder.backbone.config.to_json_string().encode())
    add_weights(digest, text_encoder.backbone.state_dict())
    digest.update(f"{text_encoder.pooling}/{text_encoder.chunk_reduce}/format{CACHE_FORMAT}".encode())
    return digest.hexdigest()


def add_weights(digest, state: dict[str, torch.Tensor]) -> None:
    """Feed `digest` every tensor's name and a sample of its values (every ⌈n/4096⌉-th: fast on large weights)."""
    for name, tensor in sorted(state.items()):
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())


def table_digest(table: EncodedTable) -> str:
    digest = hashlib.sha256()
    for thread in table.threads:
        digest.update(json.dumps(thread.chunks, separators=(",", ":")).encode())
        digest.update(b"|")
    return digest.hexdigest()


@torch.inference_mode()
def embed_threads(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, *, batch_size: int = 64,
                  precision: Precision | None = None) -> np.ndarray:
    """`N×D` thread vectors (before the text projection), rows in input order."""
    text_encoder.eval()
    dataset = EncodedDataset(table)
    out = np.zeros((len(table), text_encoder.chunk_dim), dtype=np.float32)
    device = next(text_encoder.parameters()).device
    with (precision or resolve_precision("fp32")).autocast(device):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows]).to(device)
            chunks = text_encoder.encode_chunks(batch.input_ids, batch.attention_mask, batch.chunk_mask)
            out[rows] = text_encoder.reduce_chunks(chunks, batch.chunk_mask).float().cpu().numpy()
    return out


@torch.inference_mode()
def embed_chunks(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, *, batch_size: int = 64,
                 precision: Precision | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(`N×C×D` float32 chunk vectors before any chunk reduce, `N×C` bool chunk mask), rows in input order;
    C is the most chunks of any row, padding slots are zero."""
    text_encoder.eval()
    dataset = EncodedDataset(table)
    width = max((len(t.chunks) for t in table.threads), default=1)
    vectors = np.zeros((len(table), width, text_encoder.chunk_dim), dtype=np.float32)
    mask = np.zeros((len(table), width), dtype=bool)
    device = next(text_encoder.parameters()).device
    with (precision or resolve_precision("fp32")).autocast(device):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows]).to(device)
            chunk_mask = batch.chunk_mask
            chunks = text_encoder.encode_chunks(batch.input_ids, batch.attention_mask, chunk_mask)
            chunks = torch.where(chunk_mask.unsqueeze(-1), chunks, torch.zeros_like(chunks))
            vectors[rows, : chunks.shape[1]] = chunks.float().cpu().numpy()
            mask[rows, : chunks.shape[1]] = chunk_mask.cpu().numpy()
    return vectors, mask


def _cache_key(text_encoder: TextEncoder, table: EncodedTable, precision: Precision) -> str:
    """Encoder (config, weights, pooling, reduce), data (chunked token ids) and the precision that computed them."""
    material = encoder_digest(text_encoder) + table_digest(table) + precision.used
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _save_atomically(path: Path, save) -> None:
    """`save(handle)` into a temporary file unique to this process, then rename: ranks writing the same cache
    entry at once never see each other's half-written file."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            save(stream)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def attach_frozen_text_features(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, cache_dir: Path,
                                *, precision: Precision, batch_size: int = 64) -> None:
    """Set what the frozen-encoder batches carry on `table`: `thread_vectors` (`N×D`) for a parameter-free chunk
    reduce, or `chunk_vectors` (`N×C×D`) + `chunk_vector_mask` (`N×C`) for a learned one (``attention``), computed
    in `precision` (the one training and the bundle's scoring use)."""
    if text_encoder.reduce_is_learned:
        table.chunk_vectors, table.chunk_vector_mask = cached_chunk_vectors(
            text_encoder, table, collator, cache_dir, precision=precision, batch_size=batch_size)
    else:
        table.thread_vectors = cached_thread_vectors(text_encoder, table, collator, cache_dir, precision=precision,
                                                     batch_size=batch_size)


def cached_chunk_vectors(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, cache_dir: Path,
                         *, precision: Precision, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(`N×C×D` chunk vectors, `N×C` chunk mask) from `cache_dir` when the key matches, else computed and stored
    (atomically)."""
    path = Path(cache_dir) / f"chunks-{_cache_key(text_encoder, table, precision)}.npz"
    if path.is_file():
        log.info("chunk vectors from cache %s", path)
        with np.load(path) as stored:
            return stored["vectors"], stored["mask"]
    vectors, mask = embed_chunks(text_encoder, table, collator, batch_size=batch_size, precision=precision)
    _save_atomically(path, lambda stream: np.savez(stream, vectors=vectors, mask=mask))
    return vectors, mask


def cached_thread_vectors(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, cache_dir: Path,
                          *, precision: Precision, batch_size: int = 64) -> np.ndarray:
    """Thread vectors from `cache_dir` when the key matches, else computed and stored (atomically)."""
    if text_encoder.chunk_reduce != "masked_mean":
        raise ConfigError("train.freeze_encoder (and compare) need text.chunk_reduce masked_mean or attention, not "
                          f"{text_encoder.chunk_reduce}; set text.chunk_reduce in the config")
    path = Path(cache_dir) / f"threads-{_cache_key(text_encoder, table, precision)}.npy"
    if path.is_file():
        log.info("thread vectors from cache %s", path)
        return np.load(path)
    vectors = embed_threads(text_encoder, table, collator, batch_size=batch_size, precision=precision)
    _save_atomically(path, lambda stream: np.save(stream, vectors))
    return vectors
