"""Every fast path reaches the default ensemble: a chunk cache per neural member, one tokenising pass for all of
them, ONNX graphs (fp32 and int8) exported per neural member, and `--engine auto` choosing per member as it does
for one model. The ensemble here has the default's shape: two fine-tuned members (neural, neural_2) + tfidf_lr."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.errors import BundleError, OptionError
from bsmfusion.workflows.train import train
from tests.helpers import assert_same_scores, growing_frame, make_frame, thread_lines, tiny_config

NEURAL = ["neural", "neural_2"]
pytestmark = pytest.mark.slow  # every test trains or shares a two-member ensemble


def two_neural_config():
    cfg = tiny_config("ensemble", data={"id": "id"}, text={"max_chunks": 3, "chunk_tokens": 16, "pooling": "mean"},
                      train={"epochs": 1, "precision": "fp32", "patience": 5})
    cfg.model.ensemble.neural = "gate"
    cfg.model.ensemble.members = ["neural", "tfidf_lr"]
    cfg.model.ensemble.neural_seeds = 2
    cfg.model.ensemble.member_cv_folds = 2
    return cfg


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    out = tmp_path_factory.mktemp("fast") / "model"
    train(two_neural_config(), make_frame(80, seed=0), make_frame(60, seed=1), out, progress=False)
    weights = json.loads((out / "meta.json").read_text())["weights"]
    assert all(weights[name] > 0 for name in NEURAL)  # both loaded and scored (init_picks keep every member in)
    return out


def frames():
    frame = pd.concat([make_frame(20, seed=5), growing_frame(thread_lines(12))], ignore_index=True)
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    return frame


def test_each_neural_member_caches_its_own_chunks_and_fp32_scores_do_not_move(ensemble):
    frame = frames()
    reference = bsmfusion.load(ensemble, batch_size=7).predict_frame(frame)
    cached = bsmfusion.load(ensemble, batch_size=7, chunk_cache_mb=16)
    first, second = cached.predict_frame(frame), cached.predict_frame(frame)
    assert_same_scores(first, reference)
    assert_same_scores(second, reference)
    stats = cached.chunk_cache.stats()
    assert sorted(stats["members"]) == NEURAL
    table = cached.bundle.model.members[0].bundle.preprocessor.encode(frame, with_labels=False)
    distinct = len({tuple(c) for t in table.threads for c in t.chunks})
    for name in NEURAL:  # the budget is split: 8 MB each; each distinct chunk encoded once per member
        member = stats["members"][name]
        assert member["max_bytes"] == 8_000_000 and member["encoded"] == member["entries"] == distinct
    assert stats["encoded"] == 2 * distinct and stats["lookups"] == stats["hits"] + stats["misses"]


def test_rescoring_a_growing_thread_encodes_about_one_chunk_per_member_per_message(ensemble):
    requests = growing_frame(thread_lines(12))
    predictor = bsmfusion.load(ensemble, chunk_cache_mb=16)
    for k in range(len(requests)):  # one request per new message, as `serve` sees a live thread
        predictor.predict_frame(requests.iloc[[k]].reset_index(drop=True))
    members = predictor.chunk_cache.stats()["members"]
    for name in NEURAL:
        assert members[name]["encoded"] <= len(requests) + 1, members[name]


def test_server_shows_the_cache_of_each_neural_member(ensemble):
    from fastapi.testclient import TestClient

    from bsmfusion.serving.app import create_app

    with TestClient(create_app(bsmfusion.load(ensemble, chunk_cache_mb=4))) as client:
        for record in growing_frame(thread_lines(5)).to_dict("records"):
            assert client.post("/v1/predict", json=record).status_code == 200
        info = client.get("/v1/model").json()["chunk_cache"]
    assert info["enabled"] and sorted(info["members"]) == NEURAL
    assert all(m["enabled"] and m["description"] == "2 MB of chunk vectors (fp32)" for m in info["members"].values())
    assert info["encoded"] == sum(m["encoded"] for m in info["members"].values()) > 0


def test_the_neural_members_tokenise_a_frame_once(ensemble, monkeypatch):
    from bsmfusion.data.preprocess import RowPreprocessor

    calls = []
    original = RowPreprocessor.encode_text
    monkeypatch.setattr(RowPreprocessor, "encode_text", lambda self, frame: calls.append(len(frame)) or original(self, frame))
    bsmfusion.load(ensemble).predict_frame(frames())
    assert calls == [len(frames())]


def test_export_writes_a_graph_per_neural_member_and_onnx_scores_equal_torch(ensemble, tmp_path):
    pytest.importorskip("onnxruntime")
    copy = tmp_path / "ens"
    shutil.copytree(ensemble, copy)
    with pytest.raises(BundleError, match=rf"bundle '{copy}': neural member 'neural' has no ONNX graph; run "
                                          rf"'bsmfusion export --model {copy} --format onnx' first"):
        bsmfusion.load(copy, engine="onnx")
    assert main(["export", "--model", str(copy), "--format", "onnx", "--quantize", "int8"]) == 0
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in NEURAL:  # listed in the top manifest, which still verifies the whole folder
        for graph in ("model.onnx", "model.int8.onnx"):
            assert f"members/{name}/{graph}" in manifest
    assert not (copy / "members" / "tfidf_lr" / "model.onnx").exists()
    frame = frames()
    torch_out = bsmfusion.load(copy, precision="fp32").predict_frame(frame)
    onnx_out = bsmfusion.load(copy, engine="onnx").predict_frame(frame)
    np.testing.assert_allclose(onnx_out["prob_1"], torch_out["prob_1"], atol=1e-5, rtol=0)
    for column in ("text_contribution", "tab_contribution"):
        np.testing.assert_allclose(onnx_out[column], torch_out[column], atol=1e-4, rtol=0)
    int8 = bsmfusion.load(copy, engine="onnx", quantized=True)
    assert "neural ×" in int8.describe_precision() and "ONNX int8" in int8.describe_precision()
    assert np.abs(int8.predict_frame(frame)["prob_1"] - torch_out["prob_1"]).max() < 0.05


def test_engine_auto_chooses_for_each_neural_member_as_for_one_model(ensemble, tmp_path):
    pytest.importorskip("onnxruntime")
    from bsmfusion.bundle import load_bundle
    from bsmfusion.inference.onnx_export import export_onnx
    from bsmfusion.scoring.scorers import choose_engine

    copy = tmp_path / "ens"
    shutil.copytree(ensemble, copy)
    export_onnx(copy, quantize="int8")
    predictor = bsmfusion.load(copy, engine="auto")
    expected = choose_engine(load_bundle(copy / "members" / "neural"), "auto", False)
    described = predictor.describe_precision()
    assert described.count(f"engine auto → {expected[0]}") == 2 and expected[2] in described
    assert "tfidf_lr ×" in described and "fp64" in described  # the classical member computes in NumPy anyway


def test_a_bundle_without_a_neural_model_has_nothing_to_export(tmp_path):
    cfg = two_neural_config()
    cfg.model.ensemble.members = ["tfidf_lr"]
    cfg.model.ensemble.neural_seeds = 1
    train(cfg, make_frame(80, seed=0), make_frame(60, seed=1), tmp_path / "m", progress=False)
    from bsmfusion.inference.onnx_export import export_onnx

    with pytest.raises(BundleError, match="ensemble model with no neural member: there is no torch graph to export"):
        export_onnx(tmp_path / "m")
    with pytest.raises(OptionError, match="the ONNX engine covers the neural models only; pass engine=torch"):
        bsmfusion.load(tmp_path / "m", engine="onnx")


def test_a_multiclass_ensemble_on_onnx_re_splits_with_its_torch_model(tmp_path):
    """The graph splits the predicted class only; members that predicted another class than the ensemble are
    re-split at the ensemble's class with the member's torch model, so ONNX scores equal torch's."""
    pytest.importorskip("onnxruntime")
    from bsmfusion.inference.onnx_export import export_onnx

    def three(n, seed):
        frame = make_frame(n, seed=seed)
        frame["label"] = frame["label"] + (frame["ratio"] > 0.5).astype(int)
        return frame

    cfg = two_neural_config()
    cfg.model.num_classes = 3
    cfg.model.ensemble.neural_seeds = 1
    train(cfg, three(90, 0), three(60, 1), tmp_path / "m", progress=False)
    export_onnx(tmp_path / "m")
    frame = three(40, 2)
    torch_out = bsmfusion.load(tmp_path / "m", precision="fp32").predict_frame(frame)
    onnx_out = bsmfusion.load(tmp_path / "m", engine="onnx").predict_frame(frame)
    for column in ("prob_0", "prob_1", "prob_2"):
        np.testing.assert_allclose(onnx_out[column], torch_out[column], atol=1e-5, rtol=0)
    for column in ("text_contribution", "tab_contribution"):
        np.testing.assert_allclose(onnx_out[column], torch_out[column], atol=1e-4, rtol=0)
