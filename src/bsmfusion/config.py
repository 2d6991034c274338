"""Typed configuration schema, loaded from YAML.

Every section forbids unknown keys, so a typo fails loudly with the key's dotted path.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .kinds import ENSEMBLE, classical_kinds, is_neural, kind_uses_text, model_kinds, neural_kinds  # light: no torch
from .policy import check_binary, parse_policy

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which columns hold the dialogue, the tabular features, the label and the row id."""

    text: list[str] = Field(default_factory=lambda: ["text"], description="the dialogue column, or a list of them "
        "(each parsed as its own segment); may be [] only for a fusion that reads no text (tab_only)")
    numeric: list[str] = Field(default_factory=list, description="numeric feature columns (median-imputed, with "
        "missing indicators, standardised, clipped)")
    categorical: list[str] = Field(default_factory=list, description="categorical feature columns (embedded; "
        "reserved ids for missing and unseen values)")
    label: str = Field("label", description="the label column: any values (predictions come back in its type: "
        "integers stay integers); binary tasks: the positive class is data.positive_label, else the last value "
        "sorted (train prints which)")
    positive_label: str | int | bool | None = Field(None, description="binary tasks: the label value that is the "
        "positive class (PR-AUC, thresholds, review budgets and contributions are about it), e.g. fraud; null: the "
        "last of the sorted label values")
    id: str | None = Field(None, description="optional row-id column, kept in predictions, must be unique; null: "
        "rows are numbered")
    label_names: list[str] | None = Field(None, description="the classes in order (binary: the second is the "
        "positive class); null: the sorted label values of the training data, data.positive_label last")
    group: str | None = Field(None, description="optional column naming who a row belongs to (a buyer, a seller): "
        "training warns when a group is in both training and validation data, evaluate when one is in training and "
        "test data; `bsmfusion split --group` writes group-disjoint splits. Not a feature")
    min_category_count: int = Field(
        5, ge=1, description="categorical values seen fewer times than this in the training split get the unknown id, "
        "in training too, so the unknown embedding row learns from real rows (rare in training ≈ unseen later) and no "
        "row is spent on a value too rare to learn; 5 keeps any value a model could learn from; 1 keeps every value")

    @field_validator("text", mode="before")
    @classmethod
    def _text_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _features_exclude_label_and_id(self) -> "DataConfig":
        features = [*self.text, *self.numeric, *self.categorical]
        for reserved, key in ((self.label, "data.label"), (self.id, "data.id"), (self.group, "data.group")):
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

    replace_urls: bool = Field(True, description="replace URLs by url_token")
    replace_emails: bool = Field(True, description="replace e-mail addresses by email_token")
    url_token: str = Field("[url]", description="what a URL becomes")
    email_token: str = Field("[email]", description="what an e-mail address becomes")
    strip_html: bool = Field(True, description="drop HTML tags, and <script>/<style> elements with their contents; "
        "entities are always decoded")


class TextConfig(_Section):
    """The dialogue encoder: which BERT, how threads are chunked (C chunks of T tokens) and pooled."""

    encoder: str = Field("minilm", description="minilm (the bundled all-MiniLM-L6-v2) or a local Hugging Face model "
        "folder; never downloaded")
    encoder_config: dict[str, Any] | None = Field(None, description="a Hugging Face config (model_type, hidden_size, "
        "...): build a randomly initialised encoder of that shape instead of loading weights")
    tokenizer: str | None = Field(None, description="tokenizer folder; null: the encoder's (the bundled MiniLM "
        "vocabulary with encoder_config)")
    max_chunks: int = Field(4, ge=1, le=64, description="C: chunks per thread")
    chunk_tokens: int = Field(128, ge=8, le=4096, description="T: tokens per chunk, special tokens included")
    head_chunks: int | None = Field(None, ge=0, description="chunks an over-long thread keeps from its start, the "
        "rest from its end; null: max(1, C // 4)")
    pooling: Literal["pooler", "cls", "mean"] = Field("mean", description="chunk vector: mean (of the tokens) | cls "
        "| pooler (the design's)")
    chunk_reduce: Literal["masked_mean", "padded_mean", "attention"] = Field(
        "masked_mean", description="how chunk vectors become one thread vector: masked_mean (mean of the real chunks, "
        "batch-invariant) | padded_mean (the design's mean over all C slots, padding included, batch-dependent) | "
        "attention (learned attention over the real chunks with first/last/distance-from-end chunk positions, "
        "batch-invariant; with train.freeze_encoder the chunk vectors are cached and the attention trains)")
    encode: Literal["plain", "packed"] = Field("packed", description="packed (real chunks only) | plain (all B×C×T "
        "slots, as the design)")
    role_prefix: bool = Field(True, description="prefix each message with its role (buyer:, seller:)")
    max_chars: int = Field(200_000, ge=1000, description="a longer text cell keeps its first quarter and last three "
        "quarters of this many characters")
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


