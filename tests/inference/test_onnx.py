import numpy as np
import pytest

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.errors import BundleError
from tests.helpers import PRECISIONS, planted_frame, prob_tolerance

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("fusion", ["gate", "cross_attn", "tab_only"])
def test_onnx_fp32_matches_pytorch_and_int8_runs(bundle_factory, tmp_path, fusion, precision):
    # calibration none: the graph's own outputs; a calibration scale would multiply bf16's rounding
    out = bundle_factory(fusion, settings={"train.calibration": "none"}).copy_to(tmp_path / "m")  # export writes
    frame = planted_frame(50, "text", 2)
    frame.loc[0, "dialogue"] = ""  # empty thread
    frame.loc[1, "dialogue"] = " <eos> ".join(["BUYER: " + "refund please " * 20] * 3)  # several chunks
    with pytest.raises(BundleError, match="bsmfusion export"):
        bsmfusion.load(out, engine="onnx")
    assert main(["export", "--model", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    torch_out = bsmfusion.load(out, precision=precision).predict_frame(frame)
    onnx_out = bsmfusion.load(out, engine="onnx").predict_frame(frame)
    # ONNX runs fp32: against torch fp32 only operator-order differences remain; against bf16, bf16's rounding
    tolerance = 1e-4 if precision == "fp32" else prob_tolerance(precision)
    diff = np.abs(torch_out["prob_1"].to_numpy() - onnx_out["prob_1"].to_numpy()).max()
    assert diff <= tolerance
    # the contribution split runs inside the graph: same columns, same values (log-odds units: 4× the prob scale)
    for column in ("text_contribution", "tab_contribution"):
        np.testing.assert_allclose(torch_out[column], onnx_out[column], atol=4 * tolerance)
    int8_out = bsmfusion.load(out, engine="onnx", quantized=True).predict_frame(frame)
    assert int8_out["prob_1"].between(0, 1).all() and len(int8_out) == 50
    # the exported files are part of the verified manifest
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"x")
    with pytest.raises(BundleError, match="model.onnx"):
        bsmfusion.load(out)


def test_onnx_model_has_the_torch_models_scoring_interface(bundle_factory, tmp_path):
    """`OnnxModel` answers `eval()`, `batch_scores(batch)` and `model(batch)` as the PyTorch model does, so the
    scoring loop has no engine branch."""
    import torch

    from bsmfusion.bundle import load_bundle
    from bsmfusion.data.dataset import Collator, EncodedDataset
    from bsmfusion.inference.onnx_export import export_onnx
    from bsmfusion.scoring.onnx_runtime import OnnxModel, onnx_file

    out = bundle_factory("gate").copy_to(tmp_path / "m")  # export writes into the bundle
    export_onnx(out)
    bundle = load_bundle(out)
    engines = {"torch": bundle.model.float(), "onnx": OnnxModel(onnx_file(out))}
    table = bundle.preprocessor.encode(planted_frame(8, "text", 2), with_labels=False)
    batch = Collator.for_text(bundle.cfg.text, bundle.preprocessor.pad_token_id)([EncodedDataset(table)[i] for i in range(8)])
    with torch.inference_mode():
        scores = {name: engine.eval().batch_scores(batch) for name, engine in engines.items()}
        probs = {name: torch.softmax(engine(batch).logits.float(), dim=-1) for name, engine in engines.items()}
    for torch_part, onnx_part in zip(scores["torch"], scores["onnx"]):  # probs, text, tab, baseline
        np.testing.assert_allclose(onnx_part, torch_part, atol=1e-4)
    torch.testing.assert_close(probs["onnx"], probs["torch"], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="splits the predicted class only"):
        engines["onnx"].batch_scores(batch, torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize("capability, vnni, expected", [
    ("AMX", True, ("torch", False)),           # bf16 tiles beat the int8 graph
    ("AVX-512-BF16", True, ("onnx", True)),    # VNNI int8, no AMX
    ("AVX2", True, ("onnx", True)),            # AVX-VNNI
    ("AVX2", False, ("torch", False)),         # no fast int8
])
def test_engine_auto_picks_the_int8_graph_only_where_int8_is_the_fast_path(tmp_path, monkeypatch, capability, vnni, expected):
    from types import SimpleNamespace

    import torch

    from bsmfusion.scoring import scorers

    monkeypatch.setattr(scorers, "cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    bundle = SimpleNamespace(kind="neural", path=tmp_path)
    # without an int8 graph in the bundle: always the torch engine, and it says how to get one
    engine, quantized, why = scorers.choose_engine(bundle, "auto", False)
    assert (engine, quantized) == ("torch", False) and "--quantize int8" in why
    (tmp_path / "model.int8.onnx").write_bytes(b"")
    assert scorers.choose_engine(bundle, "auto", False)[:2] == expected
    assert scorers.choose_engine(bundle, "auto", False, device="cuda")[:2] == ("torch", False)
    assert scorers.choose_engine(SimpleNamespace(kind="tfidf_lr", path=tmp_path), "auto", False)[:2] == ("torch", False)
    assert scorers.choose_engine(bundle, "torch", False) == ("torch", False, "asked")  # explicit engines as asked
    with pytest.raises(ValueError, match="engine 'tvm' is unknown"):  # ScoringOptions checks it before any choice
        bsmfusion.ScoringOptions(engine="tvm")


def test_engine_auto_scores_with_the_engine_it_names(bundle_factory, tmp_path, monkeypatch):
    """On a VNNI CPU without AMX, `--engine auto` scores with the bundle's int8 graph (the same numbers as
    `--engine onnx --int8`) and says so; on AMX it scores as the torch engine."""
    import torch

    from bsmfusion.scoring import scorers

    out = bundle_factory("gate").copy_to(tmp_path / "m")  # export writes into the bundle
    assert main(["export", "--model", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    frame = planted_frame(20, "text", 2)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    monkeypatch.setattr(scorers, "cpu_capability", lambda: "AVX-512-BF16")
    auto = bsmfusion.load(out, engine="auto", precision="fp32")
    assert "engine auto → onnx int8" in auto.describe_precision()
    int8 = bsmfusion.load(out, engine="onnx", quantized=True).predict_frame(frame)
    np.testing.assert_array_equal(auto.predict_frame(frame)["prob_1"], int8["prob_1"])
    monkeypatch.setattr(scorers, "cpu_capability", lambda: "AMX")
    auto = bsmfusion.load(out, engine="auto", precision="fp32")
    assert "engine auto → torch: AMX" in auto.describe_precision()
    eager = bsmfusion.load(out, precision="fp32").predict_frame(frame)
    np.testing.assert_array_equal(auto.predict_frame(frame)["prob_1"], eager["prob_1"])
