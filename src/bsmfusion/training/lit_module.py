"""The one LightningModule that trains every fusion: loss, validation metrics, optimiser and schedule."""
from __future__ import annotations

import time

import numpy as np
import pytorch_lightning as pl
import torch

from ..config import TrainConfig
from ..data.batch import Batch
from ..evaluation.metrics import best_f1_threshold, classification_metrics
from ..models.classifier import MultimodalClassifier
from .optim import parameter_groups, warmup_linear_decay


class FusionLitModule(pl.LightningModule):
    """Wraps a `MultimodalClassifier`; holds no model code of its own.

    Dropout randomness is re-seeded from (seed, global step, micro-batch within the step) before every batch, so a
    run resumed from a mid-epoch checkpoint (always at a step boundary) draws the same masks as an uninterrupted one,
    and the micro-batches accumulated into one optimiser step draw different masks.
    """

    def __init__(self, model: MultimodalClassifier, train_cfg: TrainConfig, total_steps: int):
        super().__init__()
        self.model = model
        self.train_cfg = train_cfg
        self.total_steps = total_steps
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._step_started = 0.0
        self._seeded_step: int | None = None
        self._micro_batch = 0

    def forward(self, batch: Batch):
        return self.model(batch)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        step = self.global_step
        self._micro_batch = self._micro_batch + 1 if step == self._seeded_step else 0
        self._seeded_step = step
        # a step has at most `accumulate_grad_batches` micro-batches, so (step, micro-batch, rank) → seed is
        # one-to-one: no two micro-batches, and no two DDP ranks, draw the same dropout masks
        accumulate = self.train_cfg.accumulate_grad_batches
        micro_batch = step * accumulate + self._micro_batch
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        torch.manual_seed(self.train_cfg.seed * 1_000_003 + micro_batch * world + rank)
        self._step_started = time.perf_counter()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        output = self.model(batch)
        loss = self.model.loss(output, batch.labels)
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=len(batch))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._step_started
        if elapsed > 0:
            self.log("samples_per_s", len(batch) / elapsed, prog_bar=True, batch_size=1)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        output = self.model(batch)
        self._val_probs.append(torch.softmax(output.logits.float(), dim=-1).cpu())
        self._val_labels.append(batch.labels.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs).numpy()
        labels = torch.cat(self._val_labels).numpy()
        self._val_probs.clear()
        self._val_labels.clear()
        threshold = best_f1_threshold(labels, probs[:, 1]) if probs.shape[1] == 2 else None
        metrics = classification_metrics(labels, probs, threshold)
        for key in ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss"):
            value = metrics.get(key, float("nan"))
            # every rank sees the whole validation set, so the values agree without a reduction
            self.log(f"val_{key}", float(np.nan_to_num(value, nan=0.0)), prog_bar=key in ("roc_auc", "f1"),
                     sync_dist=False, rank_zero_only=False)
        self.log("val_loss", float(metrics["log_loss"]))

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.train_cfg)
        optimizer = torch.optim.AdamW(groups, lr=self.train_cfg.head_lr)
        scheduler = warmup_linear_decay(optimizer, self.total_steps, self.train_cfg.warmup_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Under FSDP each rank holds a shard of the gradients: the root FSDP module clips by the global norm
        (Lightning's default clipping refuses FSDP)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = self.trainer.model
        if isinstance(root, FullyShardedDataParallel):
            if gradient_clip_val:
                root.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
