"""`model.fusion: ensemble`: a neural fusion plus the classical members, weighted by greedy ensemble selection.

Which rows serve what:

* the neural member fits on the training rows minus a seeded holdout (`model.ensemble.member_holdout`, 15%),
  which serves its early stopping and best checkpoint (`refit_neural`: then trained again on all training rows for
  the epoch count that scored best there, last weights kept); tfidf_lr and gbdt, cheap enough to refit k times, fit on
  all training rows and choose C / boosting rounds by `member_cv_folds`-fold (5) cross-validation on them. The
  validation rows, untouched by any of those choices, then fit the member weights, the calibration and the
  threshold. `neural_seeds: n` trains n neural members (neural, neural_2, ...; seeds train.seed + k - 1, each drawing
  its own holdout, so together they learn from more of the training rows) that enter the selection as members of
  their own. (Measured on cb_nosale: tfidf_lr's C chosen on an 82-row holdout gave 0.841 test ROC-AUC against
  0.869 chosen on the 96 validation rows; with `member_holdout: 0` the neural member early-stops on the
  validation rows and looks better than it is: 0.899 validation vs 0.82 test, and selection gave it 70%.)
* weights: greedy ensemble selection with replacement (Caruana et al. 2004, as AutoGluon does): `iterations` (25)
  times add the member (again, possibly) that gives the best combined validation score — binary: ROC-AUC, log
  loss breaking ties; multiclass: log loss — and keep the prefix of picks with the best score. Two guards from
  Caruana et al. 2006 against fitting ~100 validation rows: every selection starts from `init_picks` (5) picks of
  each member (equal weights are the prior, worth 20 picks for the default four members against 25 greedy ones),
  and the weights are the mean over `bags` (32) selections on bootstrap resamples of the validation rows. Measured
  with one fine-tuned member (3 seeds, test ROC-AUC / PR-AUC): cb_nosale plain greedy 0.874 / 0.712, one initial
  pick 0.881 / 0.731, five 0.883 / 0.747; dnd_nodeal 0.867 / 0.808, 0.866 / 0.806, 0.866 / 0.807 (on cb_nosale's 96 validation rows the
  fine-tuned member looks best and is the weakest on test). With `bags: 0` and `init_picks: 0` it is the plain
  selection, which never scores below its best member on validation.
* calibration and threshold: `train.calibration` is fitted on the combined validation score, then
  `train.decision` chooses the threshold on the calibrated probabilities (`decision.fit_decision`); the members
  themselves train uncalibrated, with max F1 (`member_config`), so only the combined score is calibrated and a
  policy one member cannot meet does not stop the ensemble.

How members combine: in log-odds space (binary: the weighted sum of the members' log-odds; multiclass: of their
log-probabilities, i.e. logits up to a per-row constant, so the probabilities are a normalised weighted geometric
mean). The Shapley split is linear in that score, so the ensemble's contributions are the weighted sums of the
members' contributions and stay exact: text + tab + baseline = the ensemble's log-odds (multiclass: the
weighted sum of the members' logits of the ensemble's predicted class; members that predicted another class are
re-split at it).

Bundle: the usual top-level files (config, preprocessing, meta with the weights and each member's validation
metrics, metrics, manifest) and each member as a complete bundle under `members/<name>/`, its files listed in
the top manifest too.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..calibration import score_logits, softmax
from ..config import Config, EnsembleConfig
from ..data.groups import group_codes
from ..data.validation import split_meta
from ..evaluation.metrics import classification_metrics
from ..models.scores import Scores
from ..precision import Precision
from ..progress import DEFAULT_LOG_EVERY
from .storage import write_classical_bundle

log = logging.getLogger("bsmfusion.train")
MEMBERS_DIR = "members"
SUMMARY_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss")


def member_logits(scores: Scores, num_classes: int) -> np.ndarray:
    """A member's `N×K` float64 logits: binary [0, log-odds] from its exact split (text + tab + baseline);
    multiclass its log-probabilities (`calibration.score_logits`, the logits calibration scales too)."""
    return score_logits(scores, num_classes)


def selection_key(labels: np.ndarray, logits: np.ndarray) -> tuple[float, ...]:
    """Higher is better. Binary: (ROC-AUC, −log loss); multiclass: (−log loss,). Same metric code as the bundle's
    validation metrics, so the ensemble's stored ROC-AUC is ≥ its best member's."""
    metrics = classification_metrics(labels, softmax(logits), None)
    if logits.shape[1] == 2:
        auc = metrics["roc_auc"]
        return (auc if np.isfinite(auc) else -np.inf, -metrics["log_loss"])
    return (-metrics["log_loss"],)


def weighted_sum(values: list[np.ndarray], weights) -> np.ndarray:
    """Σ_m w_m·values_m, always summed in member order (selection and scoring give bit-identical results)."""
    total = np.zeros_like(np.asarray(values[0], dtype=np.float64))
    for w, value in zip(weights, values):
        if w:
            total = total + float(w) * np.asarray(value, dtype=np.float64)
    return total


def greedy_selection(logits: list[np.ndarray], labels: np.ndarray, iterations: int = 25, *,
                     init_picks: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Ensemble selection with replacement over member logits (`M` arrays `N×K`).

    Args:
        logits: each member's validation logits.
        labels: the validation label ids.
        iterations: picks after the start.
        init_picks: start from this many picks of every member (equal weights, a prior whose strength is k·M picks
            against the greedy ones); the start is a candidate too. With 0 the first pick is the best member alone,
            so the result never scores below it on these rows.

    Returns:
        (weights `M`, summing to 1; the trajectory: per step the member picked and the combined key).
    """
    m_count = len(logits)
    counts = np.full(m_count, float(init_picks))
    trajectory: list[dict[str, Any]] = []
    history: list[np.ndarray] = []
    if init_picks:
        history.append(counts / counts.sum())
        trajectory.append({"step": 0, "picked": None, "key": list(selection_key(labels, weighted_sum(logits, history[0])))})
    for step in range(1, iterations + 1):
        total = counts.sum() + 1
        candidates = [(counts + np.eye(m_count)[m]) / total for m in range(m_count)]
        keys = [selection_key(labels, weighted_sum(logits, w)) for w in candidates]
        best = max(range(m_count), key=lambda m: (keys[m], -m))  # ties: the earlier member
        counts = counts + np.eye(m_count)[best]
        history.append(counts / total)
        trajectory.append({"step": step, "picked": best, "key": list(keys[best])})
    stop = max(range(len(trajectory)), key=lambda i: (tuple(trajectory[i]["key"]), -i))  # first best prefix
    return history[stop], trajectory[:stop + 1]