class ClassicalConfig(_Section):
    """The classical members tfidf_lr, gbdt and the optional catboost.

    tfidf_lr and gbdt read TF-IDF of the parsed dialogue plus the scaled numerics and one-hot categoricals of the
    fitted tabular preprocessing; catboost reads the dialogue and the categoricals with CatBoost's own handling."""

    word_max_features: int = Field(200_000, ge=1, description="word 1–2-gram TF-IDF vocabulary cap (most frequent "
        "first)")
    char_max_features: int = Field(200_000, ge=1, description="char_wb 3–5-gram TF-IDF vocabulary cap")
    min_df: int = Field(2, ge=1, description="a TF-IDF term must occur in at least this many training threads")
    lr_c_grid: list[float] = Field(default_factory=lambda: [0.25, 1.0, 4.0, 16.0], min_length=1, description=""
        "tfidf_lr: inverse regularisation strengths tried; the one with the best validation ROC-AUC (log loss breaks "
        "ties) is kept")
    cv_folds: int = Field(0, ge=0, description="0: tfidf_lr's C and gbdt's / catboost's boosting rounds are chosen "
        "on the validation rows; k >= 2: by stratified k-fold cross-validation on the training rows (out-of-fold "
        "ROC-AUC / log loss), so the validation rows stay untouched (the ensemble's members use its member_cv_folds)")
    svd_components: int = Field(64, ge=1, description="gbdt: TruncatedSVD components of the TF-IDF features")
    gbdt_learning_rate: float = Field(0.05, gt=0, description="gbdt: LightGBM learning_rate")
    gbdt_num_leaves: int = Field(31, ge=2, description="gbdt: LightGBM num_leaves")
    gbdt_min_data_in_leaf: int = Field(20, ge=1, description="gbdt: LightGBM min_data_in_leaf")
    gbdt_feature_fraction: float = Field(0.8, gt=0, le=1, description="gbdt: LightGBM feature_fraction")
    gbdt_max_rounds: int = Field(2000, ge=1, description="gbdt: most boosting rounds")
    gbdt_early_stopping_rounds: int = Field(100, ge=0, description="gbdt: stop after this many rounds without a "
        "better validation log loss; 0: no early stopping (exactly gbdt_max_rounds)")
    gbdt_text: Literal["auto", "svd", "words"] = Field("auto", description="gbdt: how the trees read the TF-IDF: svd "
        "(svd_components dense directions; long, varied texts), words (the word n-gram columns at least "
        "gbdt_min_data_in_leaf training threads contain; short dialogues that turn on single phrases); auto: both, "
        "whichever gives the lower cross-validated (cv_folds) or else validation log loss")
    quoted_numbers: Literal["auto", "on", "off"] = Field("auto", description="gbdt: features of the numbers the "
        "thread quotes (each role's last and first number, their gap, and those divided by each numeric column, e.g. "
        "last offer / list price); auto: with or without them, whichever gives the lower cross-validated (cv_folds) "
        "or else validation log loss")
    gbdt_bagged: bool = Field(False, description="gbdt when k-fold CV chooses its rounds (cv_folds >= 2 and "
        "gbdt_early_stopping_rounds > 0, as in every ensemble): keep the CV's k fold boosters, each cut to the "
        "rounds it chose, and average their raw scores (bagging, as AutoGluon's members do) instead of refitting "
        "one booster on all training rows; each training row's out-of-fold score comes from the fold booster that "
        "did not see it; scoring runs k boosters. Without CV: one booster, as before")
    gbdt_background_rows: int = Field(64, ge=1, description="gbdt: training rows a block is replaced by (scores "
        "averaged) for the text/tabular split; a single mean row is a poor baseline for trees")
    catboost_iterations: int = Field(1000, ge=1, description="catboost: most boosting iterations (trees)")
    catboost_learning_rate: float = Field(0.05, gt=0, description="catboost: CatBoost learning_rate")
    catboost_depth: int = Field(6, ge=1, le=16, description="catboost: CatBoost depth (of its symmetric trees)")
    catboost_early_stopping_rounds: int = Field(50, ge=0, description="catboost: stop after this many iterations "
        "without a better log loss (on the validation rows; with cv_folds, the mean over the folds' held-out rows); "
        "0: exactly catboost_iterations (with cv_folds the folds still give the out-of-fold predictions)")
    catboost_background_rows: int = Field(64, ge=1, description="catboost: training rows (their rendered dialogue, "
        "stored in the bundle, and their tabular facts) a block is replaced by, scores averaged, for the text/tabular "
        "split, as gbdt_background_rows")
    catboost_thread_count: int = Field(0, ge=0, description="catboost: CPU threads CatBoost trains and scores with; "
        "0: as many as torch uses (as gbdt)")


