"""One calibration and one decision policy, the same decisions: batch predict (torch), the ONNX engine, the server."""
import json

import httpx
import numpy as np
import pandas as pd
import pytest

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.serving.app import create_app
from tests.helpers import planted_frame, running

pytest.importorskip("onnxruntime")
POLICY = "recall_at_least=0.8"


@pytest.fixture(scope="module")
def bundle(bundle_factory, tmp_path_factory):
    """gate, one epoch, decided by review budget, exported to ONNX (a copy of the shared bundle: export writes)."""
    # temperature keeps this weak one-epoch model's scores spread (Platt, the binary default, may flatten them
    # toward the base rate, leaving no row clear of the threshold to compare engines on)
    trained = bundle_factory("gate", rows=(64, 48), settings={"train.decision": {"review_budget": 0.25},
                                                              "train.calibration": "temperature"})
    out = trained.copy_to(tmp_path_factory.mktemp("decide") / "model")
    assert main(["export", "--model", str(out), "--format", "onnx"]) == 0
    return out


def test_the_bundle_stores_its_calibration_and_decision(bundle):
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["calibration"]["method"] == "temperature" and meta["calibration"]["temperature"] != 1.0
    assert meta["decision"]["policy"] == {"review_budget": 0.25} and meta["decision"]["threshold"] == meta["threshold"]
    assert meta["decision"]["validation"]["flagged_fraction"] <= 0.25
    assert "validation_scores.json" in json.loads((bundle / "manifest.json").read_text())


def test_contributions_add_up_to_the_calibrated_log_odds(bundle):
    out = bsmfusion.load(bundle).predict_frame(planted_frame(40, "text", 2))
    total = out["text_contribution"] + out["tab_contribution"]
    baseline = total - np.log(out["prob_1"] / out["prob_0"])  # one baseline, the same for every row
    assert np.ptp(baseline.to_numpy()) < 1e-4


def test_predict_onnx_and_serve_make_the_same_decisions(bundle, tmp_path):
    frame = planted_frame(60, "text", 3)
    frame.to_csv(tmp_path / "in.csv", index=False)
    outputs = {}
    for engine in ("torch", "onnx"):
        assert main(["predict", "--model", str(bundle), "--data", str(tmp_path / "in.csv"), "--out",
                     str(tmp_path / f"{engine}.csv"), "--engine", engine, "--decision", POLICY, "--quiet"]) == 0
        outputs[engine] = pd.read_csv(tmp_path / f"{engine}.csv")
    predictor = bsmfusion.load(bundle, decision=POLICY)
    with running(create_app(predictor)) as base:
        info = httpx.get(f"{base}/v1/model").json()
        records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
        served = httpx.post(f"{base}/v1/predict", json=records).json()["results"]
    threshold = predictor.threshold
    assert info["decision"]["policy"] == {"recall_at_least": 0.8} and info["decision"]["source"] == "override"
    assert info["threshold"] == threshold != bsmfusion.load(bundle).threshold
    assert info["calibration"]["method"] == "temperature"
    # the validation rows fix the threshold: the same one in every engine
    probs = outputs["torch"]["prob_1"].to_numpy()
    clear = np.abs(probs - threshold) > 1e-4  # ONNX differs from torch by ~1e-6: rows on the threshold could flip
    assert clear.sum() >= 55
    expected = np.where(probs >= threshold, 1, 0)
    for labels in (outputs["torch"]["predicted_label"], outputs["onnx"]["predicted_label"],
                   [int(r["label"]) for r in served]):
        np.testing.assert_array_equal(np.asarray(labels, dtype=int)[clear], expected[clear])
    np.testing.assert_allclose(outputs["onnx"]["prob_1"], probs, atol=1e-4)  # calibrated in both
    np.testing.assert_allclose([r["probabilities"]["1"] for r in served], probs, atol=1e-6)


def test_threshold_is_shorthand_for_fixed(bundle, tmp_path):
    frame = planted_frame(30, "text", 4)
    by_threshold = bsmfusion.load(bundle, threshold=0.5).predict_frame(frame)
    by_policy = bsmfusion.load(bundle, decision={"fixed": 0.5}).predict_frame(frame)
    assert by_threshold.equals(by_policy)
    np.testing.assert_array_equal(by_threshold["predicted_label"].astype(int), (by_threshold["prob_1"] >= 0.5).astype(int))
