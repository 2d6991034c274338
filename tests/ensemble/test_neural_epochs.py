"""`model.ensemble.neural_epochs`, `neural_patience` and `neural_checks_per_epoch`: the first neural member
early-stops on the holdout; with `first` (the default) neural_2, ... stop after the optimiser steps at which it
scored best, on the same schedule, and keep their last weights; with `own` each early-stops by itself."""
import json
import time

import pytest

from bsmfusion.bundle import load_bundle
from bsmfusion.ensemble.train import member_config
from bsmfusion.training.history import best_row
from bsmfusion.workflows.train import train
from tests.helpers import ensemble_config, mixed


def test_member_config_gives_later_neural_members_the_first_ones_step_count():
    cfg = ensemble_config()
    cfg.train.epochs, cfg.train.patience = 3, 2
    cfg.model.ensemble.neural_checks_per_epoch = 2
    first = member_config(cfg, "neural")
    assert (first.train.epochs, first.train.keep_weights, first.train.patience) == (3, "best", 1)  # neural_patience
    assert (first.train.checks_per_epoch, first.train.stop_after_steps) == (2, None)
    later = member_config(cfg, "neural_2", steps=25)
    assert (later.train.stop_after_steps, later.train.keep_weights, later.train.seed) == (25, "last", cfg.train.seed + 1)
    assert later.train.checks_per_epoch == 1  # nothing is chosen on its holdout
    classical = member_config(cfg, "tfidf_lr", steps=25)
    assert (classical.train.epochs, classical.train.stop_after_steps) == (3, None)  # a classical member ignores it


@pytest.mark.slow
@pytest.mark.parametrize("mode, checks", [("first", 1), ("first", 2), ("own", 1)])
def test_later_neural_members_train_the_first_members_step_count(tmp_path, mode, checks):
    cfg = ensemble_config(members=("neural", "tfidf_lr"))
    cfg.train.epochs = 3
    cfg.model.ensemble.neural_seeds = 2
    cfg.model.ensemble.neural_epochs = mode
    cfg.model.ensemble.neural_checks_per_epoch = checks
    out = tmp_path / "model"
    started = time.monotonic()
    train(cfg, mixed(240, 0), mixed(160, 1), out, progress=False)
    took = time.monotonic() - started
    first, second = (load_bundle(out / "members" / n) for n in ("neural", "neural_2"))
    history = first.meta["validation_history"]
    chosen = best_row(history, first.meta["monitor"])
    steps = [row["step"] for row in history]
    epochs = [row["epoch"] for row in history]
    assert steps == sorted(set(steps)) and all(epochs.count(e) == checks for e in set(epochs))  # `checks` an epoch
    assert len(history) in (steps.index(chosen["step"]) + 2, 3 * checks)  # stopped one scoring past the best
    meta = {m["name"]: m for m in json.loads((out / "meta.json").read_text())["members"]}
    seconds = [meta[n]["train_seconds"] for n in ("neural", "neural_2", "tfidf_lr")]  # where the training time went
    assert seconds[0] > 0 and seconds[1] > 0 and seconds[2] >= 0 and sum(seconds) <= took
    if mode == "first":
        assert (second.cfg.train.stop_after_steps, second.cfg.train.keep_weights) == (chosen["step"], "last")
        assert second.meta["steps_run"] == chosen["step"]
        assert meta["neural"]["epochs"] == {"chose": {"step": chosen["step"], "epoch": chosen["epoch"]}}
        assert meta["neural_2"]["epochs"] == {"from": "neural", "steps": chosen["step"]}
        choices = json.loads((out / "meta.json").read_text())["member_rows"]["choices"]
        assert choices.endswith("; neural_2..neural_2 stop at the optimiser step neural chose there")
    else:
        assert (second.cfg.train.stop_after_steps, second.cfg.train.keep_weights) == (None, "best")
        assert "epochs" not in meta["neural"] and "epochs" not in meta["neural_2"]
    assert "epochs" not in meta["tfidf_lr"]


@pytest.mark.slow
def test_stopping_after_a_step_keeps_the_weights_the_full_schedule_had_at_that_step(tmp_path):
    """`train.stop_after_steps` ends the run early without re-planning the learning-rate schedule: the weights are
    bit for bit those a run planned for all its epochs had after that many steps (so a later ensemble member that
    stops where the first peaked is the member `neural_epochs: own` keeps when it peaks there too)."""
    import pytorch_lightning as pl
    import torch
    from safetensors.torch import load_file

    from tests.helpers import fast_config

    class Snapshot(pl.Callback):
        def __init__(self, step: int):
            self.step, self.weights = step, None

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if trainer.global_step == self.step and self.weights is None:
                self.weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    train_df, val_df = mixed(160, 0), mixed(64, 1)
    full_cfg = fast_config("concat", epochs=3, keep_weights="last")
    snapshot = Snapshot(step=13)  # 160 rows / 16 = 10 steps an epoch: the middle of epoch 2
    train(full_cfg, train_df, val_df, tmp_path / "full", progress=False, callbacks=[snapshot])
    stopped_cfg = fast_config("concat", epochs=3, keep_weights="last", stop_after_steps=13)
    train(stopped_cfg, train_df, val_df, tmp_path / "stopped", progress=False)
    assert json.loads((tmp_path / "stopped" / "meta.json").read_text())["steps_run"] == 13
    stopped = load_file(str(tmp_path / "stopped" / "model.safetensors"))
    compared = [name for name in stopped if name in snapshot.weights and "baseline" not in name]
    assert len(compared) > 20
    for name in compared:
        assert torch.equal(stopped[name], snapshot.weights[name].float()), name
