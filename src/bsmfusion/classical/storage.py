"""Classical bundles on disk, without pickle.

The layout every bundle shares (config.yaml, preprocessing.json, meta.json with `kind`, threshold, label names
and versions, metrics.json, manifest.json with the SHA-256 of every file), plus the member's own files:

* `tfidf.json` — per TF-IDF block (word, char) the vectorizer parameters and the vocabulary in column order;
* `weights.safetensors` — float64 arrays: `word_idf`, `char_idf` and the member's own (tfidf_lr: `coef`,
  `intercept`, `feature_mean`; gbdt: `svd_components`, `text_mean`, `tab_mean`);
* `lightgbm.txt` (gbdt) — the booster in LightGBM's text model format.

An ensemble holds each member as a complete bundle under `members/<name>/` (see `classical.ensemble`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..bundle import write_bundle_folder
from ..config import Config
from ..errors import BundleError
from ..models.kinds import ENSEMBLE
from .member import ClassicalMember, table_preprocessor
from .text_features import TextFeaturizer

TFIDF_FILE = "tfidf.json"
ARRAYS_FILE = "weights.safetensors"
EXTRA_VERSIONS = ["sklearn", "lightgbm", "scipy"]


def member_class(kind: str, path: Path) -> type[ClassicalMember]:
    from .gbdt import GBDT
    from .tfidf_lr import TfidfLR

    classes = {"tfidf_lr": TfidfLR, "gbdt": GBDT}
    if kind not in classes:
        raise BundleError(f"bundle '{path}': meta.json kind '{kind}' is not one this bsmfusion can load; upgrade bsmfusion")
    return classes[kind]


def save_member(model: ClassicalMember, folder: Path) -> None:
    """Write a fitted member's files into `folder`."""
    from safetensors.numpy import save_file

    spec, arrays = model.text.state()
    (folder / TFIDF_FILE).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    arrays = {**arrays, **model.arrays()}
    save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(folder / ARRAYS_FILE))
    model.save_extra(folder)


def write_classical_bundle(out_dir: str | Path, *, cfg: Config, preprocessor, threshold: float | None,
                           metrics: dict[str, Any], meta: dict[str, Any], payload: Callable[[Path], None],
                           files: dict[str, str] | None = None) -> Path:
    """A classical bundle (a member, or an ensemble when `payload` copies the members in), atomically."""
    return write_bundle_folder(out_dir, cfg=cfg, preprocessor=preprocessor, threshold=threshold, metrics=metrics,
                               meta={**meta, "versions": EXTRA_VERSIONS}, payload=payload, files=files)


def load_classical(path: Path, cfg: Config, meta: dict[str, Any]):
    """(preprocessor, model) of a classical bundle whose manifest was checked."""
    from safetensors.numpy import load_file

    preprocessor = table_preprocessor(cfg, state=(path / "preprocessing.json").read_text(encoding="utf-8"))
    kind = meta["kind"]
    if kind == ENSEMBLE:
        from .ensemble import EnsembleModel

        return preprocessor, EnsembleModel.load(path, cfg, meta)
    cls = member_class(kind, path)
    arrays = load_file(str(path / ARRAYS_FILE))
    text = TextFeaturizer.from_state(json.loads((path / TFIDF_FILE).read_text(encoding="utf-8")), arrays)
    return preprocessor, cls.from_arrays(cfg, text, preprocessor.tabular, arrays, path)