NEURAL_MEMBER = "neural"  # the ensemble's fine-tuned member; neural_2, neural_3, ... with model.ensemble.neural_seeds


class EnsembleConfig(_Section):
    """`model.fusion: ensemble`: which members are trained and how their weights are chosen."""

    neural: str = Field("concat", description="the neural member: a registered torch fusion (trained with this "
        "config's text, model and train settings)")
    members: list[str] = Field(
        default_factory=lambda: ["neural", "tfidf_lr", "gbdt"], min_length=1,
        description="members trained: 'neural' (the fine-tuned fusion model.ensemble.neural, neural_seeds times) and "
        "classical members (tfidf_lr, gbdt, or any registered with kinds.register_kind); weights by greedy selection "
        "with replacement on validation predictions")
    iterations: int = Field(25, ge=1, description="greedy selection steps per selection; a selection's weights = "
        "its picks (the best prefix) / their count")
    init_picks: int = Field(5, ge=0, description="picks of every member each selection starts from (Caruana's "
        "initialisation, as a prior toward equal weights: k picks each against `iterations` greedy ones); weights "
        "leave 'equal' only as far as the validation rows support; 0: start from nothing (plain selection)")
    bags: int = Field(32, ge=0, description="bootstrap resamples of the validation rows, one selection each; the "
        "weights are their mean (bagged selection: ~100 validation rows cannot rank members reliably); 0: one "
        "selection on all validation rows")
    member_cv_folds: int = Field(5, ge=2, description="classical members (tfidf_lr, gbdt, catboost) fit on all "
        "training rows and choose C / boosting rounds by this many-fold cross-validation on them (seconds to "
        "minutes), never on the validation rows that fit the weights")
    member_holdout: float = Field(0.15, ge=0.0, lt=0.5, description="share of the training rows (seeded) held out "
        "for the neural member's own choices (early stopping, best checkpoint), so the validation rows that fit the "
        "weights and the threshold are untouched by them; 0: it chooses on the validation rows too (optimistic "
        "validation predictions: a member that early-stopped on them gets too much weight)")
    neural_seeds: int = Field(2, ge=1, le=8, description="fine-tuned neural members (the 'neural' entry of members "
        "repeated): member k (neural, neural_2, ...) trains with seed train.seed + k - 1 (and its own seeded holdout with "
        "combine_on: validation; one shared holdout with cross_fit) "
        "and enters the weight selection as a member of its own; each one adds a fine-tuning and its scoring "
        "(with neural_epochs: first, a shorter one than the first member's) (2, the default, chosen by measurement: "
        "docs/benchmarks.md 'Why two neural members')")
    combine_on: Literal["cross_fit", "validation"] = Field("cross_fit", description="rows the member weights, the "
        "calibration and the threshold are fitted on. 'cross_fit': the validation rows plus every training row all "
        "members scored out of sample (the neural members' holdout, which they then share, scored by each; the "
        "classical members' out-of-fold predictions from their member_cv_folds CV), so a small validation split "
        "does not decide alone; 'validation': the validation rows only (each neural member its own holdout)")
    neural_patience: int = Field(1, ge=1, description="early-stopping patience of the ensemble's neural members "
        "(train.patience is a single model's): epochs without a better holdout score before a member stops")
    neural_checks_per_epoch: int = Field(1, ge=1, le=20, description="holdout scorings per epoch of an early-"
        "stopping neural member (its train.checks_per_epoch): 2 stops the first member half an epoch past its best "
        "with neural_patience 1, and the others then train its best step count")
    neural_epochs: Literal["first", "own"] = Field("first", description="'first': neural_2, neural_3, ... train "
        "the optimiser steps after which the first neural member scored best on its holdout and stop there, on the "
        "same learning-rate schedule (planned for train.epochs), with no epoch spent confirming a stop (about half "
        "the neural training time when the first member peaks at epoch 1; with combine_on: validation each still "
        "draws its own holdout, then unused); 'own': each early-stops on its own holdout scores")
    refit_neural: bool = Field(False, description="true: once the neural member has early-stopped on the holdout, "
        "train it again from scratch on all training rows for the epoch count that scored best there (its last "
        "weights kept; AutoGluon's refit_full): it learns from the holdout rows too, for about (best epoch + "
        "neural_patience + best epoch) / (best epoch + neural_patience) times the neural training time")

    @property
    def member_names(self) -> list[str]:
        """The members trained, in order, with 'neural' expanded to neural, neural_2, ... (`neural_seeds`)."""
        return [n for m in self.members
                for n in ([NEURAL_MEMBER] + [f"{NEURAL_MEMBER}_{k}" for k in range(2, self.neural_seeds + 1)]
                          if m == NEURAL_MEMBER else [m])]

    @property
    def neural_member_names(self) -> list[str]:
        """The fine-tuned members among `member_names` (neural, neural_2, ...)."""
        return [name for name in self.member_names if self.neural_index(name) is not None]

    @staticmethod
    def neural_index(name: str) -> int | None:
        """k of member neural_k (1 for 'neural'); None for a classical member."""
        if name == NEURAL_MEMBER:
            return 1
        suffix = name.removeprefix(NEURAL_MEMBER + "_")
        return int(suffix) if suffix != name and suffix.isdigit() and suffix[0] != "0" and int(suffix) >= 2 else None

    @model_validator(mode="before")
    @classmethod
    def _legacy_init_each_member(cls, data: Any) -> Any:
        """Bundles written before `init_picks`: `init_each_member: true | false` is 1 | 0 picks."""
        if isinstance(data, dict) and "init_each_member" in data and "init_picks" not in data:
            data = dict(data)
            data["init_picks"] = 1 if data.pop("init_each_member") else 0
        return data

    @field_validator("neural")
    @classmethod
    def _neural_fusion(cls, value: str) -> str:
        if not is_neural(value):
            raise ValueError(f"not a neural fusion; choose one of {', '.join(neural_kinds())}")
        return value

    @field_validator("members")
    @classmethod
    def _members_once(cls, value: list[str]) -> list[str]:
        choices = [NEURAL_MEMBER, *classical_kinds()]
        unknown = [m for m in value if m not in choices]
        if unknown:
            raise ValueError(f"unknown member '{unknown[0]}'; choose from {', '.join(choices)}")
        if len(set(value)) != len(value):
            raise ValueError("list each member once")
        return value

    @model_validator(mode="after")
    def _seeds_need_the_neural_member(self) -> "EnsembleConfig":
        # the default is moot without 'neural' (and a bundle's config.yaml writes it out): only another count is refused
        default = type(self).model_fields["neural_seeds"].default
        if self.neural_seeds not in (1, default) and NEURAL_MEMBER not in self.members:
            raise ValueError(f"model.ensemble.neural_seeds ({self.neural_seeds}) needs 'neural' in "
                             "model.ensemble.members; add it or set neural_seeds: 1")
        return self


