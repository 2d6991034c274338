"""Classical bundles on disk, without pickle.

The layout every bundle shares (config.yaml, preprocessing.json, meta.json with `kind`, threshold, label names
and versions, metrics.json, manifest.json with the SHA-256 of every file, signature.json when signed), plus the member's own files:

* `tfidf.json` — per TF-IDF block (word, char) the vectorizer parameters and the vocabulary in column order;
* `weights.safetensors` — float64 arrays: `word_idf`, `char_idf` and the member's own (tfidf_lr: `coef`,
  `intercept`, `feature_mean`; gbdt: `svd_components` or `word_columns`, `text_background` (dense, B×(k|W + Q)), `tab_background`);
* `lightgbm.txt` (gbdt) — the booster in LightGBM's text model format (`gbdt_bagged`: one per CV fold,
  `lightgbm_fold_1.txt` ... `lightgbm_fold_k.txt`, their raw scores averaged), and `quoted_numbers.json` when it reads
  the quoted-numbers block (its roles and numeric column count);
* `catboost.cbm` (catboost) — the model in CatBoost's own binary format, and `catboost_background.json` — the
  background rows' rendered dialogues (`weights.safetensors` holds their `tab_background`).

An ensemble holds each member as a complete bundle under `members/<name>/` (see `ensemble`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..bundle import write_bundle_folder
from ..config import Config
from ..kinds import get_kind
from .member import ClassicalMember, table_preprocessor
from .text_features import TextFeaturizer

TFIDF_FILE = "tfidf.json"
ARRAYS_FILE = "weights.safetensors"
EXTRA_VERSIONS = ["sklearn", "lightgbm", "scipy"]


def save_member(model: ClassicalMember, folder: Path) -> None:
    """Write a fitted member's files into `folder`."""
    from safetensors.numpy import save_file

    arrays = dict(model.arrays())
    text = getattr(model, "text", None)
    if isinstance(text, TextFeaturizer):
        spec, text_arrays = text.state()
        (folder / TFIDF_FILE).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        arrays.update(text_arrays)
    save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(folder / ARRAYS_FILE))
    model.save_extra(folder)


def write_classical_bundle(out_dir: str | Path, *, cfg: Config, preprocessor, threshold: float | None,
                           metrics: dict[str, Any], meta: dict[str, Any], payload: Callable[[Path], None],
                           files: dict[str, str] | None = None, sign_key=None) -> Path:
    """A classical bundle (a member, or an ensemble when `payload` copies the members in), atomically; signed with
    `sign_key` when given. meta.json's versions: numpy, scikit-learn, LightGBM, SciPy and the packages `meta`'s
    `versions` names (a member's `packages`)."""
    return write_bundle_folder(out_dir, cfg=cfg, preprocessor=preprocessor, threshold=threshold, metrics=metrics,
                               meta={**meta, "versions": [*EXTRA_VERSIONS, *meta.get("versions", ())]},
                               payload=payload, files=files,
                               sign_key=sign_key)


def load_member(path: Path, cfg: Config, meta: dict[str, Any]):
    """(preprocessor, model) of a classical member's bundle whose manifest was checked: its registered class
    (`kinds.get_kind(meta kind).member_class()`) rebuilt from the arrays (and the TF-IDF featurizer, if stored)."""
    from safetensors.numpy import load_file

    preprocessor = table_preprocessor(cfg, state=(path / "preprocessing.json").read_text(encoding="utf-8"))
    cls = get_kind(meta["kind"]).member_class()
    arrays = load_file(str(path / ARRAYS_FILE)) if (path / ARRAYS_FILE).is_file() else {}
    text = None
    if (path / TFIDF_FILE).is_file():
        text = TextFeaturizer.from_state(json.loads((path / TFIDF_FILE).read_text(encoding="utf-8")), arrays)
    return preprocessor, cls.from_arrays(cfg, text, preprocessor.tabular, arrays, path)
