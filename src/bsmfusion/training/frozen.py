"""Frozen-encoder fast path: encode every thread once (chunk vectors → masked mean), cache the `N×D` thread
vectors on disk, and train only the text projection, the tabular encoder, the fusion and the head.

The cache key hashes the chunked token ids of every row (so data, tokenizer and chunking settings), the
encoder's identity (its config and a digest of its weights) and the pooling settings.
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
from ..inference.scoring import autocast_context
from ..models.text_encoder import TextEncoder

log = logging.getLogger("bsmfusion.frozen")


def encoder_digest(text_encoder: TextEncoder) -> str:
    """Digest of the backbone's config and weights (a sample of every tensor keeps it fast)."""
    digest = hashlib.sha256(text_encoder.backbone.config.to_json_string().encode())
    for name, tensor in sorted(text_encoder.backbone.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    digest.update(f"{text_encoder.pooling}/{text_encoder.chunk_reduce}".encode())
    return digest.hexdigest()


def table_digest(table: EncodedTable) -> str:
    digest = hashlib.sha256()
    for thread in table.threads:
        digest.update(json.dumps(thread.chunks, separators=(",", ":")).encode())
        digest.update(b"|")
    return digest.hexdigest()


@torch.inference_mode()
def embed_threads(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, *, batch_size: int = 64,
                  precision: str = "auto") -> np.ndarray:
    """`N×D` thread vectors (before the text projection), rows in input order."""
    text_encoder.eval()
    dataset = EncodedDataset(table)
    out = np.zeros((len(table), text_encoder.chunk_dim), dtype=np.float32)
    device = next(text_encoder.parameters()).device
    with autocast_context(device, precision):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows])
            chunks = text_encoder.encode_chunks(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                                batch["chunk_mask"].to(device))
            out[rows] = text_encoder.reduce_chunks(chunks, batch["chunk_mask"].to(device)).float().cpu().numpy()
    return out


def cached_thread_vectors(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, cache_dir: Path,
                          *, batch_size: int = 64) -> np.ndarray:
    """Thread vectors from `cache_dir` when the key matches, else computed and stored (atomically)."""
    if text_encoder.chunk_reduce != "masked_mean":
        raise ValueError("train.freeze_encoder needs text.chunk_reduce: masked_mean")
    key = hashlib.sha256((encoder_digest(text_encoder) + table_digest(table)).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"threads-{key}.npy"
    if path.is_file():
        log.info("thread vectors from cache %s", path)
        return np.load(path)
    vectors = embed_threads(text_encoder, table, collator, batch_size=batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors
