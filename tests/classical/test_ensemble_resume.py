"""An ensemble's neural member keeps its checkpoints (OUT.work/members/neural.work) until the whole ensemble is
written, so `--resume` after a later member fails continues the member instead of retraining it."""
import logging

import pytest

from bsmfusion.manifest import sha256_file
from bsmfusion.workflows.train import train
from tests.helpers import ensemble_config, mixed


@pytest.mark.slow
def test_the_neural_members_work_folder_outlives_a_later_failure_and_goes_with_success(tmp_path, monkeypatch, caplog):
    import bsmfusion.classical.gbdt as gbdt

    cfg = ensemble_config(("neural", "gbdt"))
    cfg.train.checkpoint_every_steps = 1
    out, work = tmp_path / "model", tmp_path / "model.work"
    member_work = work / "members" / "neural.work"
    fit_gbdt = gbdt.fit_gbdt

    def broken(*args, **kwargs):
        raise RuntimeError("gbdt failed")

    monkeypatch.setattr(gbdt, "fit_gbdt", broken)
    with pytest.raises(RuntimeError, match="gbdt failed"):
        train(cfg, mixed(120, 0), mixed(80, 1), out, progress=False)
    assert not out.exists() and (member_work / "last" / "last.ckpt").is_file()
    weights = sha256_file(work / "members" / "neural" / "model.safetensors")

    monkeypatch.setattr(gbdt, "fit_gbdt", fit_gbdt)
    with caplog.at_level(logging.WARNING, logger="bsmfusion.train"):
        result = train(cfg, mixed(120, 0), mixed(80, 1), out, resume=True, progress=False)
    assert not [r for r in caplog.records if "no checkpoint" in r.getMessage()]  # resumed, not from scratch
    assert result.bundle_dir == out and (out / "manifest.json").is_file()
    assert sha256_file(out / "members" / "neural" / "model.safetensors") == weights  # the member as first trained
    assert not work.exists()  # removed, members' folders included, once the ensemble is written
