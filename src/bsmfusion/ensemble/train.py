"""Training `model.fusion: ensemble`: its members, their weights, the calibration and the threshold.

Which rows serve what:

* each neural member (neural, neural_2, ... with `neural_seeds`; seeds train.seed + k - 1) fits on the training
  rows minus a seeded holdout (`model.ensemble.member_holdout`): the first early-stops there (best checkpoint,
  `neural_patience`, `neural_checks_per_epoch` scorings an epoch), and with `neural_epochs: first` the others
  stop after the optimiser steps it chose, on the same schedule (`own`: each early-stops on its holdout too); `refit_neural`: each
  is then trained again on all training rows for the epochs of that choice;
  the classical members, cheap enough to refit k times, fit on all training rows and choose their settings by
  `member_cv_folds`-fold cross-validation on them. The validation rows, untouched by any of those choices, then
  fit the member weights (`selection`), the calibration and the threshold — with `combine_on: cross_fit` (the
  default) together with the training rows every member scored out of sample (`cross_fit`; the neural members
  then share one holdout, drawn with train.seed).
* the members train uncalibrated, with max F1 (`member_config`): only the combined score is calibrated, and a
  policy one member cannot meet does not stop the ensemble.

Every member is trained by the trainer the kind registry names for it (`kinds.get_kind`), never by the
dispatcher that called this one. Measurements behind the defaults: docs/benchmarks.md.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..bundle import load_bundle
from ..classical.storage import write_classical_bundle
from ..classical.train import prepare_labels
from ..config import Config, EnsembleConfig
from ..data.groups import group_codes
from ..data.validation import split_meta
from ..decision import check_feasible
from ..kinds import TrainResult, TrainRun, get_kind
from ..progress import stage
from ..scoring.scorers import build_scorer
from ..training.fit import clear_stale_work, finish_work_folder
from ..training.frozen_layers import SharedStates
from ..training.history import best_epoch, best_row
from .model import MEMBERS_DIR
from .cross_fit import CombinationRows, fit_combination, pool, shared_holdout
from .selection import SUMMARY_METRICS, member_logits, selection_key

log = logging.getLogger("bsmfusion.train")
# metrics.json: what the ensemble's "validation" metrics are; each member's are under "holdout" (a neural member:
# its own holdout of the training rows) or "validation" (classical members, choices by CV on the training rows)
FITTED_NOTE = ("the member weights, the calibration and the threshold were fitted on these rows: optimistic; "
               "evaluate on a test table for an unbiased estimate")


def member_config(cfg: Config, name: str, steps: int | None = None) -> Config:
    """The config a member trains with: this config with `model.fusion` = the member's kind; neural_k trains with
    seed `train.seed + k - 1` (`neural_seeds`) and early-stops with `neural_patience`, scoring its holdout
    `neural_checks_per_epoch` times an epoch, or, given `steps` (the optimiser steps after which the first neural
    member scored best: `neural_epochs: first`), stops after that many on the same schedule and keeps its last
    weights; classical members choose C / boosting rounds by `member_cv_folds`-fold CV on the training rows, not on
    the validation rows."""
    member = cfg.model_copy(deep=True)
    k = EnsembleConfig.neural_index(name)
    member.model.fusion = cfg.model.ensemble.neural if k is not None else name
    member.train.calibration, member.train.decision = "none", "max_f1"  # the ensemble calibrates the combined score
    if k is not None:
        member.train.seed = cfg.train.seed + k - 1
        member.train.patience = cfg.model.ensemble.neural_patience
        member.train.checks_per_epoch = cfg.model.ensemble.neural_checks_per_epoch
        if steps is not None:
            member.train.stop_after_steps, member.train.keep_weights, member.train.checks_per_epoch = steps, "last", 1
    else:
        member.model.classical.cv_folds = cfg.model.ensemble.member_cv_folds
    return member


def member_rows(cfg: Config) -> dict[str, str]:
    """Which rows each member fitted on and chose on (for meta.json)."""
    settings = cfg.model.ensemble
    whole = f", each '{cfg.data.group}' group on one side" if cfg.data.group else ""
    names = [name for name in settings.member_names if EnsembleConfig.neural_index(name) is None]
    classical = (f"{', '.join(names)}: all training rows, choices by {settings.member_cv_folds}-fold CV on them{whole}"
                 if names else "no classical member")
    n = settings.neural_seeds
    own = "one shared holdout" if settings.combine_on == "cross_fit" else "each its own holdout"
    holdouts = f", {own}" if settings.member_holdout else ""
    neural = "neural" if n == 1 else f"neural..neural_{n} (seeds train.seed..+{n - 1}{holdouts})"
    later = (f"; neural_2..neural_{n} stop at the optimiser step neural chose there"
             if n > 1 and settings.neural_epochs == "first" else "")
    if not settings.member_holdout:
        return {"fit": f"{neural}: all training rows; {classical}", "choices": f"{neural}: validation{later}"}
    if settings.refit_neural:
        return {"fit": f"{neural}: all training rows, refitted for the epoch count chosen on the holdout; {classical}",
                "choices": f"{neural}: {settings.member_holdout:.0%} of the training rows{whole} (its epoch count)"
                           f"{later}"}
    return {"fit": f"{neural}: training rows minus the holdout; {classical}",
            "choices": f"{neural}: {settings.member_holdout:.0%} of the training rows{whole}{later}"}


def refit_neural(cfg: Config, name: str, holdout_bundle, train_df: pd.DataFrame, val_df: pd.DataFrame, work: Path,
                 run: TrainRun, epochs: int | None = None):
    """`model.ensemble.refit_neural`: the neural member again, from scratch on all training rows for `epochs` (by
    default the epoch of its best holdout scoring, a scoring inside an epoch counting as the whole epoch), keeping its
    last weights (so the validation rows choose nothing).
    Returns (TrainResult, meta to record: the epoch count and the holdout run's validation history)."""
    history = holdout_bundle.meta["validation_history"]
    epochs = epochs or best_epoch(history, holdout_bundle.meta["monitor"])
    refit = member_config(cfg, name)
    refit.train.epochs, refit.train.keep_weights = epochs, "last"
    log.info("ensemble: refitting member %s on all %d training rows for %d epoch(s)", name, len(train_df), epochs)
    result = get_kind(refit.model.fusion).train(refit, train_df, val_df, work, run)
    return result, {"epochs": epochs, "holdout_history": history}


def holdout_mask(train_df: pd.DataFrame, cfg: Config, seed: int) -> np.ndarray:
    """The `model.ensemble.member_holdout` share of the training rows drawn with `seed` (whole `data.group`
    groups), as a boolean mask; all False when the share is 0."""
    share = cfg.model.ensemble.member_holdout
    if share == 0:
        return np.zeros(len(train_df), dtype=bool)
    codes = group_codes(train_df, cfg.data.group) if cfg.data.group else None
    return shared_holdout(len(train_df), share, seed, codes)


def split_member_holdout(train_df: pd.DataFrame, val_df: pd.DataFrame, cfg: Config,
                         held: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows members fit on, rows members choose on): the `held` rows of the training table (default: the share
    drawn with `cfg.train.seed`), so the members' early stopping never sees the validation rows that later fit
    the weights; (train_df, val_df) when nothing is held out."""
    held = holdout_mask(train_df, cfg, cfg.train.seed) if held is None else held
    if not held.any():
        return train_df, val_df
    return train_df[~held].reset_index(drop=True), train_df[held].reset_index(drop=True)


def member_out_of_sample(bundle, result: TrainResult, holdout: pd.DataFrame | None, shared: np.ndarray,
                         num_classes: int) -> np.ndarray | None:
    """A member's `N×K` logits of the combination's training rows: a neural member scores the shared `holdout`
    rows itself (the checkpoint it chose there); a classical member gives its out-of-fold logits of those rows
    (of every training row when no row is held out for neural members). None when it has none. A neural member's
    holdout scores from its own training run (`TrainResult.val_scores`) are used when it kept them."""
    if holdout is not None:
        scores = result.val_scores
        if scores is None or len(scores.probs) != len(holdout):
            scores = build_scorer(bundle).score_frame(holdout)
        return member_logits(scores, num_classes)
    if result.out_of_fold is None:
        return None
    return result.out_of_fold[shared] if shared.any() else result.out_of_fold


def train_ensemble(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: str | Path,
                   run: TrainRun = TrainRun()) -> TrainResult:
    """Train every member of `model.ensemble.members`, fit the weights, calibration and threshold (`combine_on`; see the
    module docstring for which rows serve what) and write the ensemble bundle. Members train in
    `<out_dir>.work/members/` (kept for `--resume` until the bundle is written; removed then unless
    `run.keep_work`); `run` reaches every member (the neural ones use its progress and callbacks; with
    `run.sign_key` each member bundle is signed, and so is the ensemble's, whose manifest lists every member file)."""
    out_dir = Path(out_dir)
    top_work = out_dir.with_name(out_dir.name + ".work")
    clear_stale_work(top_work, run)
    work = top_work / MEMBERS_DIR
    preprocessor, _, y_val = prepare_labels(cfg, train_df, val_df)
    check_feasible(cfg.train.policy, y_val)  # before any member trains
    for name in cfg.model.ensemble.member_names:  # a package a member needs is missing: say so before any trains
        if EnsembleConfig.neural_index(name) is None:
            get_kind(name).member_class().require()
    k = cfg.model.num_classes
    settings = cfg.model.ensemble
    neural_names = settings.neural_member_names
    fitted, refits, scored_on, epochs_from, seconds = [], {}, {}, {}, {}
    cross_fit = settings.combine_on == "cross_fit"
    # the members' checkpoints stay for --resume until the end; cross_fit's neural members train on the same rows
    # (one shared holdout), so they share their frozen layers' output (train.freeze_layers)
    member_run = TrainRun.of(run, keep_work=True, shared_states=SharedStates() if cross_fit else None)
    shared = None  # cross_fit: one holdout for every neural member (no neural member: none, all rows out of fold)
    if cross_fit:
        shared = (holdout_mask(train_df, cfg, cfg.train.seed) if neural_names
                  else np.zeros(len(train_df), dtype=bool))
    held_y = preprocessor.encode_labels(train_df[shared]) if shared is not None and shared.any() else None
    out_of_sample = []  # per member: logits of the combination's training rows (None: it has none)
    first = None  # `neural_epochs: first`: the best holdout row of the first neural member, for the others
    for i, name in enumerate(settings.member_names, 1):
        log.info("ensemble: training member %s", name)
        neural = name in neural_names
        member_cfg = member_config(cfg, name, first["step"] if neural and first else None)
        # neural_k draws its own holdout (validation: each with its seed; cross_fit: the shared one);
        # classical members: val_df is reported only
        rows = split_member_holdout(train_df, val_df, member_cfg, shared) if neural else (train_df, val_df)
        held = neural and bool(settings.member_holdout)  # its metrics are on its holdout, not on validation
        with stage(f"ensemble: member {name} ({i}/{len(settings.member_names)}, {member_cfg.model.fusion})") as step:
            result = get_kind(member_cfg.model.fusion).train(member_cfg, *rows, work / name,
                                                             TrainRun.of(member_run, holdout=held))
            bundle = load_bundle(result.bundle_dir)
            if neural and first is None and settings.neural_epochs == "first" and len(neural_names) > 1:
                first = best_row(bundle.meta["validation_history"], bundle.meta["monitor"])
                epochs_from[name] = {"chose": {"step": first["step"], "epoch": first["epoch"]}}
            elif neural and first is not None:
                epochs_from[name] = {"from": neural_names[0], "steps": first["step"]}
            if cross_fit:  # before a refit: the holdout run's checkpoint is the one that never saw the holdout
                holdout = rows[1] if neural and shared.any() else None  # without a holdout a neural member has none
                out_of_sample.append(None if neural and holdout is None
                                     else member_out_of_sample(bundle, result, holdout, shared, k))
            if neural and settings.refit_neural and settings.member_holdout:
                result, refits[name] = refit_neural(cfg, name, bundle, train_df, val_df, work / f"{name}_refit",
                                                    member_run, first["epoch"] if first and name != neural_names[0]
                                                    else None)
                bundle = load_bundle(result.bundle_dir)
            scores = build_scorer(bundle).score_frame(val_df)
            scored = {"rows": len(rows[1]), "on": "holdout" if held and name not in refits else "validation"}
            step.done = f"{scored['on']}_roc_auc {result.val_metrics.get('roc_auc', float('nan')):.4f}"
        fitted.append((name, bundle, scores, result))
        scored_on[name], seconds[name] = scored, round(step.seconds, 3)
        if neural and name == neural_names[-1] and member_run.shared_states is not None:
            member_run.shared_states.clear()  # no member after the last neural one reads them
    logits = [member_logits(s, k) for _, _, s, _ in fitted]
    names = [name for name, *_ in fitted]
    if cross_fit:
        source = ("the neural members' shared holdout, the classical members' out-of-fold scores" if neural_names
                  else "every training row, out of fold")
        y_out = held_y if neural_names else preprocessor.encode_labels(train_df)
        rows = pool(logits, y_val, out_of_sample, y_out, names, source)
    else:
        rows = CombinationRows(logits, np.asarray(y_val, np.int64), len(y_val))
    if rows.fallback:
        log.warning("ensemble: weights, calibration and threshold fitted on the %d validation rows only: %s",
                    len(y_val), rows.fallback)
    with stage(f"ensemble: member weights, calibration and threshold ({cfg.train.policy.describe()}) on "
               f"{len(rows.labels):,} rows ({rows.source})") as step:
        combination = fit_combination(cfg, rows, [s for _, _, s, _ in fitted], y_val, names)
        step.done = "mixing weights " + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, combination.weights))
    weights, selection, decided = combination.weights, combination.selection, combination.decided
    threshold, val_metrics = decided.threshold, combination.val_metrics
    members_meta = [{"name": name, "fusion": bundle.cfg.model.fusion, "weight": float(w),
                     "validation": {m: result.val_metrics.get(m) for m in SUMMARY_METRICS},
                     "validation_rows_are": scored_on[name],  # a neural member's "validation" is its holdout
                     # wall time of its training (under --resume: what this run did), refit, out-of-sample and
                     # validation scoring
                     "train_seconds": seconds[name],
                     "selection_key": list(selection_key(y_val, z)),  # the member alone, as selection saw it
                     **({"refit": refits[name]} if name in refits else {}),
                     **({"epochs": epochs_from[name]} if name in epochs_from else {})}
                    for w, z, (name, bundle, _, result) in zip(weights, logits, fitted)]
    meta = {"kind": "ensemble", "combine": "weighted sum of member log-odds (multiclass: log-probabilities)",
            "weights": {name: float(w) for name, w in zip(names, weights)}, "members": members_meta,
            "member_rows": member_rows(cfg),
            "selection": selection, "combination_rows": rows.meta(),
            "train_rows": len(train_df), "val_rows": len(val_df), **split_meta(train_df, cfg), **decided.meta()}

    def payload(staging: Path) -> None:
        for name, bundle, _, _ in fitted:
            shutil.copytree(bundle.path, staging / MEMBERS_DIR / name)

    metrics = {"validation": val_metrics, "validation_note": FITTED_NOTE,
               "members": {name: {scored_on[name]["on"]: result.val_metrics}  # "n": the rows they were scored on
                           for name, _, _, result in fitted}}
    with stage(f"ensemble: writing the bundle {out_dir}"):
        write_classical_bundle(out_dir, cfg=cfg, preprocessor=preprocessor, threshold=threshold, metrics=metrics,
                               meta=meta, payload=payload, files=decided.files(), sign_key=run.sign_key)
    log.info("ensemble weights %s, validation ROC-AUC %.4f", meta["weights"], val_metrics.get("roc_auc", float("nan")))
    neural_epochs = [result.epochs_run for name, _, _, result in fitted if name in neural_names]
    if not run.keep_work:
        finish_work_folder(top_work)  # the bundle holds copies of the members
    return TrainResult(out_dir, threshold, val_metrics, max(neural_epochs, default=1))