class ModelConfig(_Section):
    """Sizes of the tabular encoder and the fusion head (H, F in the design)."""

    fusion: str = Field("ensemble", description="ensemble (the default, chosen by measurement: model.ensemble.neural "
                        "fine-tuned with 2 seeds + tfidf_lr + gbdt, docs/benchmarks.md) | a registered fusion: concat | "
                        "gate | moe | cross_attn | text_only | tab_only, or any class registered with "
                        "@register_fusion(name) | a classical member: tfidf_lr | gbdt (see model.classical, "
                        "model.ensemble)")
    hidden_dim: int = Field(100, ge=1, description="H: size of the text and tabular embeddings")
    fusion_dim: int | None = Field(None, ge=1, description="F: width inside the fusion; null: hidden_dim")
    num_classes: int = Field(2, ge=2, description="number of label classes")
    num_heads: int = Field(4, ge=1, description="attention heads of cross_attn; must divide hidden_dim")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in the new layers")
    categorical_embedding_dim: int | None = Field(None, ge=1, description="embedding size of every categorical "
        "column; null: min(16, round(1.6 × cardinality^0.56)), at least 2")
    tab_encoder: Literal["plr", "design"] = Field(
        "plr", description="plr: per-column periodic (PLR) numeric embeddings + categorical embeddings → MLP, keeps "
        "every value's information; design: the design note's LayerNorm → Linear → ReLU across one row's features "
        "(parity with its parameter tables; one numeric column maps every row to the same output)")
    classical: ClassicalConfig = Field(default_factory=ClassicalConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)

    @field_validator("fusion")
    @classmethod
    def _registered_fusion(cls, value: str) -> str:
        if value not in model_kinds():
            raise ValueError(f"unknown fusion; choose one of {', '.join(model_kinds())}")
        return value

    @property
    def uses_text(self) -> bool:
        """Whether the model reads the dialogue (False for tab_only: text columns are neither needed nor tokenised;
        an ensemble reads it when any member does)."""
        if self.fusion == ENSEMBLE:
            return any(kind_uses_text(self.ensemble.neural if m == NEURAL_MEMBER else m) for m in self.ensemble.members)
        return kind_uses_text(self.fusion)

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

    epochs: int = Field(3, ge=1, description="maximum epochs (early stopping may end sooner)")
    batch_size: int = Field(16, ge=1, description="training rows per micro-batch (per device)")
    eval_batch_size: int = Field(64, ge=1, description="rows per batch for validation and scoring")
    lr: float = Field(3e-5, gt=0, description="learning rate of the pretrained encoder")
    head_lr: float = Field(1e-3, gt=0, description="learning rate of the new layers (tabular encoder, fusion, head)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay; never on biases and normalisation layers")
    layer_lr_decay: float = Field(1.0, gt=0, le=1.0, description="< 1: lower encoder layers learn slower (lr × "
        "this^(distance from the top))")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with linear warm-up; then linear "
        "decay to 0")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the global gradient norm to this; null: no clipping")
    accumulate_grad_batches: int = Field(1, ge=1, description="micro-batches per optimiser step")
    class_weight: Literal["balanced", "none"] | list[float] = Field("none", description="none | balanced | [w0, w1, "
        "...]: loss weight per class")
    monitor: str | None = Field(None, description="validation metric for early stopping and the best checkpoint: "
        "roc_auc, pr_auc, f1, accuracy, log_loss; null: roc_auc")
    patience: int = Field(2, ge=1, description="validation scorings (epochs, with checks_per_epoch 1) without "
        "improvement before early stopping (an ensemble's neural members: model.ensemble.neural_patience)")
    checks_per_epoch: int = Field(1, ge=1, le=20, description="validation scorings per epoch, evenly spaced: early "
        "stopping, the best checkpoint and validation_history come at this granularity")
    stop_after_steps: int | None = Field(None, ge=1, description="end training after this many optimiser steps, the "
        "learning-rate schedule still planned for `epochs` (an ensemble's later neural members stop where the first "
        "one scored best, on its schedule); null: epochs decide")
    keep_weights: Literal["best", "last"] = Field("best", description="the weights the bundle keeps: best (the epoch "
        "with the best monitored validation score; early stopping on) | last (the last epoch's; no early stopping: "
        "a refit for a fixed number of epochs, whose validation rows choose nothing)")
    seed: int = Field(42, description="seeds weights, batch order and dropout: a run is reproducible")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto (bf16 where the hardware computes it natively: AMX, AVX-512-BF16, CUDA) | fp32 | "
        "bf16; "
        "used for training and as the bundle's default scoring precision")
    strategy: Literal["auto", "ddp", "fsdp"] = Field("auto", description="auto | ddp | fsdp (GPUs: shards each BERT "
        "layer)")
    devices: int | Literal["auto"] = Field(1, description="devices per node (processes to launch)")
    num_nodes: int = Field(1, ge=1, description="machines")
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto | cpu | gpu")
    calibration: Literal["auto", "temperature", "platt", "isotonic", "none"] = Field(
        "auto", description="how probabilities are calibrated on the validation predictions before the "
        "threshold is chosen: auto (platt for binary, temperature for multiclass) | temperature (one scalar T "
        "minimising the log loss; log-odds / T, contributions / T too) "
        "| platt (binary only: a·log-odds + b; contributions × a) | isotonic (binary only: a monotone map; "
        "contributions stay uncalibrated) | none")
    decision: str | dict[str, Any] = Field(
        "max_f1", description="binary operating point on the calibrated P(positive), chosen on validation: max_f1 | "
        "expected_f1 (the F1 the calibrated probabilities expect: steadier on few validation rows) | {fixed: t} | {precision_at_least: p} | {recall_at_least: r} | {review_budget: f} (the threshold that flags "
        "the top f of the validation scores: a cut fixed on validation, not a cap; the share flagged on new rows "
        "follows their scores and can differ) | {costs: {false_positive: a, false_negative: b}} (threshold "
        "a/(a+b)); one the validation rows cannot support (no positive row, a budget under one row) is refused "
        "before training; one no threshold meets after training leaves the bundle on max_f1 with a warning "
        "(choose another at scoring time with --decision); multiclass: argmax, only max_f1 allowed; "
        "`predict --decision` overrides it")
    freeze_encoder: bool = Field(False, description="true: embed the threads once, cache, train only the rest (what "
        "compare uses)")
    freeze_layers: int = Field(0, ge=0, description="fine-tuning: keep the encoder's embeddings and its lowest k "
        "transformer layers at their pretrained weights, without dropout, and train the layers above them (the backward "
        "pass stops at layer k: fewer FLOPs a step); 0: train every layer; at most the encoder's layer count")
    frozen_layer_cache_gib: float = Field(8.0, ge=0, description="with freeze_layers: the frozen layers' output at "
        "every training and validation token is computed once and kept in memory (float32, tokens × hidden size) "
        "when it takes at most this many GiB (each process of a multi-process run holds its own copy), so each step "
        "runs only the layers above them (the same model: the frozen layers are a fixed function of the tokens); "
        "more: they run in every step; 0: never kept")
    embedding_cache: str | None = Field(None, description="folder of the frozen encoder's cache; null: "
        "$BSMFUSION_CACHE/embeddings, else ~/.cache/bsmfusion/embeddings")
    max_train_samples: int | None = Field(None, ge=1, description="train on a random sample of this many rows; null: "
        "all")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes that build the batches (kept alive "
        "across epochs); 0: in the training process")
    limit_train_batches: int | None = Field(None, ge=1, description="at most this many micro-batches per epoch; "
        "null: all")
    checkpoint_every_steps: int = Field(200, ge=1, description="optimiser steps between resumable checkpoints "
        "(--resume)")

    @field_validator("decision", mode="before")
    @classmethod
    def _known_policy(cls, value: Any) -> Any:
        return parse_policy(value).to_config()

    @property
    def policy(self):
        """`train.decision` as a `decision.Policy`."""
        return parse_policy(self.decision)


