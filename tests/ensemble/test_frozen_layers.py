"""`train.freeze_layers` in the default ensemble: the neural members train on the same rows (cross_fit's shared
holdout) from the same encoder, so the second reads the frozen layers' output the first computed."""
import logging

import pytest

from bsmfusion.models.backbone import build_backbone
from bsmfusion.training import frozen_layers
from bsmfusion.workflows.train import train
from tests.helpers import ensemble_config, mixed


@pytest.mark.slow
def test_the_second_neural_member_reuses_the_first_ones_frozen_layer_states(tmp_path, monkeypatch, caplog):
    computed = []
    original = frozen_layers.frozen_states

    def counting(text_encoder, table, *args, **kwargs):
        computed.append(len(table))
        return original(text_encoder, table, *args, **kwargs)

    monkeypatch.setattr(frozen_layers, "frozen_states", counting)
    cfg = ensemble_config(members=("neural", "tfidf_lr"))
    # a pretrained encoder on disk, as MiniLM is (from encoder_config each member's seed would draw other weights)
    build_backbone(cfg.text).save_pretrained(tmp_path / "encoder")
    cfg.text.encoder, cfg.text.encoder_config, cfg.text.tokenizer = str(tmp_path / "encoder"), None, "minilm"
    cfg.model.ensemble.neural_seeds = 2
    cfg.train.freeze_layers = 1
    with caplog.at_level(logging.INFO, logger="bsmfusion.frozen_layers"):
        train(cfg, mixed(200, 0), mixed(80, 1), tmp_path / "model", progress=False)
    assert len(computed) == 2 and sum(computed) == 200  # the training rows and the shared holdout, once
    assert caplog.text.count("reused") == 2 and caplog.text.count("kept in memory") == 2
