"""Model outputs per row (`Scores`) and scoring an encoded table with a model: length-sorted batches, inference
mode, optional bf16, input order kept. Below training, calibration, decisions and inference, which all use it
(the scoring runtime, `scoring`, builds on it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.sampling import sorted_batches
from ..precision import Precision, resolve_precision
from ..progress import advance as report_progress


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


def score_table(model, table: EncodedTable, collator: Collator, *, batch_size: int = 64,
                device: str | torch.device = "cpu", precision: str | Precision = "auto",
                targets: np.ndarray | None = None) -> Scores:
    """Run the model over every row; batches are sorted by length, results restored to input order.

    `model` is anything with the scoring interface `eval()` and `batch_scores(batch, target)` → numpy (probs,
    text, tab, baseline): a `MultimodalClassifier`, its chunk-cache wrapper, or the ONNX engine's `OnnxModel`.
    `precision` applies to PyTorch (an ONNX graph runs its own). In fp32 a row's scores do not depend on its
    batch; in bf16 they move by up to ~1e-3 with the batch (different padded lengths change the rounding), see
    docs/performance.md. `targets` (`N` class ids, multiclass; the PyTorch model only) asks for the split of those
    classes' logits instead of the predicted ones'. Each batch moves the running `bsmfusion.progress.Progress`."""
    device = torch.device(device)
    if not isinstance(precision, Precision):
        precision = resolve_precision(precision, device)
    targets = None if targets is None else np.asarray(targets, dtype=np.int64)
    model.eval()
    dataset = EncodedDataset(table)
    n = len(dataset)
    probs: np.ndarray | None = None
    parts = np.zeros((3, n), dtype=np.float32)  # text, tab, baseline
    with torch.inference_mode(), precision.autocast(device):
        for rows in sorted_batches(table.token_counts(), batch_size):
            batch = collator([dataset[i] for i in rows]).to(device)
            target = None if targets is None else torch.as_tensor(targets[rows], device=device)
            p, *split = model.batch_scores(batch, target)
            if probs is None:
                probs = np.zeros((n, p.shape[1]), dtype=np.float32)
            probs[rows] = p
            parts[:, rows] = np.stack(split)
            report_progress(len(rows))  # moves the running `progress.Progress` of predict/evaluate, if any
    if probs is None:
        probs = np.zeros((0, 2), dtype=np.float32)
    return Scores(probs=probs, text_contribution=parts[0], tab_contribution=parts[1], baseline_score=parts[2])
