"""Parameter counts per named sub-network, as in the design's tables (4 bytes per parameter)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class ModelSummary:
    modules: dict[str, int]
    trainable: int
    total: int

    @property
    def megabytes(self) -> float:
        """Estimated size at 4 bytes per parameter, in MB (10^6 bytes), as Lightning reports it."""
        return self.total * 4 / 1e6

    def to_json(self) -> dict:
        return {"modules": self.modules, "total": self.total}

    def to_table(self) -> str:
        width = max(len(name) for name in self.modules)
        lines = [f"{'#':>2}  {'Name':<{width}}  {'Params':>14}"]
        for i, (name, count) in enumerate(self.modules.items()):
            lines.append(f"{i:>2}  {name:<{width}}  {count:>14,}")
        lines += [
            f"{self.trainable:,} trainable params",
            f"{self.total - self.trainable:,} non-trainable params",
            f"{self.total:,} total params",
            f"{self.megabytes:.3f} total estimated model params size (MB)",
        ]
        return "\n".join(lines)


def count(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def summarize(parts: dict[str, nn.Module | None], model: nn.Module) -> ModelSummary:
    """Counts for each named part (absent parts are left out) and for the whole model."""
    modules = {name: count(part) for name, part in parts.items() if part is not None}
    return ModelSummary(modules=modules, trainable=count(model, trainable_only=True), total=count(model))
