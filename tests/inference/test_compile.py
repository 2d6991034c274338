"""`--compile`: the TorchInductor backbone scores as the eager one; where compiling fails, scoring stays eager."""
import shutil

import numpy as np
import pytest
import torch

import bsmfusion
from bsmfusion.cli import main
from tests.helpers import planted_frame


@pytest.fixture
def gate_bundle(bundle_factory):
    """gate, one epoch on 64 planted text rows (the session's shared bundle)."""
    return bundle_factory("gate").path


def scoring_frame():
    frame = planted_frame(24, "text", 2)
    frame.loc[0, "dialogue"] = ""  # empty thread
    frame.loc[1, "dialogue"] = " <eos> ".join(["BUYER: " + "refund please " * 20] * 3)  # several chunks
    return frame


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="TorchInductor needs a C++ compiler (g++) on CPU; none on PATH")
def test_compiled_backbone_scores_as_the_eager_one_in_fp32(gate_bundle):
    frame = scoring_frame()
    eager = bsmfusion.load(gate_bundle, precision="fp32").predict_frame(frame)
    compiled = bsmfusion.load(gate_bundle, precision="fp32", compile=True)
    assert "compile on: TorchInductor" in compiled.describe_precision()
    out = compiled.predict_frame(frame)
    for column in ("prob_1", "text_contribution", "tab_contribution"):
        np.testing.assert_allclose(out[column], eager[column], atol=1e-5)
    # a single-row request (one chunk: the second graph the warm-up compiled) scores as eager too
    np.testing.assert_allclose(compiled.predict_frame(frame.iloc[[2]])["prob_1"], eager["prob_1"].iloc[[2]], atol=1e-5)


def test_a_failed_compile_leaves_eager_scoring_and_says_why(gate_bundle, monkeypatch):
    def broken_compile(module, **_):
        def fails(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    frame = scoring_frame()
    predictor = bsmfusion.load(gate_bundle, precision="fp32", compile=True)
    assert "compile off: torch.compile failed (InvalidCxxCompiler: No working C++ compiler found)" in predictor.describe_precision()
    eager = bsmfusion.load(gate_bundle, precision="fp32").predict_frame(frame)
    np.testing.assert_array_equal(predictor.predict_frame(frame)["prob_1"], eager["prob_1"])


def test_predict_compile_flag_compiles_once_and_prints_the_outcome(gate_bundle, tmp_path, monkeypatch, capsys):
    from bsmfusion.scoring import compiled

    calls = []
    monkeypatch.setattr(compiled, "compile_backbone", lambda model, precision, device: calls.append(model) or "on: stub")
    frame = scoring_frame()
    frame.to_csv(tmp_path / "in.csv", index=False)
    assert main(["predict", "--model", str(gate_bundle), "--data", str(tmp_path / "in.csv"), "--out",
                 str(tmp_path / "out.csv"), "--compile"]) == 0
    assert len(calls) == 1 and "compile on: stub" in capsys.readouterr().err
    assert "compile" not in bsmfusion.load(gate_bundle).describe_precision()  # not asked: not described
