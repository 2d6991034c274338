"""The LightningModule's dropout seeding: distinct per micro-batch, reproducible for a (seed, step, micro-batch)."""
import pytorch_lightning as pl
import torch

from bsmfusion.data.dataset import Collator
from bsmfusion.data.sampling import BucketBatchSampler
from bsmfusion.models.classifier import build_model
from bsmfusion.training.fit import _loader, prepare
from bsmfusion.training.lit_module import FusionLitModule
from tests.helpers import make_frame, tiny_config


class _SeedSpy(pl.Callback):
    def __init__(self):
        self.seeds = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seeds.append((batch_idx, trainer.global_step, torch.initial_seed()))


def _dropout_seeds(accumulate: int) -> list[tuple[int, int, int]]:
    cfg = tiny_config("concat", model={"dropout": 0.5}, train={"accumulate_grad_batches": accumulate, "batch_size": 8})
    frame = make_frame(48)
    tokenizer, prep, table, _ = prepare(cfg, frame, frame)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities)
    collator = Collator.for_text(cfg.text, tokenizer.pad_token_id)
    loader = _loader(table, collator, BucketBatchSampler(table.token_counts(), 8, 0))
    spy = _SeedSpy()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, accumulate_grad_batches=accumulate,
                         callbacks=[spy], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(FusionLitModule(model, cfg.train, total_steps=6), loader)
    return spy.seeds


def test_micro_batches_of_one_accumulated_step_draw_different_dropout_masks():
    seeds = _dropout_seeds(accumulate=2)
    # 48 rows / 8 = 6 micro-batches, 3 optimiser steps of 2 micro-batches each
    assert [step for _, step, _ in seeds] == [0, 1, 1, 2, 2, 3]
    assert len({seed for _, _, seed in seeds}) == 6
    assert seeds == _dropout_seeds(accumulate=2)  # a function of (seed, step, micro-batch) only: resumable


def test_without_accumulation_the_seed_follows_the_step():
    seeds = _dropout_seeds(accumulate=1)
    assert [step for _, step, _ in seeds] == [1, 2, 3, 4, 5, 6]
    assert len({seed for _, _, seed in seeds}) == 6
