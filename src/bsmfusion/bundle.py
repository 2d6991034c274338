"""Self-contained model bundles: config, preprocessing (JSON), tokenizer, encoder config, safetensors weights,
threshold, calibration and decision policy (meta.json), the validation scores policies are resolved on
(validation_scores.json, binary), label names, validation metrics, versions and a closed SHA-256 manifest, signed
with Ed25519 when a sign key is given (`manifest`). Never pickle.

Writes are atomic: everything goes to a temporary sibling folder that is renamed into place, so a crash never
leaves a half-written bundle that loads. Loading checks the folder against the manifest (no file missing, changed
or unlisted) and, given a verify key, the signature.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from . import strict_json
from .config import Config, bundle_config
from .errors import BundleError
from .manifest import check_bundle, check_manifest, write_manifest

WEIGHTS = "model.safetensors"
FORMAT_VERSION = 2  # 2: Shapley baselines, dropout inside fusion heads, PLR encoder, role-prefixed continuation chunks


@dataclass
class Bundle:
    """A loaded bundle: everything needed to score new rows."""

    path: Path
    cfg: Config
    preprocessor: Any  # data.preprocess.RowPreprocessor
    model: Any  # models.MultimodalClassifier, or a classical model (classical.tfidf_lr / gbdt / ensemble)
    meta: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def threshold(self) -> float | None:
        return self.meta.get("threshold")

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def label_values(self) -> list[Any]:
        """The class names in the training label column's type (`data.labels`), in class-id order."""
        return self.preprocessor.label_values

    @property
    def kind(self) -> str:
        """`neural` (a torch fusion), `tfidf_lr`, `gbdt` or `ensemble`; bundles written before kinds were neural."""
        return str(self.meta.get("kind", "neural"))


def private_key(sign_key, *, env: bool = False):
    """An Ed25519 private key from a key object, a PEM file's path or PEM text; None when there is none. `env`:
    without `sign_key`, the key `BSMFUSION_SIGN_KEY` holds (a path or PEM text) when set."""
    from . import signing

    if sign_key is not None and signing.is_private_key(sign_key):
        return sign_key
    source, name = signing.from_env(sign_key, "sign_key", signing.SIGN_KEY_ENV) if env else (sign_key, "{sign_key}")
    return None if source is None else signing.load_private_key(source, name)


def public_key(verify_key, *, env: bool = False):
    """An Ed25519 public key from a key object, a PEM file's path or PEM text; None when there is none. `env`:
    without `verify_key`, the key `BSMFUSION_VERIFY_KEY` holds (a path or PEM text) when set."""
    from . import signing

    if verify_key is not None and signing.is_public_key(verify_key):
        return verify_key
    source, name = (signing.from_env(verify_key, "verify_key", signing.VERIFY_KEY_ENV) if env
                    else (verify_key, "{verify_key}"))
    return None if source is None else signing.load_public_key(source, name)


def package_versions(*extra: str) -> dict[str, str]:
    """Versions of the packages a bundle depends on; `extra` names more (e.g. `sklearn`, `lightgbm`)."""
    import importlib

    import numpy
    import transformers

    from .version import __version__

    versions = {"bsmfusion": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "numpy": numpy.__version__, "python": platform.python_version()}
    for name in extra:
        versions[name] = importlib.import_module(name).__version__
    return versions


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the loss (class weights are a training concern), contiguous and on CPU."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if not k.startswith("loss_op.")}


def write_bundle(out_dir: str | Path, *, cfg: Config, preprocessor, tokenizer, model: torch.nn.Module,
                 threshold: float | None, metrics: dict[str, Any], extra_meta: dict[str, Any] | None = None,
                 files: dict[str, str] | None = None, sign_key=None) -> Path:
    """Write a torch fusion's bundle atomically into `out_dir` (replacing an older bundle there), signed with
    `sign_key` when given."""
    from safetensors.torch import save_file

    def payload(staging: Path) -> None:
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        text = getattr(model, "text_subnetwork", None)
        if text is not None:
            text.backbone.config.save_pretrained(str(staging / "encoder"))
        save_file(model_weights(model), str(staging / WEIGHTS))

    return write_bundle_folder(out_dir, cfg=cfg, preprocessor=preprocessor, threshold=threshold, metrics=metrics,
                               meta={"kind": "neural", **(extra_meta or {})}, payload=payload, files=files,
                               sign_key=sign_key)


