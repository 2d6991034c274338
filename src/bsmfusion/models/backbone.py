"""Build the Hugging Face encoder by composition (`AutoModel`), from weights on disk or from a config alone."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..config import TextConfig
from ..resources import resolve_encoder_path


def build_backbone(text_cfg: TextConfig, *, load_weights: bool = True) -> nn.Module:
    """The encoder named by `text.encoder`, or a randomly initialised one from `text.encoder_config`.

    `load_weights=False` builds the architecture from the folder's config.json without reading weights
    (used when a bundle's own safetensors will be loaded right after). Local files only: never the network.
    """
    from transformers import AutoConfig, AutoModel

    if text_cfg.encoder_config is not None:
        return AutoModel.from_config(config_from_dict(text_cfg.encoder_config))
    folder = resolve_encoder_path(text_cfg.encoder)
    if not load_weights:
        return AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))
    return AutoModel.from_pretrained(str(folder), local_files_only=True)


def config_from_dict(values: dict[str, Any]):
    """A transformers config from plain values; `model_type` defaults to ``bert``."""
    from transformers import AutoConfig

    values = dict(values)
    model_type = values.pop("model_type", "bert")
    return AutoConfig.for_model(model_type, **values)


def backbone_hidden_size(backbone: nn.Module) -> int:
    return int(backbone.config.hidden_size)