def bagged_selection(logits: list[np.ndarray], labels: np.ndarray, iterations: int = 25, *, bags: int = 32,
                     init_picks: int = 5, seed: int = 0) -> tuple[np.ndarray, list[list[float]]]:
    """The mean of `bags` greedy selections, each on a bootstrap resample of the validation rows (Caruana et al.
    2006: bagging the selection curbs its overfitting to a small hill-climbing set). A resample with one class
    only is drawn again. Returns (weights `M`, each bag's weights)."""
    rng = np.random.default_rng(seed)
    per_bag: list[np.ndarray] = []
    while len(per_bag) < bags:
        rows = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[rows])) < len(np.unique(labels)):
            continue
        weights, _ = greedy_selection([z[rows] for z in logits], labels[rows], iterations, init_picks=init_picks)
        per_bag.append(weights)
    return np.mean(per_bag, axis=0), [w.round(6).tolist() for w in per_bag]


def fit_weights(cfg: Config, logits: list[np.ndarray], labels: np.ndarray,
                names: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The member weights `M` from the members' validation `logits` (`model.ensemble`'s selection settings) and
    what meta.json records of the selection. `benchmarks/quality.py --recombine` calls this on stored member scores."""
    settings = cfg.model.ensemble
    selection: dict[str, Any] = {"rows": "validation", "iterations": settings.iterations,
                                 "init_picks": settings.init_picks, "bags": settings.bags}
    if settings.bags:
        weights, selection["bag_weights"] = bagged_selection(logits, labels, settings.iterations, bags=settings.bags,
                                                             init_picks=settings.init_picks, seed=cfg.train.seed)
    else:
        weights, trajectory = greedy_selection(logits, labels, settings.iterations, init_picks=settings.init_picks)
        selection.update(picks=[None if t["picked"] is None else names[t["picked"]] for t in trajectory],
                         trajectory=trajectory)
    return weights, selection


def combine(parts: list[tuple[float, Scores]], num_classes: int) -> tuple[np.ndarray, Scores]:
    """(combined logits `N×K`, Scores) of weighted member scores; contributions are the weighted sums."""
    weights = [w for w, _ in parts]
    logits = weighted_sum([member_logits(s, num_classes) for _, s in parts], weights)
    text, tab, base = (weighted_sum([getattr(s, name) for _, s in parts], weights)
                       for name in ("text_contribution", "tab_contribution", "baseline_score"))
    return logits, Scores(probs=softmax(logits), text_contribution=text, tab_contribution=tab, baseline_score=base)


class EnsembleScorer:
    """Scores a frame with every member of positive weight and combines them (`combine`)."""

    def __init__(self, cfg: Config, members: list[tuple[str, float, Any]]):
        self.cfg = cfg
        self.members = members  # (name, weight, scorer)
        used = sorted({scorer.precision.used for _, _, scorer in members})
        self.precision = Precision("ensemble", "+".join(used), self.describe_precision())

    @property
    def text_columns(self) -> list[str]:
        return list(self.cfg.data.text) if any(s.text_columns for _, _, s in self.members) else []

    def describe_precision(self) -> str:
        return "; ".join(f"{name} ×{weight:.2f}: {scorer.describe_precision()}" for name, weight, scorer in self.members)

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None) -> Scores:
        k = self.cfg.model.num_classes
        parts = [(w, scorer.score_frame(frame)) for _, w, scorer in self.members]
        logits, combined = combine(parts, k)
        if k == 2 or len(frame) == 0:
            return combined
        target = logits.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
        resplit = [(w, self._split_at(scorer, frame, s, target)) for (_, w, scorer), (_, s) in zip(self.members, parts)]
        _, split = combine(resplit, k)
        return Scores(combined.probs, split.text_contribution, split.tab_contribution, split.baseline_score)

    @staticmethod
    def _split_at(scorer, frame: pd.DataFrame, scores: Scores, target: np.ndarray) -> Scores:
        """The member's split of class `target`'s logit: rows it split at another class are scored again."""
        rows = np.flatnonzero(np.asarray(scores.probs).argmax(axis=1) != target)
        if not len(rows):
            return scores
        again = scorer.score_frame(frame.iloc[rows].reset_index(drop=True), targets=target[rows])
        fields = {name: np.array(getattr(scores, name), dtype=np.float64, copy=True)
                  for name in ("text_contribution", "tab_contribution", "baseline_score")}
        for name, values in fields.items():
            values[rows] = getattr(again, name)
        return Scores(probs=scores.probs, **fields)


@dataclass
class EnsembleMember:
    name: str  # neural | neural_2 ... | tfidf_lr | gbdt
    weight: float
    bundle: Any  # bundle.Bundle; None when the weight is 0 (not loaded)


class EnsembleModel:
    """A loaded ensemble bundle: its members (those of weight 0 are not loaded)."""

    kind = "ensemble"

    def __init__(self, cfg: Config, members: list[EnsembleMember]):
        self.cfg = cfg
        self.members = members

    @classmethod
    def load(cls, path: Path, cfg: Config, meta: dict[str, Any]) -> "EnsembleModel":
        from ..bundle import load_bundle

        members = [EnsembleMember(m["name"], float(m["weight"]),
                                  load_bundle(path / MEMBERS_DIR / m["name"], verify=False) if m["weight"] > 0 else None)
                   for m in meta["members"]]  # the top manifest already covers every member file
        return cls(cfg, members)

    def scorer(self, **options) -> EnsembleScorer:
        """One scorer per member of positive weight, built with the same options (batch size, device, precision)."""
        from ..inference.scorers import build_scorer

        return EnsembleScorer(self.cfg, [(m.name, m.weight, build_scorer(m.bundle, **options))
                                         for m in self.members if m.weight > 0])


def member_config(cfg: Config, name: str) -> Config:
    """The config a member trains with: this config with `model.fusion` = the member's kind; neural_k trains with
    seed `train.seed + k - 1` (`neural_seeds`); classical members choose C / boosting rounds by
    `member_cv_folds`-fold CV on the training rows, not on the validation rows."""
    member = cfg.model_copy(deep=True)
    k = EnsembleConfig.neural_index(name)
    member.model.fusion = cfg.model.ensemble.neural if k is not None else name
    member.train.calibration, member.train.decision = "none", "max_f1"  # the ensemble calibrates the combined score
    if k is not None:
        member.train.seed = cfg.train.seed + k - 1
    else:
        member.model.classical.cv_folds = cfg.model.ensemble.member_cv_folds
    return member


def member_rows(cfg: Config) -> dict[str, str]:
    """Which rows each member fitted on and chose on (for meta.json)."""
    settings = cfg.model.ensemble
    whole = f", each '{cfg.data.group}' group on one side" if cfg.data.group else ""
    classical = f"tfidf_lr, gbdt: all training rows, choices by {settings.member_cv_folds}-fold CV on them{whole}"
    n = settings.neural_seeds
    holdouts = ", each its own holdout" if settings.member_holdout else ""
    neural = "neural" if n == 1 else f"neural..neural_{n} (seeds train.seed..+{n - 1}{holdouts})"
    if not settings.member_holdout:
        return {"fit": f"{neural}: all training rows; {classical}", "choices": f"{neural}: validation"}
    if settings.refit_neural:
        return {"fit": f"{neural}: all training rows, refitted for the epoch count chosen on the holdout; {classical}",
                "choices": f"{neural}: {settings.member_holdout:.0%} of the training rows{whole} (its epoch count)"}
    return {"fit": f"{neural}: training rows minus the holdout; {classical}",
            "choices": f"{neural}: {settings.member_holdout:.0%} of the training rows{whole}"}


def refit_neural(cfg: Config, name: str, holdout_bundle, train_df: pd.DataFrame, val_df: pd.DataFrame, work: Path,
                 **train_kwargs):
    """`model.ensemble.refit_neural`: the neural member again, from scratch on all training rows for the epoch count
    that scored best on the holdout, keeping its last weights (so the validation rows choose nothing).
    Returns (TrainResult, meta to record: the epoch count and the holdout run's per-epoch history)."""
    from ..training.fit import train
    from ..training.history import best_epoch

    history = holdout_bundle.meta["validation_history"]
    epochs = best_epoch(history, holdout_bundle.meta["monitor"])
    refit = member_config(cfg, name)
    refit.train.epochs, refit.train.keep_weights = epochs, "last"
    log.info("ensemble: refitting member %s on all %d training rows for %d epoch(s)", name, len(train_df), epochs)
    result = train(refit, train_df, val_df, work, keep_work=True, **train_kwargs)
    return result, {"epochs": epochs, "holdout_history": history}


def split_member_holdout(train_df: pd.DataFrame, val_df: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows members fit on, rows members choose on): a seeded `model.ensemble.member_holdout` share of the training
    rows (of its groups when `data.group` is set), so the members' early stopping never sees the validation rows
    that later fit the weights."""
    share = cfg.model.ensemble.member_holdout
    if share == 0:
        return train_df, val_df
    if cfg.data.group:  # whole groups: a held-out row whose twin trained the member would flatter late epochs
        codes = group_codes(train_df, cfg.data.group)
        held = (np.random.default_rng(cfg.train.seed).random(int(codes.max()) + 1) < share)[codes]
    else:
        held = np.random.default_rng(cfg.train.seed).random(len(train_df)) < share
    return train_df[~held].reset_index(drop=True), train_df[held].reset_index(drop=True)


def train_ensemble(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: str | Path, *,
                   resume: bool = False, progress: bool = False, log_every: float = DEFAULT_LOG_EVERY, callbacks=()):
    """Train every member of `model.ensemble.members`, choose the weights and the threshold on validation (see the
    module docstring for which rows serve what) and write the ensemble bundle. Returns a `TrainResult`.
    `progress`, `log_every` and `callbacks` go to the members' `training.fit.train` (the neural one uses them)."""
    from ..bundle import load_bundle
    from ..inference.scorers import build_scorer
    from ..training.fit import TrainResult, train
    from ..decision import fit_decision
    from .train import prepare_labels

    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".work") / MEMBERS_DIR
    preprocessor, _, y_val = prepare_labels(cfg, train_df, val_df)
    k = cfg.model.num_classes
    settings = cfg.model.ensemble
    neural_names = settings.neural_member_names
    fitted, refits = [], {}
    run = dict(resume=resume, progress=progress, log_every=log_every, callbacks=callbacks)
    for name in settings.member_names:
        log.info("ensemble: training member %s", name)
        neural = name in neural_names
        member_cfg = member_config(cfg, name)
        # neural_k's own seed draws its own holdout; classical members: val_df is reported only
        rows = split_member_holdout(train_df, val_df, member_cfg) if neural else (train_df, val_df)
        # keep_work: the member's checkpoints stay for --resume until the ensemble's bundle is written
        result = train(member_cfg, *rows, work / name, keep_work=True, **run)
        bundle = load_bundle(result.bundle_dir)
        if neural and settings.refit_neural and settings.member_holdout:
            result, refits[name] = refit_neural(cfg, name, bundle, train_df, val_df, work / f"{name}_refit", **run)
            bundle = load_bundle(result.bundle_dir)
        scores = build_scorer(bundle).score_frame(val_df)
        fitted.append((name, bundle, scores, result))
    logits = [member_logits(s, k) for _, _, s, _ in fitted]
    names = [name for name, *_ in fitted]
    weights, selection = fit_weights(cfg, logits, y_val, names)
    _, val_scores = combine([(w, s) for w, (_, _, s, _) in zip(weights, fitted)], k)
    decided = fit_decision(cfg, y_val, val_scores)  # calibration of the combined score, then the threshold
    threshold = decided.threshold
    val_metrics = classification_metrics(y_val, decided.scores.probs, threshold)
    members_meta = [{"name": name, "fusion": bundle.cfg.model.fusion, "weight": float(w),
                     "validation": {m: result.val_metrics.get(m) for m in SUMMARY_METRICS},
                     "selection_key": list(selection_key(y_val, z)),  # the member alone, as selection saw it
                     **({"refit": refits[name]} if name in refits else {})}
                    for w, z, (name, bundle, _, result) in zip(weights, logits, fitted)]
    meta = {"kind": "ensemble", "combine": "weighted sum of member log-odds (multiclass: log-probabilities)",
            "weights": {name: float(w) for name, w in zip(names, weights)}, "members": members_meta,
            "member_rows": member_rows(cfg),
            "selection": selection,
            "train_rows": len(train_df), "val_rows": len(val_df), **split_meta(train_df, cfg), **decided.meta()}

    def payload(staging: Path) -> None:
        for name, bundle, _, _ in fitted:
            shutil.copytree(bundle.path, staging / MEMBERS_DIR / name)

    metrics = {"validation": val_metrics, "members": {name: result.val_metrics for name, _, _, result in fitted}}
    write_classical_bundle(out_dir, cfg=cfg, preprocessor=preprocessor, threshold=threshold, metrics=metrics,
                           meta=meta, payload=payload, files=decided.files())
    log.info("ensemble weights %s, validation ROC-AUC %.4f", meta["weights"], val_metrics.get("roc_auc", float("nan")))
    neural_epochs = [result.epochs_run for name, _, _, result in fitted if name in neural_names]
    epochs = max(neural_epochs, default=1)
    return TrainResult(out_dir, threshold, val_metrics, epochs)