def write_bundle_folder(out_dir: str | Path, *, cfg: Config, preprocessor, threshold: float | None,
                        metrics: dict[str, Any], meta: dict[str, Any], payload: Callable[[Path], None],
                        files: dict[str, str] | None = None, sign_key=None) -> Path:
    """The layout every bundle kind shares, written atomically: config.yaml, preprocessing.json, the kind's own files
    (`payload(staging_dir)` writes them), meta.json (kind, threshold, label names, versions + `meta`; a
    `versions` entry in `meta` names the extra packages whose versions to record), `files` (name → text, e.g.
    `validation_scores.json` from `decision.FittedDecision.files`),
    metrics.json and manifest.json with the SHA-256 of every file, subfolders included; with `sign_key` (an
    Ed25519 private key, its PEM file or PEM text) signature.json too (`manifest.sign_manifest`)."""
    sign_key = private_key(sign_key)  # a bad key fails before anything is written
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
        (staging / "preprocessing.json").write_text(preprocessor.to_json(), encoding="utf-8")
        payload(staging)
        for name, text in (files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        meta = {
            "format_version": FORMAT_VERSION,
            "fusion": cfg.model.fusion,
            "threshold": threshold,
            "label_names": preprocessor.label_names,
            "label_type": preprocessor.label_type,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **meta,
            "versions": package_versions(*meta.get("versions", ())),
        }
        (staging / "meta.json").write_text(strict_json.dumps(meta, indent=2), encoding="utf-8")
        (staging / "metrics.json").write_text(strict_json.dumps(metrics, indent=2, default=float), encoding="utf-8")
        write_manifest(staging, sign_key)
        normalize_modes(staging)
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def normalize_modes(folder: Path) -> None:
    """Give a bundle's files 0644 and its folders 0755 (what plain writes give under the usual umask 022): the
    staging folder comes from `tempfile.mkdtemp` (0700) and some writers create files 0600. Set explicitly, not
    from the umask, which can only be read by setting it, process-wide (a race with other threads)."""
    os.chmod(folder, 0o755)
    for path in Path(folder).rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename `staging` to `out_dir`; an existing bundle is moved aside first and removed after."""
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_manifest(path: Path) -> None:
    """The folder holds exactly the files its manifest lists, each with its SHA-256; else a `BundleError` naming
    the file (`manifest.check_manifest`)."""
    check_manifest(path)


def load_bundle(path: str | Path, *, verify: bool = True, verify_key=None) -> Bundle:
    """Rebuild preprocessing and model from the bundle alone (no encoder folder or network needed); the kind in
    meta.json picks the loader (`kinds.loader_for`). `verify`: check the closed manifest first (an ensemble's
    member folders skip it: the top manifest covers their files); `verify_key` (an Ed25519 public key, its PEM
    file or PEM text): also require the bundle's signature by that key."""
    from .kinds import loader_for

    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"model bundle '{path}' does not exist; pass the folder written by 'bsmfusion train --out'")
    if verify:
        check_bundle(path, public_key(verify_key))
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"bundle '{path}' was written in bundle format {meta.get('format_version')}; this bsmfusion "
                          f"reads format {FORMAT_VERSION} (weights and tokenisation changed): retrain it with this version")
    raw_cfg = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    cfg = bundle_config(raw_cfg, source=str(path / "config.yaml"))
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    preprocessor, model = loader_for(str(meta.get("kind", "neural")), path)(path, cfg, meta)
    return Bundle(path=path, cfg=cfg, preprocessor=preprocessor, model=model, meta=meta, metrics=metrics)


def load_neural(path: Path, cfg: Config, meta: dict[str, Any]):
    """(preprocessor, model) of a torch fusion's bundle: tokenizer, encoder config and safetensors weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from .data.preprocess import RowPreprocessor
    from .data.text import load_tokenizer
    from .models.classifier import build_model

    tokenizer = load_tokenizer(path / "tokenizer")
    preprocessor = RowPreprocessor.from_json(cfg, tokenizer, (path / "preprocessing.json").read_text(encoding="utf-8"))
    backbone = None
    if (path / "encoder" / "config.json").is_file():
        encoder_cfg = AutoConfig.from_pretrained(str(path / "encoder"), local_files_only=True)
        backbone = AutoModel.from_config(encoder_cfg)
    model = build_model(cfg, preprocessor.tabular.numeric_dim, preprocessor.tabular.cardinalities, backbone=backbone)
    state = load_file(str(path / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("loss_op.")]
    if missing or unexpected:
        raise BundleError(f"bundle '{path}': weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    return preprocessor, model