class Config(_Section):
    """The whole bsmfusion configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _threshold_is_now_decision(cls, data: Any) -> Any:
        """Configs (and bundles) written before `train.decision`: `threshold: max_f1|fixed` + `fixed_threshold`."""
        train = data.get("train") if isinstance(data, dict) else None
        if not isinstance(train, dict) or not {"threshold", "fixed_threshold"} & train.keys():
            return data
        train = dict(train)
        legacy, fixed = train.pop("threshold", "max_f1"), train.pop("fixed_threshold", 0.5)
        if legacy not in ("max_f1", "fixed"):
            raise ValueError(f"train.threshold {legacy!r} must be max_f1 or fixed; it is replaced by train.decision "
                             "(e.g. decision: {fixed: 0.3})")
        if legacy == "fixed":
            if "decision" in train:
                raise ValueError("train.threshold: fixed and train.decision are both set; keep only train.decision "
                                 "(decision: {fixed: t})")
            train["decision"] = {"fixed": fixed}
        return {**data, "train": train}

    @model_validator(mode="after")
    def _text_columns_for_text_fusions(self) -> "Config":
        if not self.data.text and self.model.uses_text:
            raise ValueError(f"data.text is empty but model.fusion '{self.model.fusion}' reads the dialogue; list the "
                             "text column(s) under data.text, or use model.fusion: tab_only")
        return self

    @model_validator(mode="after")
    def _member_seeds_fit(self) -> "Config":
        trained = len(self.model.ensemble.neural_member_names) if self.model.fusion == "ensemble" else 0
        last = self.train.seed + trained - 1  # neural_k's seed (ensemble.train)
        if trained > 1 and last > 2**32 - 1:
            raise ValueError(f"the neural members' seeds run from train.seed ({self.train.seed}) to {last}, past "
                             "4294967295; choose a smaller train.seed")
        return self

    @model_validator(mode="after")
    def _positive_label_is_binary(self) -> "Config":
        if self.data.positive_label is not None and self.model.num_classes != 2:
            raise ValueError(f"data.positive_label {self.data.positive_label!r} is for binary tasks, not a model with "
                             f"{self.model.num_classes} classes; remove it (data.label_names orders the classes)")
        return self

    @model_validator(mode="after")
    def _binary_only_decisions(self) -> "Config":
        check_binary(self.model.num_classes, "train.decision", self.train.policy.name)
        check_binary(self.model.num_classes, "train.calibration", self.train.calibration)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def config_keys(section: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (`model.fusion`, `model.classical.tfidf_C`, ...), sections included."""
    keys: list[str] = []
    for name, field in (section or Config).model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += config_keys(field.annotation, f"{prefix}{name}.")
    return keys


