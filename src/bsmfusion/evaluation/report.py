"""`bsmfusion evaluate`: metrics at the active decision's threshold (with bootstrap intervals and alternative
policies, `evaluation.operating_point`), calibration before/after, plots, and a markdown report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.groups import warn_on_group_overlap
from ..data.io import as_frame
from ..data.labels import positive_class_reason
from ..errors import show
from ..progress import DEFAULT_LOG_EVERY, Progress
from .metrics import classification_metrics, predict_labels
from .operating_point import decision_markdown, decision_report


def _reliability(probs: np.ndarray, labels: np.ndarray) -> tuple[list, list, list]:
    """(mean predicted, observed frequency, rows) per non-empty tenth of the predicted probability (binary: of
    P(positive); multiclass: of the top-class confidence)."""
    confidence = probs[:, 1] if probs.shape[1] == 2 else probs.max(axis=1)
    outcome = labels if probs.shape[1] == 2 else (probs.argmax(axis=1) == labels).astype(int)
    edges = np.linspace(0, 1, 11)
    centers, observed, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence >= lo) & (confidence < hi if hi < 1 else confidence <= hi)
        if inside.any():
            centers.append(confidence[inside].mean())
            observed.append(outcome[inside].mean())
            counts.append(int(inside.sum()))
    return centers, observed, counts


def _plots(out_dir: Path, labels: np.ndarray, probs: np.ndarray, text_share: np.ndarray, threshold: float | None,
           label_names: list[str], uncalibrated: np.ndarray | None = None,
           point: dict | None = None) -> list[tuple[str, str]]:
    """The PNGs; `point` (the operating point, binary) is marked on the ROC and PR curves, `uncalibrated` drawn
    next to the calibrated probabilities in the reliability diagram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as skm

    made: list[tuple[str, str]] = []

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        made.append((name, title))

    binary = probs.shape[1] == 2 and len(np.unique(labels)) == 2
    positive = f"positive class '{label_names[1]}'" if probs.shape[1] == 2 else ""
    if binary:
        fpr, tpr, _ = skm.roc_curve(labels, probs[:, 1])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(fpr, tpr, label=f"AUC = {skm.auc(fpr, tpr):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        if point and point.get("false_positive_rate") is not None:
            ax.plot(point["false_positive_rate"], point["recall"]["value"], "o", color="crimson",
                    label=f"operating point (threshold {point['threshold']:.3f})")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC curve ({positive})")
        ax.legend(loc="lower right")
        save(fig, "roc.png", "ROC curve")

        precision, recall, _ = skm.precision_recall_curve(labels, probs[:, 1])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(recall, precision, label=f"AP = {skm.average_precision_score(labels, probs[:, 1]):.3f}")
        ax.axhline(labels.mean(), ls="--", color="grey", lw=1, label=f"base rate {labels.mean():.2f}")
        if point and point["precision"]["value"] is not None:
            ax.plot(point["recall"]["value"], point["precision"]["value"], "o", color="crimson",
                    label=f"operating point (threshold {point['threshold']:.3f})")
        ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall curve ({positive})", ylim=(0, 1.02))
        ax.legend(loc="lower left")
        save(fig, "pr.png", "Precision-recall curve")

    centers, observed, counts = _reliability(probs, labels)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    if uncalibrated is not None and not np.array_equal(uncalibrated, probs):
        before_x, before_y, _ = _reliability(np.asarray(uncalibrated), labels)
        ax.plot(before_x, before_y, "s--", color="grey", alpha=0.7, label="before calibration")
    ax.plot(centers, observed, "o-", label="model (calibrated)" if uncalibrated is not None else "model")
    if threshold is not None and probs.shape[1] == 2:
        ax.axvline(threshold, ls=":", color="crimson", lw=1, label=f"threshold {threshold:.3f}")
    for x, y, c in zip(centers, observed, counts):
        ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set(xlabel=f"predicted P({label_names[1]})" if probs.shape[1] == 2 else "confidence",
           ylabel="observed frequency", title="Reliability diagram", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    save(fig, "calibration.png", "Reliability diagram (numbers: rows per bin)")

    predicted = predict_labels(probs, threshold)
    matrix = skm.confusion_matrix(labels, predicted, labels=list(range(probs.shape[1])))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    ticks = range(len(label_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=label_names, yticklabels=label_names,
           xlabel="predicted", ylabel="true", title="Confusion matrix" + (f" (threshold {threshold:.3f})" if threshold is not None else ""))
    save(fig, "confusion.png", "Confusion matrix")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for k, name in enumerate(label_names):
        ax.hist(text_share[labels == k], bins=20, range=(0, 1), alpha=0.6, label=f"true {name}")
    ax.set(xlabel="text_share = |text| / (|text| + |tab|) (0: tabular facts alone, 1: dialogue alone)",
           ylabel="rows", title="Dialogue's share of each decision (text_share)")
    ax.legend()
    save(fig, "contributions.png", CONTRIBUTIONS_CAPTION)
    return made


CONTRIBUTIONS_CAPTION = ("Distribution of text_share = |text| / (|text| + |tab|) per row, by true class: the "
                         "dialogue's share of each row's decision (not the signed text contribution)")
CONTRIBUTION_EXPLAINED = (
    "Modality contributions are an exact two-player Shapley split of each row's score (the positive class's "
    "log-odds; for multiclass the predicted class's logit) between the dialogue and the tabular facts, measured "
    "against the model's score at the mean training embeddings: text + tab + baseline = the row's score "
    "(`predict` writes all three). "
    "`text_share` = |text| / (|text| + |tab|) says which side moved this decision more, the same way for every model."
)


def contribution_summary(scores) -> dict[str, float]:
    """Means over rows: text_share, and the mean absolute text and tab contributions (score units)."""
    return {"text_share_mean": float(np.mean(scores.text_share)),
            "text_contribution_mean_abs": float(np.mean(np.abs(scores.text_contribution))),
            "tab_contribution_mean_abs": float(np.mean(np.abs(scores.tab_contribution)))}


def evaluation_metrics(predictor, data: str | Path | pd.DataFrame, *, progress: bool = False,
                       log_every: float = DEFAULT_LOG_EVERY) -> tuple[dict, np.ndarray, object]:
    """Score a labelled table: (metrics, label ids, `Scores`). The label column is checked before anything is
    scored; an undefined metric (ROC-AUC on one class) is None, so the metrics are strict JSON as they are.
    `progress`: rows scored of the total, rows/s and the ETA on stderr (a bar on a terminal, else a line every
    `log_every` seconds; `bsmfusion.progress`)."""
    from .. import strict_json
    from ..data.tabular import require_columns

    frame = as_frame(data)
    where = "evaluation data" + ("" if isinstance(data, pd.DataFrame) else f" '{data}'")
    require_columns(frame, [predictor.cfg.data.label], f"{where} (the label column, data.label)")
    labels = predictor.bundle.preprocessor.encode_labels(frame)
    group = predictor.cfg.data.group
    if group and "training_groups_sha256" in predictor.bundle.meta:
        meta = predictor.bundle.meta
        warn_on_group_overlap(set(meta["training_groups_sha256"]), frame, group, "test", meta.get("training_groups_salt", ""))
    with Progress("evaluate", len(frame), log_every=log_every, enabled=progress) as tracker:
        scores = predictor.score_frame(frame)
        tracker.update(len(frame))  # a classical member scores the whole frame at once
    metrics = classification_metrics(labels, scores.probs, predictor.threshold)
    metrics.update(contribution_summary(scores))
    metrics["scoring_precision"] = predictor.describe_precision()
    metrics.update(decision_report(predictor, labels, scores))  # calibration, operating point, alternatives
    return strict_json.finite(metrics), labels, scores


def undefined_notes(metrics: dict, labels: np.ndarray, label_names: list[str]) -> list[str]:
    """Report lines saying which metrics are undefined (null in metrics.json) and which plots are skipped, and why."""
    undefined = [key for key, value in metrics.items() if value is None]
    present = np.unique(labels)
    if len(present) != 1:
        return [f"Undefined (null in metrics.json): {', '.join(undefined)}."] if undefined else []
    what = [f"undefined (null in metrics.json): {', '.join(undefined)}"] if undefined else []
    what += ["ROC and precision-recall curves skipped"] if len(label_names) == 2 else []
    why = (f"the data holds one class only (every row is '{label_names[int(present[0])]}'), and ranking metrics "
           "need rows of both classes")
    text = "; ".join(what)
    return [f"{text[:1].upper()}{text[1:]}: {why}."] if what else []


def evaluate(predictor, data: str | Path | pd.DataFrame, out_dir: str | Path, *, progress: bool = False,
             log_every: float = DEFAULT_LOG_EVERY) -> dict:
    """Score a labelled table, write metrics.json (strict JSON: `null` for an undefined metric), PNG plots and
    report.md into `out_dir`; return the metrics. `progress`, `log_every`: see `evaluation_metrics`."""
    from .. import strict_json

    metrics, labels, scores = evaluation_metrics(predictor, data, progress=progress, log_every=log_every)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(strict_json.dumps(metrics, indent=2))
    plots = _plots(out_dir, labels, scores.probs, scores.text_share, predictor.threshold, predictor.label_names,
                   uncalibrated=scores.uncalibrated_probs, point=metrics.get("operating_point"))
    notes = undefined_notes(metrics, labels, predictor.label_names)
    (out_dir / "report.md").write_text(_report(predictor, metrics, plots, data, notes), encoding="utf-8")
    return metrics


def _report(predictor, metrics: dict, plots: list[tuple[str, str]], data, notes: list[str] = ()) -> str:
    source = data if not isinstance(data, pd.DataFrame) else "a DataFrame"
    fusion = predictor.bundle.meta.get("fusion")
    metrics = {k: _Undefined() if v is None else v for k, v in metrics.items()}  # None prints "undefined"
    if "positives" in metrics:
        summary = (
            f"The `{fusion}` model scored {metrics['n']:,} rows of {source} ({metrics['positives']:,} of the "
            f"positive class {show(predictor.label_values[1])} ({positive_class_reason(predictor.cfg)}); precision, "
            "recall, F1, the curves and the contributions' sign are for that class). "
            f"It ranks positives above negatives with ROC-AUC {metrics['roc_auc']:.3f} and average precision "
            f"{metrics['pr_auc']:.3f}. At the decision threshold ({metrics['threshold']:.3f}; "
            f"{predictor.decision.policy.describe()}) it has "
            f"F1 {metrics['f1']:.3f}, precision {metrics['precision']:.3f} and recall {metrics['recall']:.3f}. "
            f"Expected calibration error is {metrics['ece']:.3f}. The dialogue's mean share of a decision "
            f"(`text_share`) is {metrics['text_share_mean']:.0%}. " + CONTRIBUTION_EXPLAINED
        )
    else:
        summary = (
            f"The `{fusion}` model scored {metrics['n']:,} rows of {source}: accuracy {metrics['accuracy']:.3f}, "
            f"macro F1 {metrics['f1_macro']:.3f}, macro ROC-AUC {metrics['roc_auc_macro']:.3f}; "
            f"the dialogue's mean share of a decision (`text_share`) is {metrics['text_share_mean']:.0%}. "
            + CONTRIBUTION_EXPLAINED
        )
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
                     if not isinstance(v, (dict, list)))  # the nested decision entries get their own sections
    figures = "\n\n".join(f"### {title}\n\n![{title}]({name})" for name, title in plots)
    summary += "".join(f"\n\n{note}" for note in notes)
    return (f"# Evaluation report\n\n{summary}\n\n| metric | value |\n|---|---|\n{rows}\n\n"
            f"{decision_markdown(metrics)}\n\n{figures}\n")


class _Undefined:
    """A metric with no value (null in metrics.json): formats as "undefined" whatever the format spec."""

    def __format__(self, spec: str) -> str:
        return "undefined"

    def __str__(self) -> str:
        return "undefined"
