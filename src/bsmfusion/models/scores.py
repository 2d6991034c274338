"""Model outputs per row (`Scores`) and scoring an encoded table with a model: length-sorted batches, inference
mode, optional bf16, input order kept. Below training, calibration, decisions and inference, which all use it
(`inference.scoring` re-exports these names)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.sampling import sorted_batches
from ..precision import Precision, resolve_precision


@dataclass
class Scores:
    """Per-row outputs in input order: probabilities `N×K` and the Shapley split of each decision (`N` each, in
    log-odds for binary tasks, the predicted class's logit for multiclass): `text_contribution +
    tab_contribution + baseline_score` = the row's score (see `models.contributions`). After calibration
    (`calibration.Calibration.apply`) `probs` are calibrated and `uncalibrated_probs` keeps the model's own."""

    probs: np.ndarray
    text_contribution: np.ndarray
    tab_contribution: np.ndarray
    baseline_score: np.ndarray
    uncalibrated_probs: np.ndarray | None = None

    @property
    def text_share(self) -> np.ndarray:
        """|text| / (|text| + |tab|), 0.5 where both are zero."""
        text, tab = np.abs(self.text_contribution), np.abs(self.tab_contribution)
        total = text + tab
        return np.where(total > 0, text / np.maximum(total, 1e-30), 0.5).astype(np.float32)


def torch_batch_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                       target: torch.Tensor | None = None) -> tuple[np.ndarray, ...]:
    """(probs `B×K`, text `B`, tab `B`, baseline `B`) for one batch of a `MultimodalClassifier`; the split is of
    class `target`'s logit when given (multiclass), else of the decision."""
    output, parts = model.explain(batch, target)
    probs = torch.softmax(output.logits.float(), dim=-1)
    return tuple(t.float().cpu().numpy() for t in (probs, parts.text, parts.tab, parts.baseline_score))


def score_table(model, table: EncodedTable, collator: Collator, *, batch_size: int = 64,
                device: str | torch.device = "cpu", precision: str | Precision = "auto",
                targets: np.ndarray | None = None) -> Scores:
    """Run the model (a PyTorch `MultimodalClassifier` or an `OnnxModel`) over every row; batches are sorted by
    length, results restored to input order. `precision` applies to the PyTorch model (ONNX runs its own graph).
    In fp32 a row's scores do not depend on its batch; in bf16 they move by up to ~1e-3 with the batch
    (different padded lengths change the rounding), see docs/performance.md. `targets` (`N` class ids,
    multiclass, PyTorch only) asks for the split of those classes' logits instead of the predicted ones'."""
    device = torch.device(device)
    if not isinstance(precision, Precision):
        precision = resolve_precision(precision, device)
    is_torch = isinstance(model, torch.nn.Module)
    if targets is not None and not is_torch:
        raise ValueError("score_table: targets need the PyTorch model; the ONNX graph splits the predicted class only")
    targets = None if targets is None else np.asarray(targets, dtype=np.int64)
    if is_torch:
        model.eval()
    dataset = EncodedDataset(table)
    n = len(dataset)
    probs: np.ndarray | None = None
    parts = np.zeros((3, n), dtype=np.float32)  # text, tab, baseline
    with torch.inference_mode(), precision.autocast(device):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows])
            if is_torch:
                target = None if targets is None else torch.as_tensor(targets[rows], device=device)
                p, *split = torch_batch_scores(model, {k: v.to(device) for k, v in batch.items()}, target)
            else:  # an onnxruntime-backed model (inference.onnx_export.OnnxModel), same outputs
                p, *split = model.batch_scores(batch)
            if probs is None:
                probs = np.zeros((n, p.shape[1]), dtype=np.float32)
            probs[rows] = p
            parts[:, rows] = np.stack(split)
    if probs is None:
        probs = np.zeros((0, 2), dtype=np.float32)
    return Scores(probs=probs, text_contribution=parts[0], tab_contribution=parts[1], baseline_score=parts[2])
