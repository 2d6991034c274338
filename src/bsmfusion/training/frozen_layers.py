"""`train.freeze_layers` without recomputing the frozen layers: their output at every token of the training and
holdout/validation rows is computed once, kept in memory, and the batches carry it (`Batch.frozen_hidden`), so each
training step and validation pass runs only the layers above them.

The same model, not an approximation: the frozen embeddings and layers run without dropout (`TextEncoder.train`)
and in the precision training uses, so their output is a fixed function of a chunk's tokens, the same at every
epoch (equal to what a step would compute within float rounding: kernels may round differently for other batch
shapes). Kept up to `train.frozen_layer_cache_gib` (float32, the tokens × the hidden size; each process of a
multi-process run holds its own copy); a larger table runs the frozen layers in every step as without the cache.
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch

from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.sampling import sorted_batches
from ..models.text_encoder import TextEncoder
from ..precision import Precision
from .frozen import add_weights, table_digest

log = logging.getLogger("bsmfusion.frozen_layers")

GIB = 2 ** 30


def frozen_states_bytes(tables: tuple[EncodedTable, ...], hidden_size: int) -> int:
    """Bytes the frozen layers' float32 output takes for every token of `tables`."""
    return sum(int(table.token_counts().sum()) for table in tables) * hidden_size * 4


@torch.inference_mode()
def frozen_states(text_encoder: TextEncoder, table: EncodedTable, collator: Collator, *, precision: Precision,
                  device: torch.device, batch_size: int = 64) -> list[list[np.ndarray]]:
    """Per row, per chunk: `T_i×D` float32, the frozen layers' output at the chunk's T_i tokens."""
    dataset = EncodedDataset(table)
    out: list[list[np.ndarray]] = [[] for _ in range(len(table))]
    with precision.autocast(device):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows]).to(device)
            b, c, t = batch.input_ids.shape
            real, real_mask = text_encoder.real_chunks(batch.attention_mask.reshape(b * c, t), batch.chunk_mask)
            ids = batch.input_ids.reshape(b * c, t)[real, :real_mask.shape[1]]
            hidden = text_encoder.frozen_output(ids, real_mask).float().cpu().numpy()
            for state, length, slot in zip(hidden, real_mask.sum(1).tolist(), real.tolist()):
                out[rows[slot // c]].append(state[:length].copy())  # slot b·C + c: row b's chunk c
    return out


class SharedStates:
    """Frozen-layer states by what determines them (the frozen weights, the rows' chunked tokens, the precision,
    the layer count), for the runs of one process that hold it: an ensemble's neural members start from the same
    encoder and share one holdout, so `neural_2` reads what `neural` computed. Dropped with the ensemble's run."""

    def __init__(self):
        self._states: dict[str, list[list[np.ndarray]]] = {}

    def clear(self) -> None:
        """Forget every stored state (the ensemble, after its last neural member)."""
        self._states.clear()

    def get(self, key: str, compute) -> list[list[np.ndarray]]:
        """The states stored under `key`, else `compute()`'s, stored."""
        if key not in self._states:
            self._states[key] = compute()
        else:
            log.info("train.freeze_layers: the frozen layers' output of %s reused", key[:12])
        return self._states[key]


def states_key(text_encoder: TextEncoder, table: EncodedTable, precision: Precision) -> str:
    """Digest of what the frozen states depend on: the frozen modules' weights (a sample of every tensor), the
    table's chunked token ids, the precision and the number of frozen layers."""
    digest = hashlib.sha256(f"{text_encoder.frozen_layers}/{precision.used}/{table_digest(table)}".encode())
    for module in text_encoder.frozen_modules():
        add_weights(digest, module.state_dict())
    return digest.hexdigest()


def attach_frozen_states(text_encoder: TextEncoder, tables: tuple[EncodedTable, ...], collator: Collator, *,
                         precision: Precision, device: torch.device, budget_gib: float,
                         batch_size: int = 64, shared: SharedStates | None = None) -> bool:
    """Set `frozen_states` on every table when they fit in `budget_gib` (else log why not); True when set. With
    `shared`, states already computed for the same weights and rows are reused (and new ones kept there)."""
    needed = frozen_states_bytes(tables, text_encoder.chunk_dim)
    if needed > budget_gib * GIB:
        log.info("train.freeze_layers: the frozen layers' output would take %.1f GiB (train.frozen_layer_cache_gib "
                 "%.1f): they run in every step instead", needed / GIB, budget_gib)
        return False
    home = next(text_encoder.parameters()).device
    text_encoder.to(device)
    try:
        for table in tables:
            def compute(table=table):
                return frozen_states(text_encoder, table, collator, precision=precision, device=device,
                                     batch_size=batch_size)

            table.frozen_states = (shared.get(states_key(text_encoder, table, precision), compute)
                                   if shared is not None else compute())
    finally:
        text_encoder.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    log.info("train.freeze_layers: the frozen layers' output kept in memory (%.2f GiB)", needed / GIB)
    return True


def cache_device(device: torch.device) -> torch.device:
    """Where to compute the states: this process's GPU under a multi-GPU launch (`LOCAL_RANK`), else `device`."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def detach_frozen_states(tables: tuple[EncodedTable, ...]) -> None:
    """Back to token batches (the bundle's baseline and scoring run the whole encoder)."""
    for table in tables:
        table.frozen_states = None
