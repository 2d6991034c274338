"""The model-kind registry: every name `model.fusion` accepts, and how each one is trained, stored and loaded.

One entry per kind drives config validation (`model.fusion`, `model.ensemble.members`), training
(`workflows.train.train` calls the kind's trainer), bundle loading (`bundle.load_bundle` calls its loader), ensemble
membership (the classical family) and `bsmfusion compare` (`in_compare`). Three families:

* `neural` — the torch fusions (`models.fusion`); one trainer and one loader serve them all. Fusions registered with
  `@register_fusion(name)` appear here without an entry of their own.
* `classical` — members fitted with NumPy / scikit-learn / LightGBM, or the optional CatBoost (`classical`); each
  names its `ClassicalMember` subclass, which fits itself and stores its arrays.
* `ensemble` — weighted members of the other two families (`ensemble`).

Trainers and loaders are named as "module:attribute" strings and imported on first use, so this module, which
config validation reads, imports no torch and none of the layers above it; a test or a plugin may register
callables directly. Adding a classical member is one file (its `ClassicalMember`) plus one `register_kind` entry
(docs/architecture.md).
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError
from .progress import DEFAULT_LOG_EVERY

NEURAL, CLASSICAL, ENSEMBLE = "neural", "classical", "ensemble"  # families; ENSEMBLE is also the kind's name


@dataclass
class TrainResult:
    """What every trainer returns: the bundle folder (None on the non-zero ranks of a multi-process run), the
    decision threshold, the validation metrics and the epochs run (classical: 1, or gbdt's boosting rounds)."""

    bundle_dir: Path | None
    threshold: float | None
    val_metrics: dict[str, Any]
    epochs_run: int
    work_dir: Path | None = None  # the working folder, when it was kept after success (multi-process runs, keep_work)
    # classical members with CV: `N_train×K` float64 logits of the training rows, each from the fold model that did
    # not see it (binary [0, log-odds]); the ensemble's cross-fitted combination uses them (None: not available)
    out_of_fold: Any = None
    # neural: the uncalibrated `Scores` of its validation (or holdout) rows after training — what its bundle gives
    # them by default when it calibrates nothing, as an ensemble's members — so the ensemble need not score a
    # member's holdout a second time (None: not kept)
    val_scores: Any = None


@dataclass(frozen=True)
class TrainRun:
    """How one training run goes, besides the config: passed whole from the API and CLI to every trainer.

    resume: continue from the last checkpoints in `<out>.work/`.
    progress: a live bar on a terminal, else a plain line every `log_every` seconds on stderr.
    keep_work: keep `<out>.work/` after success (an ensemble's members: their checkpoints must survive until the
        whole ensemble is written).
    log_every: seconds between two progress lines when stderr is not a terminal.
    callbacks: extra Lightning callbacks for neural training (tests inject faults here).
    sign_key: sign every bundle the run writes (an ensemble's members too) with this Ed25519 private key: its PEM
        file's path or PEM text (`signing`; `workflows.train.train` reads it before training starts). None: unsigned.
    holdout: the validation rows handed to the trainer are a holdout of the training rows (an ensemble's neural
        member), not the validation split: progress lines say `holdout_roc_auc`, not `val_roc_auc`.
    shared_states: where `train.freeze_layers` keeps the frozen layers' output for the next run of the same rows
        (`training.frozen_layers.SharedStates`; an ensemble's neural members); None: each run computes its own.
    """

    resume: bool = False
    progress: bool = True
    keep_work: bool = False
    log_every: float = DEFAULT_LOG_EVERY
    callbacks: Sequence[Any] = ()
    sign_key: Any = None
    holdout: bool = False
    shared_states: Any = None

    @classmethod
    def of(cls, run: "TrainRun | None" = None, **settings) -> "TrainRun":
        """`run` (or the defaults) with `settings` replacing fields; an unknown name is a `ConfigError`."""
        from dataclasses import fields, replace

        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ConfigError(f"unknown training option '{unknown[0]}'; choose from {', '.join(names)}")
        return replace(run or cls(), **settings)


def resolve(reference: str | Callable | type | None) -> Any:
    """A callable or class given directly, or named as "package.module:attribute" and imported now."""
    if reference is None or not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class ModelKind:
    """One model kind.

    name: the `model.fusion` value.
    family: `neural`, `classical` or `ensemble`.
    uses_text: whether it reads the dialogue (tab_only does not).
    description: one line for `--help` and the docs.
    trainer: `(cfg, train_df, val_df, out_dir, run: TrainRun) -> TrainResult`; writes the bundle.
    loader: `(path, cfg, meta) -> (preprocessor, model)` for a bundle whose manifest was checked.
    member: classical: its `classical.member.ClassicalMember` subclass (`fit` and storage).
    in_compare: `bsmfusion compare` trains it unless `--models` names others.
    """

    name: str
    family: str
    uses_text: bool
    description: str
    trainer: str | Callable
    loader: str | Callable
    member: str | type | None = None
    in_compare: bool = True

    def train(self, cfg, train_df, val_df, out_dir, run: TrainRun) -> TrainResult:
        return resolve(self.trainer)(cfg, train_df, val_df, out_dir, run)

    def load(self, path: Path, cfg, meta: dict[str, Any]):
        return resolve(self.loader)(path, cfg, meta)

    def member_class(self) -> type:
        if self.family != CLASSICAL or self.member is None:
            raise ConfigError(f"model kind '{self.name}' is not a classical member")
        return resolve(self.member)


NEURAL_TRAINER = "bsmfusion.training.fit:train_neural"
NEURAL_LOADER = "bsmfusion.bundle:load_neural"
CLASSICAL_TRAINER = "bsmfusion.classical.train:train_member"
CLASSICAL_LOADER = "bsmfusion.classical.storage:load_member"

# The built-in torch fusions and whether each reads the dialogue, known without importing torch: config validation
# (and so every CLI config error) stays fast. tests/models/test_fusions.py checks it against the fusion registry.
BUILTIN_FUSIONS: dict[str, bool] = {"concat": True, "cross_attn": True, "gate": True, "moe": True,
                                    "tab_only": False, "text_only": True}

_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind, *, replace: bool = False) -> ModelKind:
    """Add `kind` to the registry (a name taken is an error unless `replace`). Returns it."""
    if kind.family not in (NEURAL, CLASSICAL, ENSEMBLE):
        raise ValueError(f"model kind '{kind.name}': family must be neural, classical or ensemble, not '{kind.family}'")
    if kind.family == CLASSICAL and kind.member is None:
        raise ValueError(f"classical model kind '{kind.name}' needs its ClassicalMember class (member=...)")
    if kind.name in _KINDS and not replace:
        raise ValueError(f"model kind '{kind.name}' is registered already")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a registered kind (tests that register their own)."""
    _KINDS.pop(name, None)


for _name, _uses_text in BUILTIN_FUSIONS.items():
    register_kind(ModelKind(_name, NEURAL, _uses_text, f"torch fusion '{_name}' (models.fusion)", NEURAL_TRAINER,
                            NEURAL_LOADER))
register_kind(ModelKind(
    "tfidf_lr", CLASSICAL, True, "TF-IDF (word 1–2-grams + char 3–5-grams) of the parsed dialogue + numerics + "
    "one-hot → logistic regression", CLASSICAL_TRAINER, CLASSICAL_LOADER, member="bsmfusion.classical.tfidf_lr:TfidfLR"))
register_kind(ModelKind(
    "gbdt", CLASSICAL, True, "LightGBM on numerics + one-hot categoricals + the dialogue's TF-IDF (an SVD or its "
    "word columns)", CLASSICAL_TRAINER, CLASSICAL_LOADER, member="bsmfusion.classical.gbdt:GBDT"))
register_kind(ModelKind(
    "catboost", CLASSICAL, True, "CatBoost on the dialogue as a native text feature + numerics + native "
    "categoricals (optional: pip install catboost)", CLASSICAL_TRAINER, CLASSICAL_LOADER,
    member="bsmfusion.classical.catboost_member:CatBoostMember",
    in_compare=False))  # optional, and not measured yet: `compare --models catboost` trains it
register_kind(ModelKind(
    ENSEMBLE, ENSEMBLE, True, "fine-tuned neural members + classical members, weights by greedy selection on "
    "validation (model.ensemble)", "bsmfusion.ensemble.train:train_ensemble", "bsmfusion.ensemble.model:load_ensemble",
    in_compare=False))


def _registered_fusions() -> dict:
    """The fusion registry when `models.fusion` is imported (it is once anyone registered a fusion), else {}."""
    module = sys.modules.get("bsmfusion.models.fusion")
    return getattr(module, "FUSIONS", {})


def get_kind(name: str) -> ModelKind:
    """The kind `model.fusion: name` means; a `ConfigError` listing the choices when there is none."""
    if name in _KINDS:
        return _KINDS[name]
    fusions = _registered_fusions()
    if name in fusions:
        return ModelKind(name, NEURAL, bool(getattr(fusions[name], "uses_text", True)),
                         f"torch fusion '{name}' (registered)", NEURAL_TRAINER, NEURAL_LOADER)
    raise ConfigError(f"unknown model.fusion '{name}'; choose one of {', '.join(model_kinds())}")


def kinds_of(family: str) -> list[str]:
    names = [n for n, k in _KINDS.items() if k.family == family]
    if family == NEURAL:
        return sorted(set(names) | set(_registered_fusions()))
    return names


def neural_kinds() -> list[str]:
    """The torch fusions: the built-in ones and any registered with `@register_fusion`."""
    return kinds_of(NEURAL)


def classical_kinds() -> list[str]:
    """The classical members, in registration order (tfidf_lr, gbdt, catboost, then any registered later)."""
    return kinds_of(CLASSICAL)


def model_kinds() -> list[str]:
    """Every accepted `model.fusion` value: torch fusions first, then the classical members, then the ensemble."""
    return [*neural_kinds(), *classical_kinds(), *kinds_of(ENSEMBLE)]


def compare_kinds() -> list[str]:
    """What `bsmfusion compare` trains by default: every kind with `in_compare`."""
    return [name for name in model_kinds() if get_kind(name).in_compare]


def is_neural(name: str) -> bool:
    """True for a registered torch fusion (trained by Lightning, stored as safetensors weights)."""
    return name in neural_kinds()


def check_kind(name: str) -> str:
    """`name` when it is a model kind; else a `ConfigError` listing the choices."""
    get_kind(name)
    return name


def kind_uses_text(name: str) -> bool:
    """Whether a kind reads the dialogue (tab_only does not; the classical members always do)."""
    return get_kind(name).uses_text


def loader_for(bundle_kind: str, path: Path) -> Callable:
    """The loader of a bundle whose meta.json says `kind` (torch fusions all write `neural`)."""
    from .errors import BundleError

    if bundle_kind == NEURAL:
        return resolve(NEURAL_LOADER)
    if bundle_kind not in _KINDS:
        raise BundleError(f"bundle '{path}': meta.json kind '{bundle_kind}' is not one this bsmfusion can load; "
                          "upgrade bsmfusion (or register that kind first)")
    return _KINDS[bundle_kind].load
