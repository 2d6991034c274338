"""What a bundle stores about its decision: strict JSON when a validation rate is undefined (meta.json and
GET /v1/model), `save` refusing an override it would lose, and bundles written before calibration and decision
policies existed (no `calibration` / `decision` in meta.json, no validation_scores.json)."""
import json
import shutil

import httpx
import numpy as np
import pytest

import bsmfusion
from bsmfusion.manifest import MANIFEST, sha256_file
from bsmfusion.cli import main
from bsmfusion.errors import ConfigError, OptionError
from bsmfusion.serving.app import create_app
from tests.helpers import mixed, running


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def bundle(bundle_factory):
    """tfidf_lr (seconds) on noisy labels with a threshold no validation row reaches: precision is undefined there
    (the session's shared bundle: `old_bundle` changes a copy)."""
    return bundle_factory("tfidf_lr", signal="mixed", rows=(200, 120),
                          settings={"train.decision": {"fixed": 0.999}}).path


def test_an_undefined_validation_rate_is_null_in_meta_json_and_in_get_model(bundle):
    validation = strict_json((bundle / "meta.json").read_text())["decision"]["validation"]
    assert validation["flagged_fraction"] == 0 and validation["precision"] is None  # NaN before: bare NaN in the file
    with running(create_app(bsmfusion.load(bundle))) as base:
        response = httpx.get(f"{base}/v1/model")
    assert response.status_code == 200, response.text
    info = strict_json(response.text)
    assert info["decision"]["validation"]["precision"] is None and info["threshold"] == 0.999


def test_save_refuses_an_override_decision_it_would_lose(bundle, tmp_path):
    with pytest.raises(ConfigError, match=r"^save copies the bundle as trained, with its own decision, not this "
                                          r"predictor's override \(fixed threshold 0\.5 .*; load the copy with the "
                                          r"same decision=, or retrain with train.decision set to it$"):
        bsmfusion.load(bundle, threshold=0.5).save(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert bsmfusion.load(bundle).save(tmp_path / "copy") == tmp_path / "copy"


def old_bundle(bundle, folder):
    """A copy of `bundle` as written before calibration and decision policies, its manifest rewritten to match
    (as `bundle.write_bundle_folder` computes it)."""
    shutil.copytree(bundle, folder)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["calibration"], meta["decision"]
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    (folder / "validation_scores.json").unlink()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {str(p.relative_to(folder)): sha256_file(p) for p in files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return folder


def test_a_bundle_written_before_calibration_and_decision_policies_still_scores(bundle, tmp_path, capsys):
    old = old_bundle(bundle, tmp_path / "old")
    frame = mixed(40, 2)
    predictor = bsmfusion.load(old)
    assert predictor.calibration.method == "none" and predictor.decision.source == "bundle"
    assert predictor.threshold == 0.999 and predictor.decision.policy.to_config() == {"fixed": 0.999}
    # no calibration: the model's own probabilities, those the new bundle calibrates
    own = bsmfusion.load(bundle).scorer.uncalibrated.score_frame(frame).probs
    np.testing.assert_allclose(predictor.predict_proba(frame), own, atol=1e-6)
    assert "operating_point" in predictor.evaluate(mixed(60, 3))
    # a fixed threshold needs no stored validation scores
    overridden = bsmfusion.load(old, threshold=0.4).predict_frame(frame)
    np.testing.assert_array_equal(overridden["predicted_label"].astype(int), (overridden["prob_1"] >= 0.4).astype(int))
    # a searched policy does: one line naming the file and the way out
    with pytest.raises(OptionError) as err:  # the option asks more than this bundle stores
        bsmfusion.load(old, decision="review_budget=0.2")
    assert str(err.value) == (f"bundle '{old}' has no validation_scores.json (trained before decision policies): "
                              "decision review_budget needs it; retrain, or pass threshold=T")
    frame.to_csv(tmp_path / "in.csv", index=False)
    argv = ["predict", "--model", str(old), "--data", str(tmp_path / "in.csv"), "--out", str(tmp_path / "s.csv"),
            "--quiet"]
    assert main([*argv, "--decision", "review_budget=0.2"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: bundle '{old}' has no validation_scores.json (trained before decision policies): --decision "
        "review_budget needs it; retrain, or pass --threshold=T"]
    assert main([*argv, "--threshold", "0.4"]) == 0