def _did_you_mean(key: str) -> str:
    """'; did you mean 'model.fusion'?' for a misspelt dotted key, else the generic fix."""
    import difflib

    keys = config_keys()
    leaf = key.rsplit(".", 1)[-1]
    close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:1]  # the right key in another section
    close = close or difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return f"; did you mean '{close[0]}'?" if close else "; remove it or fix its spelling (examples/config.yaml lists every key)"


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'{_did_you_mean(key)}"
    if first["type"] == "missing":
        return f"{source}: config key '{key}' is required"
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a check across sections: its message names the keys
        return f"{source}: {message}"
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


# keys added after bundles were first written → the value a bundle written before behaved as. A bundle's config
# that lacks one reads as that value, not as today's default, so a refit from `bundle.cfg` (small_validation's
# re-derived members) fits what the bundle's training did
ADDED_SINCE_FIRST_BUNDLES = {("model", "classical", "quoted_numbers"): "off", ("model", "classical", "gbdt_text"): "svd",
                             ("model", "classical", "gbdt_bagged"): False}


def bundle_config(raw: dict[str, Any] | None, source: str) -> Config:
    """A bundle's stored config (its config.yaml as a dict), keys it predates filled as it behaved
    (`ADDED_SINCE_FIRST_BUNDLES`)."""
    raw = copy.deepcopy(raw) if isinstance(raw, dict) else raw
    for *sections, key in ADDED_SINCE_FIRST_BUNDLES:
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and key not in node:
            node[key] = ADDED_SINCE_FIRST_BUNDLES[(*sections, key)]
    return config_from_dict(raw, source)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, *, overrides_name: str = "--set") -> Config:
    """Read and validate a YAML config file.

    Args:
        path: the YAML file.
        overrides: dotted keys applied on top, e.g. `{"model.fusion": "gate", "train.epochs": 5}`.
        overrides_name: what error messages call an override (`--set` on the command line).

    Returns:
        The validated `Config`.

    Raises:
        ConfigError: one line naming the file (with line and column for invalid YAML) or the override, and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass --config with a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}; fix the file there") from None
    return build_config(raw, overrides, source=str(path), overrides_name=overrides_name)


def build_config(raw: dict[str, Any] | None, overrides: dict[str, Any] | None = None, *, source: str = "config",
                 overrides_name: str = "--set") -> Config:
    """Validate `raw` (left unchanged) with dotted `overrides` applied. An error in an overridden key names the
    override (`--set model.fusoin`), not the file it was applied to."""
    import copy

    raw = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (data, text, model, train)")
    overrides = overrides or {}
    for dotted, value in overrides.items():
        apply_override(raw, dotted, value, where=f"{overrides_name} {dotted}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        key = ".".join(str(part) for part in err.errors()[0]["loc"])
        culprits = [d for d in overrides if key and (key == d or key.startswith(d + ".") or d.startswith(key + "."))]
        if culprits:
            source = f"{overrides_name} {culprits[0]}"
        elif overrides and not key:  # a check across sections: the file and the overrides together
            source = f"{source} with {overrides_name} {', '.join(overrides)}"
        raise ConfigError(_format_validation_error(err, source)) from None


def apply_override(raw: dict[str, Any], dotted: str, value: Any, where: str = "override") -> None:
    """Set `raw['a']['b'] = value` for dotted key 'a.b', creating sections as needed."""
    node = raw
    *parents, leaf = dotted.split(".")
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            section = ".".join(parents[: depth + 1])
            raise ConfigError(f"{where}: '{section}' is a value, not a section; set '{section}' itself")
    node[leaf] = value


# ---------------------------------------------------------------- examples/config.yaml, generated from the schema
REGENERATE_EXAMPLE = ".venv/bin/python -m bsmfusion.config > examples/config.yaml"
# The data section's defaults are placeholders; the example shows columns of a real buyer-seller table instead.
EXAMPLE_COLUMNS: dict[str, Any] = {
    "data.text": "dialogue",
    "data.numeric": ["list_price", "buyer_target", "seller_target", "n_messages"],
    "data.categorical": ["category", "first_speaker"],
    "data.id": "row_id",
}


def _yaml_value(value: Any) -> str:
    """One value in YAML flow style on one line (`[a, b]`, `null`, `3.0e-05`, `'[url]'`)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6, allow_unicode=True).strip()[1:-1]


