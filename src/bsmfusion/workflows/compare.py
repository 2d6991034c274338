"""`bsmfusion compare`: rank every fusion, both single-modality baselines and the classical members (tfidf_lr,
gbdt) on one dataset in minutes; `ensemble` on request (`--models`).

Uses the frozen-encoder path: thread vectors (chunk vectors for ``text.chunk_reduce: attention``) are computed
once per split (and cached), then each model trains only its tabular encoder, fusion and head (and the attention). The leaderboard is printed and written as markdown and JSON.
The classical members train as `bsmfusion train` trains them (their `epochs` column: 1 for tfidf_lr, the boosting
rounds kept for gbdt); an ensemble's neural members use the frozen encoder too.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..bundle import load_bundle
from ..calibration import bundle_calibration
from ..config import Config
from ..data.dataset import Collator
from ..data.io import as_frame
from ..evaluation.metrics import classification_metrics
from ..kinds import check_kind, compare_kinds, is_neural
from ..models.scores import score_table
from ..precision import resolve_precision
from ..progress import phase_lines, stage
from ..scoring.options import ScoringOptions
from ..scoring.scorers import member_scorer
from ..training.fit import embedding_cache_dir
from ..training.frozen import attach_frozen_text_features
from .train import train


def default_models() -> list[str]:
    """Every kind the registry marks `in_compare`: each torch fusion (a user's own included) and each classical
    member; the ensemble runs only when asked for (--models ensemble)."""
    return compare_kinds()


def compare(cfg: Config, train_data, val_data, test_data, out_dir: str | Path, *, models: list[str] | None = None,
            epochs: int = 20, progress: bool = False) -> list[dict]:
    """Train and test each model of `models` (default: `default_models()`); returns the leaderboard rows, best
    first. `progress`: one line per model as it starts and ends (with its test ROC-AUC and time) and each model's
    own phase and progress lines on stderr."""
    with phase_lines(progress):
        return _compare(cfg, train_data, val_data, test_data, Path(out_dir), models, epochs, progress)


def _compare(cfg: Config, train_data, val_data, test_data, out_dir: Path, models: list[str] | None, epochs: int,
             progress: bool) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [as_frame(d) for d in (train_data, val_data, test_data)]
    rows = []
    models = models or default_models()
    for name in models:
        check_kind(name)  # unknown names fail before any training starts
    for i, name in enumerate(models, 1):
        with stage(f"compare: model {name} ({i}/{len(models)})") as step:
            rows.append(_one_model(cfg, name, frames, out_dir, epochs, progress))
            step.done = f"test roc_auc {rows[-1]['roc_auc']:.4f}, validation roc_auc {rows[-1]['val_roc_auc']:.4f}"
    rows.sort(key=lambda r: -r["roc_auc"])
    (out_dir / "leaderboard.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "leaderboard.md").write_text(leaderboard_markdown(rows))
    return rows


def _one_model(cfg: Config, name: str, frames: list[pd.DataFrame], out_dir: Path, epochs: int,
               progress: bool) -> dict:
    """Train model `name` (frozen encoder) on frames[0] / frames[1] and test it on frames[2]: its leaderboard row."""
    model_cfg = cfg.model_copy(deep=True)
    model_cfg.model.fusion = name
    model_cfg.train.freeze_encoder = True
    model_cfg.train.epochs = epochs
    model_cfg.train.patience = max(model_cfg.train.patience, 4)
    ensemble = model_cfg.model.ensemble  # an ensemble's frozen neural heads: the same patience
    ensemble.neural_patience = max(ensemble.neural_patience, 4)
    model_cfg.train.lr = model_cfg.train.head_lr
    started = time.perf_counter()
    result = train(model_cfg, frames[0], frames[1], out_dir / "models" / name, progress=progress)
    fit_seconds = time.perf_counter() - started
    labels, scores, threshold = _test_scores(model_cfg, result.bundle_dir, frames[2])
    metrics = classification_metrics(labels, scores.probs, threshold)
    return {"model": name, "roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"], "f1": metrics["f1"],
            "accuracy": metrics["accuracy"], "val_roc_auc": result.val_metrics["roc_auc"],
            "epochs": result.epochs_run, "fit_seconds": round(fit_seconds, 1),
            "text_share_mean": float(scores.text_share.mean())}


def _test_scores(cfg: Config, bundle_dir: Path, test: pd.DataFrame):
    """(labels, calibrated Scores, threshold) on the test split: neural fusions through the cached frozen-encoder
    vectors and the bundle's calibration, the classical kinds through their own (calibrated) scorer."""
    bundle = load_bundle(bundle_dir)
    if not is_neural(cfg.model.fusion):  # the classical kinds and the ensemble: their own calibrated scorer
        scores = member_scorer(bundle, ScoringOptions(batch_size=cfg.train.eval_batch_size)).score_frame(test)
        return bundle.preprocessor.encode_labels(test), scores, bundle.threshold
    test_table = bundle.preprocessor.encode(test)
    collator = Collator.for_text(cfg.text, bundle.preprocessor.pad_token_id)
    precision = resolve_precision(cfg.train.precision, "cpu")  # the one the threshold was chosen under
    if bundle.model.text_subnetwork is not None:
        attach_frozen_text_features(bundle.model.text_subnetwork, test_table, collator, embedding_cache_dir(cfg),
                                    precision=precision)
    scores = score_table(bundle.model, test_table, collator, batch_size=cfg.train.eval_batch_size, precision=precision)
    return test_table.labels, bundle_calibration(bundle).apply(scores), bundle.threshold


def leaderboard_markdown(rows: list[dict]) -> str:
    lines = ["| rank | model | test ROC-AUC | test PR-AUC | F1@val-thr | accuracy | val ROC-AUC | epochs | fit s | mean text_share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['model']} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['f1']:.3f} | {r['accuracy']:.3f} | "
                     f"{r['val_roc_auc']:.3f} | {r['epochs']} | {r['fit_seconds']:.0f} | {r['text_share_mean']:.2f} |")
    return "\n".join(lines) + "\n"
