"""Score an encoded table with a model: length-sorted batches, inference mode, optional bf16, input order kept."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.sampling import sorted_batches


@dataclass
class Scores:
    """Per-row outputs in input order: probabilities `N×K` and the text share of the decision `N`."""

    probs: np.ndarray
    text_weight: np.ndarray


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            from torch.backends import cpu as cpu_backend

            capability = cpu_backend.get_cpu_capability()
        except (ImportError, AttributeError):  # pragma: no cover
            return False
        return "AVX512" in capability.upper() or "AMX" in capability.upper()
    return False


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast when asked (`bf16`) or when `auto` and the hardware supports it; otherwise fp32."""
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def score_table(model, table: EncodedTable, collator: Collator, *, batch_size: int = 64,
                device: str | torch.device = "cpu", precision: str = "auto") -> Scores:
    """Run the model (a PyTorch `MultimodalClassifier` or an `OnnxModel`) over every row; batches are sorted by
    length, results restored to input order."""
    device = torch.device(device)
    is_torch = isinstance(model, torch.nn.Module)
    if is_torch:
        model.eval()
    dataset = EncodedDataset(table)
    n = len(dataset)
    probs: np.ndarray | None = None
    text_weight = np.zeros(n, dtype=np.float32)
    with torch.inference_mode(), autocast_context(device, precision):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows])
            if is_torch:
                batch = {k: v.to(device) for k, v in batch.items()}
                output = model(batch)
                p = torch.softmax(output.logits.float(), dim=-1).cpu().numpy()
                weight = output.text_weight.float().cpu().numpy()
            else:  # an onnxruntime-backed model (inference.onnx_export.OnnxModel)
                p, weight = model.run(batch)
            if probs is None:
                probs = np.zeros((n, p.shape[1]), dtype=np.float32)
            probs[rows] = p
            text_weight[rows] = weight
    if probs is None:
        probs = np.zeros((0, 2), dtype=np.float32)
    return Scores(probs=probs, text_weight=text_weight)
