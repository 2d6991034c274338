"""`bsmfusion evaluate`: metrics at the bundle's threshold, plots, and a markdown report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.groups import warn_on_group_overlap
from ..data.io import read_table
from .metrics import classification_metrics, predict_labels


def _plots(out_dir: Path, labels: np.ndarray, probs: np.ndarray, text_share: np.ndarray, threshold: float | None,
           label_names: list[str]) -> list[tuple[str, str]]:
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
    if binary:
        fpr, tpr, _ = skm.roc_curve(labels, probs[:, 1])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(fpr, tpr, label=f"AUC = {skm.auc(fpr, tpr):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
        ax.legend(loc="lower right")
        save(fig, "roc.png", "ROC curve")

        precision, recall, _ = skm.precision_recall_curve(labels, probs[:, 1])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(recall, precision, label=f"AP = {skm.average_precision_score(labels, probs[:, 1]):.3f}")
        ax.axhline(labels.mean(), ls="--", color="grey", lw=1, label=f"base rate {labels.mean():.2f}")
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", ylim=(0, 1.02))
        ax.legend(loc="lower left")
        save(fig, "pr.png", "Precision-recall curve")

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
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.plot(centers, observed, "o-", label="model")
    for x, y, c in zip(centers, observed, counts):
        ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set(xlabel="predicted probability" if probs.shape[1] == 2 else "confidence",
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
    ax.set(xlabel="text_share = |text| / (|text| + |tab|) contribution", ylabel="rows", title="Modality contribution")
    ax.legend()
    save(fig, "contributions.png", "Distribution of per-sample text contribution")
    return made


CONTRIBUTION_EXPLAINED = (
    "Modality contributions are an exact two-player Shapley split of each row's score (the positive class's "
    "log-odds; for multiclass the predicted class's logit) between the dialogue and the tabular facts, measured "
    "against the model's score at the mean training embeddings: text + tab + baseline = the row's score. "
    "`text_share` = |text| / (|text| + |tab|) says which side moved this decision more, the same way for every model."
)


def contribution_summary(scores) -> dict[str, float]:
    """Means over rows: text_share, and the mean absolute text and tab contributions (score units)."""
    return {"text_share_mean": float(np.mean(scores.text_share)),
            "text_contribution_mean_abs": float(np.mean(np.abs(scores.text_contribution))),
            "tab_contribution_mean_abs": float(np.mean(np.abs(scores.tab_contribution)))}


def evaluate(predictor, data: str | Path | pd.DataFrame, out_dir: str | Path) -> dict:
    """Score a labelled table, write metrics.json, PNG plots and report.md into `out_dir`; return the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = data if isinstance(data, pd.DataFrame) else read_table(data)
    labels = predictor.bundle.preprocessor.encode_labels(frame)
    group = predictor.cfg.data.group
    if group and "training_groups_sha256" in predictor.bundle.meta:
        meta = predictor.bundle.meta
        warn_on_group_overlap(set(meta["training_groups_sha256"]), frame, group, "test", meta.get("training_groups_salt", ""))
    scores = predictor.score_frame(frame)
    metrics = classification_metrics(labels, scores.probs, predictor.threshold)
    metrics.update(contribution_summary(scores))
    metrics["scoring_precision"] = predictor.describe_precision()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plots = _plots(out_dir, labels, scores.probs, scores.text_share, predictor.threshold, predictor.label_names)
    (out_dir / "report.md").write_text(_report(predictor, metrics, plots, data), encoding="utf-8")
    return metrics


def _report(predictor, metrics: dict, plots: list[tuple[str, str]], data) -> str:
    source = data if not isinstance(data, pd.DataFrame) else "a DataFrame"
    fusion = predictor.bundle.meta.get("fusion")
    if "positives" in metrics:
        summary = (
            f"The `{fusion}` model scored {metrics['n']:,} rows of {source} ({metrics['positives']:,} positive). "
            f"It ranks positives above negatives with ROC-AUC {metrics['roc_auc']:.3f} and average precision "
            f"{metrics['pr_auc']:.3f}. At the decision threshold chosen on validation ({metrics['threshold']:.3f}) it has "
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
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    figures = "\n\n".join(f"### {title}\n\n![{title}]({name})" for name, title in plots)
    return f"# Evaluation report\n\n{summary}\n\n| metric | value |\n|---|---|\n{rows}\n\n{figures}\n"
