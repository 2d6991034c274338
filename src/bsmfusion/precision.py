"""One precision vocabulary for training and scoring: `auto | fp32 | bf16`.

`auto` picks bf16 only where the hardware computes it natively: a CUDA GPU that supports it, or a CPU with AMX
tiles or AVX-512-BF16 (torch's own checks). Elsewhere bf16 is emulated — on an AVX2-only CPU 5–8× slower than
fp32 — so `auto` stays fp32. Every resolution carries its reason, printed by train, evaluate, predict and serve.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

PrecisionName = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def cpu_capability() -> str:
    """The CPU's best matrix-math feature as torch sees it: `AMX`, `AVX-512-BF16`, `AVX-512`, `AVX2` or `baseline`."""
    checks = (
        ("AMX", "_is_amx_tile_supported"),
        ("AVX-512-BF16", "_is_avx512_bf16_supported"),
        ("AVX-512", "_is_avx512_supported"),
        ("AVX2", "_is_avx2_supported"),
    )
    for name, check in checks:
        probe = getattr(torch.cpu, check, None)
        if probe is not None and probe():
            return name
    return "baseline"


def fast_bf16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """(does this device compute bf16 natively, the reason in a few words)."""
    device = torch.device(device)
    if device.type == "cuda":
        # Volta/Turing (compute capability < 8) emulate bf16; torch's default check counts emulation as support
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return ok, "CUDA bf16" if ok else "GPU without native bf16"
    if device.type != "cpu":
        return False, f"{device.type} device"
    capability = cpu_capability()
    if capability in ("AMX", "AVX-512-BF16"):
        return True, capability
    return False, f"{capability} only, bf16 would be emulated"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked (`requested`), what runs (`used`: fp32 | bf16) and why."""

    requested: str
    used: str
    reason: str

    @property
    def is_bf16(self) -> bool:
        return self.used == "bf16"

    def describe(self) -> str:
        """E.g. `auto → bf16: AMX`, `fp32 (asked)`."""
        if self.requested == "auto":
            return f"auto → {self.used}: {self.reason}"
        return f"{self.used} ({self.reason})"

    def autocast(self, device: torch.device | str = "cpu"):
        """bf16 autocast for `bf16`, nothing for fp32."""
        device = torch.device(device)
        if self.is_bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def lightning(self) -> str:
        """The matching Lightning `precision=` value."""
        return "bf16-mixed" if self.is_bf16 else "32-true"

    def to_json(self) -> dict[str, str]:
        return {"requested": self.requested, "used": self.used, "reason": self.reason}


def resolve_precision(requested: str | None, device: torch.device | str = "cpu") -> Precision:
    """`auto | fp32 | bf16` → a `Precision` for this device. Unknown names are a one-line `ConfigError`."""
    from .errors import ConfigError

    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise ConfigError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}; pick one of them")
    if requested == "auto":
        fast, reason = fast_bf16(device)
        return Precision("auto", "bf16" if fast else "fp32", reason)
    return Precision(requested, requested, "asked")
