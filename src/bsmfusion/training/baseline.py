"""The reference point of the modality contributions: the mean text and tabular embeddings of training rows."""
from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.sampling import sorted_batches
from ..precision import Precision

BASELINE_ROWS = 2048  # a seeded sample: the mean of 2,048 embeddings is within ~2% of an embedding sd of the full mean


@torch.inference_mode()
def embedding_means(model, table: EncodedTable, collator: Collator, *, precision: Precision, batch_size: int = 64,
                    max_rows: int = BASELINE_ROWS, seed: int = 0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Mean `H` text and tabular embeddings over (a sample of) `table`, in eval mode; None for an absent modality."""
    model.eval()
    rows = np.arange(len(table))
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
    dataset = EncodedDataset(table)
    sums: list[torch.Tensor | None] = [None, None]
    with precision.autocast("cpu"):
        for batch_rows in sorted_batches(table.token_counts()[rows], batch_size):
            batch = collator([dataset[int(rows[i])] for i in batch_rows])
            for k, embedding in enumerate(model.embeddings(batch)):
                if embedding is not None:
                    total = embedding.double().sum(dim=0)
                    sums[k] = total if sums[k] is None else sums[k] + total
    return tuple(None if s is None else (s / len(rows)).float() for s in sums)  # type: ignore[return-value]
