"""Before training: a rough time estimate from rows × tokens, and a hint when the table is small.

The cost model is deliberately simple: each neural fine-tuning costs `NEURAL_SECONDS_PER_TOKEN` per training row
per token of its thread (tokens ≈ characters / 4, capped at C·T) per epoch, for the epochs it is expected to run
(`expected_epochs`: an early-stopping one to `TYPICAL_BEST_EPOCH` plus its patience, at most `train.epochs`; an
ensemble's later members with `neural_epochs: first`, `TYPICAL_BEST_EPOCH`), each classical member
`CLASSICAL_SECONDS_PER_ROW` per row per fit (its CV folds plus the final fit), and an ensemble `ENSEMBLE_SECONDS`
besides. The constants are fitted to the benchmark runs of the ensemble whose neural members each trained all 3
epochs (patience 2; benchmarks/results/quality.json: dnd_nodeal, cb_nosale, clothing_recommend) on 2 AVX-512-BF16
EPYC cores, which they match to within a factor of about 1.6; they say nothing about a GPU, an AVX2-only machine
(fp32: several times slower) or a machine with many more cores, and the line says it is a rough estimate.
"""
from __future__ import annotations

import pandas as pd

from ..config import Config
from ..kinds import CLASSICAL, ENSEMBLE, get_kind
from ..progress import format_duration

NEURAL_SECONDS_PER_TOKEN = 4e-4  # per row-token and epoch (see the module docstring)
TYPICAL_BEST_EPOCH = 1  # where the fine-tuned members' holdout scores peaked on the three tasks (sometimes 2)
CLASSICAL_SECONDS_PER_ROW = 1e-3  # per row and fit: tfidf_lr took 10.6 s on dnd_nodeal's 10,034 rows
ENSEMBLE_SECONDS = 60.0  # an ensemble's fixed cost: loading its members, the bagged weight selection, scoring
CHARS_PER_TOKEN = 4
SMALL_TABLE = 500  # fewer training rows than this: the hint below
SMALL_TABLE_HINT = ("on {rows:,} training rows the default ensemble takes minutes where tfidf_lr alone takes "
                    "seconds; on 300-row cb_nosale tables it scored within 0.002 of its best member or above it "
                    "(5 draws, benchmarks/results/small_table.md): for a quick first look, --set model.fusion=tfidf_lr")


def tokens_per_row(cfg: Config, frame: pd.DataFrame) -> float:
    """Mean tokens a training row's thread gives the encoder, ≈ its text columns' characters / 4, capped at C·T."""
    columns = [c for c in cfg.data.text if c in frame.columns]
    if not columns or not len(frame):
        return 0.0
    chars = sum(frame[c].fillna("").astype(str).str.len() for c in columns)
    cap = cfg.text.max_chunks * cfg.text.chunk_tokens
    return float((chars / CHARS_PER_TOKEN).clip(upper=cap).mean())


def early_stopping_epochs(cfg: Config, patience: int, checks_per_epoch: int) -> float:
    """Epochs an early-stopping fine-tuning is expected to run: to its typical best, then `patience` scorings."""
    if cfg.train.keep_weights == "last" or cfg.train.stop_after_steps:
        return float(cfg.train.epochs)
    return min(float(cfg.train.epochs), TYPICAL_BEST_EPOCH + patience / checks_per_epoch)


def expected_epochs(cfg: Config) -> list[float]:
    """The epochs each neural fine-tuning of `cfg` is expected to run (an ensemble: one entry per neural member)."""
    kind = get_kind(cfg.model.fusion)
    if kind.family == CLASSICAL:
        return []
    if kind.family != ENSEMBLE:
        return [early_stopping_epochs(cfg, cfg.train.patience, cfg.train.checks_per_epoch)]
    settings = cfg.model.ensemble
    n = len(settings.neural_member_names)
    first = early_stopping_epochs(cfg, settings.neural_patience, settings.neural_checks_per_epoch)
    later = min(float(cfg.train.epochs), TYPICAL_BEST_EPOCH) if settings.neural_epochs == "first" else first
    return [first] + [later] * (n - 1) if n else []


def estimate_seconds(cfg: Config, frame: pd.DataFrame) -> float:
    """Rough wall-clock seconds to train `cfg` on the training rows `frame` (2 EPYC cores, the module's model)."""
    rows, kind = len(frame), get_kind(cfg.model.fusion)
    neural = sum(expected_epochs(cfg)) * rows * tokens_per_row(cfg, frame) * NEURAL_SECONDS_PER_TOKEN
    if kind.family == ENSEMBLE:
        settings = cfg.model.ensemble
        classical = len(settings.member_names) - len(settings.neural_member_names)
        fits = classical * (settings.member_cv_folds + 1)  # each classical member: its CV folds and the final fit
        return neural + fits * rows * CLASSICAL_SECONDS_PER_ROW + ENSEMBLE_SECONDS
    if kind.family == CLASSICAL:
        return (max(cfg.model.classical.cv_folds, 1) + 1) * rows * CLASSICAL_SECONDS_PER_ROW
    return neural


def before_training(cfg: Config, frame: pd.DataFrame) -> list[str]:
    """The lines `train` prints before it starts: the estimate, and for the default ensemble on a small table the
    hint to try tfidf_lr (the measurement it comes from is in the text)."""
    if cfg.train.freeze_encoder:  # compare's models and other frozen-encoder runs: the model above does not fit
        return []
    seconds = estimate_seconds(cfg, frame)
    tokens = tokens_per_row(cfg, frame)
    lines = [f"estimate: {cfg.model.fusion} on {len(frame):,} rows × ~{tokens:.0f} tokens: roughly "
             f"{format_duration(max(seconds, 1))} on 2 CPU cores (a rough estimate from rows × tokens, measured on "
             "2 AVX-512-BF16 EPYC cores; more cores or a GPU: less)"]
    kind = get_kind(cfg.model.fusion)
    if kind.family == ENSEMBLE and cfg.model.ensemble.neural_member_names and len(frame) < SMALL_TABLE:
        lines.append("hint: " + SMALL_TABLE_HINT.format(rows=len(frame)))
    return lines
