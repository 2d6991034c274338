"""Typed configuration schema, loaded from YAML.

Every section forbids unknown keys, so a typo fails loudly with the key's dotted path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

FusionName = Literal["concat", "gate", "moe", "cross_attn", "text_only", "tab_only"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which columns hold the dialogue, the tabular features, the label and the row id."""

    text: list[str] = Field(default_factory=lambda: ["text"])
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    label: str = "label"
    id: str | None = None
    label_names: list[str] | None = None

    @field_validator("text", mode="before")
    @classmethod
    def _text_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _features_exclude_label_and_id(self) -> "DataConfig":
        if not self.text:
            raise ValueError("data.text needs at least one text column")
        features = [*self.text, *self.numeric, *self.categorical]
        for reserved, key in ((self.label, "data.label"), (self.id, "data.id")):
            if reserved is not None and reserved in features:
                raise ValueError(
                    f"column '{reserved}' is {key} and cannot also be a feature; remove it from data.text/numeric/categorical"
                )
        seen: set[str] = set()
        for column in features:
            if column in seen:
                raise ValueError(f"column '{column}' is listed twice among the features; list it once")
            seen.add(column)
        return self


class CleaningConfig(_Section):
    """How each message is cleaned before tokenisation."""

    replace_urls: bool = True
    replace_emails: bool = True
    url_token: str = "[url]"
    email_token: str = "[email]"
    strip_html: bool = True


class TextConfig(_Section):
    """The dialogue encoder: which BERT, how threads are chunked (C chunks of T tokens) and pooled."""

    encoder: str = "minilm"
    encoder_config: dict[str, Any] | None = None
    tokenizer: str | None = None
    max_chunks: int = Field(4, ge=1, le=64)
    chunk_tokens: int = Field(128, ge=8, le=4096)
    head_chunks: int | None = Field(None, ge=0)
    pooling: Literal["pooler", "cls", "mean"] = "mean"
    chunk_reduce: Literal["masked_mean", "padded_mean"] = "masked_mean"
    encode: Literal["plain", "packed"] = "packed"
    role_prefix: bool = True
    max_chars: int = Field(200_000, ge=1000)
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)

    @model_validator(mode="after")
    def _head_fits(self) -> "TextConfig":
        if self.head_chunks is not None and self.head_chunks > self.max_chunks:
            raise ValueError(f"text.head_chunks ({self.head_chunks}) must be <= text.max_chunks ({self.max_chunks})")
        return self

    @property
    def resolved_head_chunks(self) -> int:
        """Chunks kept from the start of an over-long thread; the rest come from its end."""
        if self.head_chunks is not None:
            return self.head_chunks
        return max(1, self.max_chunks // 4) if self.max_chunks > 1 else 0


class ModelConfig(_Section):
    """Sizes of the tabular encoder and the fusion head (H, F in the design)."""

    fusion: FusionName = "concat"
    hidden_dim: int = Field(100, ge=1)
    fusion_dim: int | None = Field(None, ge=1)
    num_classes: int = Field(2, ge=2)
    num_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    categorical_embedding_dim: int | None = Field(None, ge=1)

    @property
    def resolved_fusion_dim(self) -> int:
        return self.fusion_dim or self.hidden_dim

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"model.hidden_dim ({self.hidden_dim}) must be divisible by model.num_heads ({self.num_heads})"
            )
        return self


class TrainConfig(_Section):
    """Optimisation settings used by `bsmfusion train`."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    layer_lr_decay: float = Field(1.0, gt=0, le=1.0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    accumulate_grad_batches: int = Field(1, ge=1)
    class_weight: Literal["balanced", "none"] | list[float] = "none"
    monitor: str | None = None
    patience: int = Field(2, ge=1)
    seed: int = 42
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    threshold: Literal["max_f1", "fixed"] = "max_f1"
    fixed_threshold: float = Field(0.5, gt=0, lt=1)
    freeze_encoder: bool = False
    embedding_cache: str | None = None
    max_train_samples: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    limit_train_batches: int | None = Field(None, ge=1)
    checkpoint_every_steps: int = Field(200, ge=1)


class Config(_Section):
    """The whole bsmfusion configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'; remove it or fix its spelling"
    if first["type"] == "missing":
        return f"{source}: config key '{key}' is required"
    message = first["msg"].removeprefix("Value error, ")
    return f"{source}: config key '{key}': {message} (got {first.get('input')!r})"


def config_from_dict(raw: dict[str, Any] | None, source: str = "config") -> Config:
    """Validate a plain dict; raise `ConfigError` with a one-line message naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, text, model, train)")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config file; `overrides` is a dotted-key mapping applied on top (e.g. {'model.fusion': 'gate'})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass --config with a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    raw = raw or {}
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)
    return config_from_dict(raw, source=str(path))


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `raw['a']['b'] = value` for dotted key 'a.b', creating sections as needed."""
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