def _example_lines(section: type[_Section], prefix: str, depth: int) -> list[str]:
    import textwrap

    pad = "  " * depth
    lines: list[str] = []
    for name, field in section.model_fields.items():
        key = f"{prefix}{name}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
            doc = (field.annotation.__doc__ or "").strip().splitlines()
            lines += [""] if depth == 0 else []
            lines += [f"{pad}# {doc[0]}"] if doc else []
            lines += [f"{pad}{name}:", *_example_lines(field.annotation, key + ".", depth + 1)]
            continue
        if not field.description:
            raise ValueError(f"config key '{key}' has no description; add description=... to its Field in config.py")
        default = field.get_default(call_default_factory=True)
        note = field.description
        if key in EXAMPLE_COLUMNS:
            note += f" (illustrative; default {_yaml_value(default)})"
        entry = f"{pad}{name}: {_yaml_value(EXAMPLE_COLUMNS.get(key, default))}"
        aligned = entry.ljust(max(34, len(entry) + 2))  # inline comments start at column 35, or 2 spaces after
        if len(aligned) + len(note) + 2 <= 118:
            lines.append(f"{aligned}# {note}")
        else:
            lines += [f"{pad}# {part}" for part in textwrap.wrap(note, 116 - len(pad))] + [entry]
    return lines


def example_yaml() -> str:
    """examples/config.yaml: every key of every section with its default value (the data columns are illustrative,
    `EXAMPLE_COLUMNS`) and its Field description as a comment. Regenerate the file with `REGENERATE_EXAMPLE`."""
    header = [
        "# A complete bsmfusion config: every key with its default value; unknown keys are errors that name the key.",
        "# GENERATED from the schema in src/bsmfusion/config.py (Field descriptions become the comments); do not edit.",
        f"# Regenerate from the repository root: {REGENERATE_EXAMPLE}",
        f"# Illustrative, not defaults: {', '.join(EXAMPLE_COLUMNS)} (a buyer-seller table's columns).",
    ]
    return "\n".join(header + _example_lines(Config, "", 0)) + "\n"


if __name__ == "__main__":  # python -m bsmfusion.config > examples/config.yaml
    from bsmfusion.config import example_yaml as _example_yaml  # the package's module, not this __main__ copy

    print(_example_yaml(), end="")
