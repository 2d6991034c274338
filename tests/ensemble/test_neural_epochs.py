"""`model.ensemble.neural_epochs` and `neural_patience`: the first neural member early-stops on the holdout; with
`first` (the default) neural_2, ... train exactly the epoch count it chose and keep their last weights; with `own`
each early-stops by itself."""
import json

import pytest

from bsmfusion.bundle import load_bundle
from bsmfusion.ensemble.train import member_config
from bsmfusion.training.history import best_epoch
from bsmfusion.workflows.train import train
from tests.helpers import ensemble_config, mixed


def test_member_config_gives_later_neural_members_the_first_ones_epoch_count():
    cfg = ensemble_config()
    cfg.train.epochs, cfg.train.patience = 3, 2
    first = member_config(cfg, "neural")
    assert (first.train.epochs, first.train.keep_weights, first.train.patience) == (3, "best", 1)  # neural_patience
    later = member_config(cfg, "neural_2", epochs=2)
    assert (later.train.epochs, later.train.keep_weights, later.train.seed) == (2, "last", cfg.train.seed + 1)
    assert member_config(cfg, "tfidf_lr", epochs=2).train.epochs == 3  # a classical member ignores it


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["first", "own"])
def test_later_neural_members_train_the_first_members_epoch_count(tmp_path, mode):
    cfg = ensemble_config(members=("neural", "tfidf_lr"))
    cfg.train.epochs = 3
    cfg.model.ensemble.neural_seeds = 2
    cfg.model.ensemble.neural_epochs = mode
    out = tmp_path / "model"
    train(cfg, mixed(240, 0), mixed(160, 1), out, progress=False)
    first, second = (load_bundle(out / "members" / n) for n in ("neural", "neural_2"))
    chosen = best_epoch(first.meta["validation_history"], first.meta["monitor"])
    meta = {m["name"]: m for m in json.loads((out / "meta.json").read_text())["members"]}
    history = first.meta["validation_history"]
    assert len(history) in (chosen + 1, 3)  # patience 1: one epoch past the best, unless the budget ran out
    if mode == "first":
        assert (second.cfg.train.epochs, second.cfg.train.keep_weights) == (chosen, "last")
        assert second.meta["epochs_run"] == chosen
        assert [row["epoch"] for row in second.meta["validation_history"]] == list(range(1, chosen + 1))
        assert meta["neural"]["epochs"] == {"chose": chosen}
        assert meta["neural_2"]["epochs"] == {"from": "neural", "epochs": chosen}
        choices = json.loads((out / "meta.json").read_text())["member_rows"]["choices"]
        assert choices.endswith("; neural_2..neural_2 train the epoch count neural chose there")
    else:
        assert (second.cfg.train.epochs, second.cfg.train.keep_weights) == (3, "best")
        assert "epochs" not in meta["neural"] and "epochs" not in meta["neural_2"]
    assert "epochs" not in meta["tfidf_lr"]
