"""Helper run by torchrun from test_optim.py: wrap the model with bsmfusion's own FSDP strategy on CPU (gloo),
train a few steps, and write each rank's optimiser groups to OUT/groups<rank>.json.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 fsdp_cpu_groups.py CONFIG TRAIN_CSV OUT

Two shims make Lightning's FSDP run on CPU; both are about devices, neither touches parameter grouping:
* Lightning refuses `type(strategy) is FSDPStrategy` without a GPU, so the strategy bsmfusion builds gets a
  subclass (same arguments: auto-wrapped BertLayers, FULL_SHARD, use_orig_params=True);
* Lightning passes `device_id=None` on CPU, which torch's FSDP reads as "use the accelerator": it gets the CPU.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: make `tests.helpers` importable
from tests.helpers import group_record  # noqa: E402


def main(config: str, train_csv: str, out: str) -> None:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel

    from bsmfusion.config import load_config
    from bsmfusion.data.dataset import Collator
    from bsmfusion.data.io import read_table
    from bsmfusion.data.sampling import BucketBatchSampler
    from bsmfusion.models.classifier import build_model
    from bsmfusion.training import fit
    from bsmfusion.training.lit_module import FusionLitModule

    class CpuFSDPStrategy(FSDPStrategy):
        pass

    fsdp_init = FullyShardedDataParallel.__init__

    def cpu_fsdp_init(self, *args, device_id=None, **kwargs):
        fsdp_init(self, *args, device_id=torch.device("cpu") if device_id is None else device_id, **kwargs)

    FullyShardedDataParallel.__init__ = cpu_fsdp_init

    cfg = load_config(config)
    strategy = fit.build_strategy(cfg)
    assert type(strategy) is FSDPStrategy, strategy
    strategy.__class__ = CpuFSDPStrategy
    pl.seed_everything(cfg.train.seed, verbose=False)
    frame = read_table(train_csv)
    tokenizer, prep, table, _ = fit.prepare(cfg, frame, frame)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities)
    collator = Collator.for_text(cfg.text, prep.pad_token_id)
    loader = fit._loader(table, collator, BucketBatchSampler(table.token_counts(), cfg.train.batch_size, cfg.train.seed))
    module = FusionLitModule(model, cfg.train, total_steps=len(loader))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=strategy, precision="32-true",
                         gradient_clip_val=cfg.train.grad_clip, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False)
    trainer.fit(module, loader)
    assert isinstance(trainer.model, FullyShardedDataParallel) and trainer.global_step == len(loader)
    record = {"groups": group_record(module, trainer.optimizers[0]), "steps": trainer.global_step,
              "wrapped_names": sum("_fsdp_wrapped_module" in n for n, _ in module.model.named_parameters())}
    with open(os.path.join(out, f"groups{trainer.global_rank}.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
