"""Optimiser parameter groups (encoder vs new layers, layer-wise decay, no decay on biases/norms) and the schedule."""
from __future__ import annotations

import re

import torch
from torch import nn

from ..config import TrainConfig

_LAYER = re.compile(r"\.layer\.(\d+)\.")
# path parts that FSDP, activation checkpointing and torch.compile insert between a module and its children
_WRAPPER_PARTS = re.compile(r"(?:_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


def canonical_name(name: str) -> str:
    """A parameter's name as in the unwrapped model (`layer.0._fsdp_wrapped_module.output.dense.bias` →
    `layer.0.output.dense.bias`)."""
    return _WRAPPER_PARTS.sub("", name)


def no_decay_names(model: nn.Module) -> set[str]:
    """Canonical names of the parameters that get no weight decay: biases (`bias`, `*_bias`) and every parameter of
    a normalisation layer (a module whose class name contains "Norm": LayerNorm, RMSNorm, BatchNorm...).

    Decided by names and module types, never by tensor shape: FSDP flattens every parameter to a 1-D shard (or an
    empty one) but keeps the module tree and the parameter names (with `use_orig_params=True`).
    """
    names: set[str] = set()
    for module_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for leaf, _ in module.named_parameters(recurse=False):
            if is_norm or leaf == "bias" or leaf.endswith("_bias"):
                names.add(canonical_name(f"{module_name}.{leaf}" if module_name else leaf))
    return names


def _encoder_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, i+1 for transformer layer i, num_layers+1 for the pooler and anything after."""
    if "embeddings" in name:
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Pretrained encoder weights get `cfg.lr` (times `layer_lr_decay`^(distance from the top)); everything new gets
    `cfg.head_lr`. Biases and normalisation layers get no weight decay (`no_decay_names`, FSDP-proof)."""
    text = getattr(model, "text_subnetwork", None)
    backbone = text.backbone if text is not None else None
    num_layers = int(getattr(getattr(backbone, "config", None), "num_hidden_layers", 0) or 0)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    no_decay = no_decay_names(model)
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = canonical_name(name)
        decay = 0.0 if name in no_decay else cfg.weight_decay
        if id(param) in backbone_ids:
            depth = _encoder_depth(name, num_layers)
            lr = cfg.lr * cfg.layer_lr_decay ** (num_layers + 1 - depth)
        else:
            lr = cfg.head_lr
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over `warmup_ratio` of the steps, then linear decay to zero."""
    total = max(1, total_steps)
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
