"""Precision detection with torch's own checks, for both kinds of CPU, forced rather than trusted."""
import pytest
import torch

from bsmfusion.errors import ConfigError
from bsmfusion.precision import cpu_capability, fast_bf16, resolve_precision


def _fake_cpu(monkeypatch, **flags):
    names = {"amx": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported",
             "avx512": "_is_avx512_supported", "avx2": "_is_avx2_supported"}
    for key, attr in names.items():
        monkeypatch.setattr(torch.cpu, attr, lambda value=flags.get(key, False): value)


@pytest.mark.parametrize("flags,capability,used", [
    ({"amx": True, "avx512_bf16": True, "avx512": True, "avx2": True}, "AMX", "bf16"),
    ({"avx512_bf16": True, "avx512": True, "avx2": True}, "AVX-512-BF16", "bf16"),
    ({"avx512": True, "avx2": True}, "AVX-512", "fp32"),  # Skylake: AVX-512 without bf16 emulates it
    ({"avx2": True}, "AVX2", "fp32"),
    ({}, "baseline", "fp32"),
])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, flags, capability, used):
    _fake_cpu(monkeypatch, **flags)
    assert cpu_capability() == capability
    resolved = resolve_precision("auto", "cpu")
    assert resolved.used == used and resolved.reason.startswith(capability)
    assert resolved.describe().startswith(f"auto → {used}: {capability}")
    assert resolved.lightning() == ("bf16-mixed" if used == "bf16" else "32-true")
    assert fast_bf16("cpu")[0] == (used == "bf16")


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_precision_is_used_on_any_cpu(monkeypatch, asked):
    _fake_cpu(monkeypatch, avx2=True)
    resolved = resolve_precision(asked)
    assert resolved.used == asked and resolved.describe() == f"{asked} (asked)"


def test_bf16_autocast_changes_matmul_dtype_and_fp32_does_not():
    x = torch.randn(4, 8)
    layer = torch.nn.Linear(8, 3)
    with resolve_precision("bf16").autocast("cpu"):
        assert layer(x).dtype == torch.bfloat16
    with resolve_precision("fp32").autocast("cpu"):
        assert layer(x).dtype == torch.float32


def test_unknown_precision_is_a_one_line_error():
    with pytest.raises(ConfigError, match="precision 'fp16' is not one of auto, fp32, bf16"):
        resolve_precision("fp16")


def test_auto_does_not_pick_emulated_bf16_on_a_gpu(monkeypatch):
    """torch's default bf16 check counts emulation (Volta/Turing) as support; auto must not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert fast_bf16("cuda") == (False, "GPU without native bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", "cuda").describe() == "auto → bf16: CUDA bf16"
