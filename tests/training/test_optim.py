"""Optimiser groups: no decay on biases and normalisation layers, chosen by name so that FSDP cannot change them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bsmfusion.data.io import write_table
from bsmfusion.models.classifier import build_model
from bsmfusion.training.fit import prepare
from bsmfusion.training.lit_module import FusionLitModule
from bsmfusion.training.optim import canonical_name, no_decay_names
from tests.helpers import group_record, planted_frame, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _config():
    # distinct learning rates per encoder layer, so the groups also pin the layer-wise decay
    return tiny_config("gate", train={"lr": 1e-3, "head_lr": 5e-3, "layer_lr_decay": 0.5, "weight_decay": 0.01,
                                      "batch_size": 16})


def _by_name(groups):
    return {name: (round(g["lr"], 12), g["weight_decay"]) for g in groups for name, _ in g["params"]}


def _numel(groups, decayed):
    return sum(n for g in groups if (g["weight_decay"] > 0) == decayed for _, n in g["params"])


def test_canonical_names_drop_wrapper_parts():
    assert canonical_name("text_subnetwork.backbone.encoder.layer.0._fsdp_wrapped_module.output.LayerNorm.weight") == \
        "text_subnetwork.backbone.encoder.layer.0.output.LayerNorm.weight"
    assert canonical_name("a._checkpoint_wrapped_module.b._orig_mod.c.bias") == "a.b.c.bias"


def test_no_decay_for_biases_and_norm_layers_whatever_their_shape():
    model = build_model(tiny_config("cross_attn"), 2, [4])
    names = no_decay_names(model)
    assert "fusion.cross_att.text2tab.in_proj_bias" in names  # a bias not called `bias`
    assert "text_subnetwork.backbone.embeddings.LayerNorm.weight" in names
    assert "text_subnetwork.backbone.encoder.layer.0.attention.self.query.weight" not in names
    gate = build_model(tiny_config("gate"), 2, [4])
    assert {"fusion.gate_net.1.weight", "fusion.gate_net.1.bias"} <= no_decay_names(gate)  # LayerNorm in a Sequential


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_keeps_the_decay_groups_of_the_unwrapped_model(tmp_path):
    cfg = _config()
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    frame = planted_frame(64, "text", 0)
    write_table(frame, tmp_path / "train.csv")
    cfg_fsdp = cfg.model_copy(deep=True)
    cfg_fsdp.train.strategy = "fsdp"
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(cfg_fsdp.to_dict()))

    # reference: the same model, unwrapped, in this process
    _, prep, _, _ = prepare(cfg, frame, frame)
    module = FusionLitModule(build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities), cfg.train, 4)
    reference = group_record(module, module.configure_optimizers()["optimizer"])

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run([*launcher, str(ROOT / "tests" / "training" / "fsdp_cpu_groups.py"), str(tmp_path / "fsdp.yaml"),
                          str(tmp_path / "train.csv"), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"groups{r}.json").read_text()) for r in (0, 1)]
    # really wrapped, really trained: 64 rows / 16 = 4 batches, 2 per rank
    assert all(rank["wrapped_names"] > 0 and rank["steps"] == 2 for rank in ranks)
    expected = _by_name(reference)
    assert len({decay for _, decay in expected.values()}) == 2 and len({lr for lr, _ in expected.values()}) > 2
    for rank in ranks:
        assert _by_name(rank["groups"]) == expected  # same parameters, same lr and decay, on every rank
    for decayed in (True, False):  # the shards of each group add up to the unwrapped group
        assert sum(_numel(rank["groups"], decayed) for rank in ranks) == _numel(reference, decayed)
