"""What each output column of `predict` (and each field of an HTTP result) means: its unit and its sign. One list
for `predict --help`, the predictor's docstring and the HTTP docs; standard library only, so `--help` stays fast.

The contributions split a binary row's log-odds toward the positive class (class 1: `data.positive_label`, else the
last label sorted): text_contribution + tab_contribution + baseline = logit(prob_<positive>). With isotonic
calibration, which is not linear, they split the uncalibrated log-odds instead. Multiclass: they split the
predicted class's calibrated log-probability.
"""
from __future__ import annotations

CONTRIBUTION_COLUMNS = ("text_contribution", "tab_contribution", "baseline", "text_share")

# (column, what it holds): the order `Predictor.predict_frame` writes them in
OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("<data.id> | row", "the row's data.id value; without data.id, `row`: its 0-based position in the input"),
    ("prob_<label>", "one per class: the calibrated probability of that class, 0 to 1; a row's add up to 1"),
    ("predicted_label", "the decided class, in the training labels' type (integers stay integers): binary, the "
                        "positive class when its probability is at least the decision's threshold; multiclass, the "
                        "most probable class"),
    ("text_contribution", "log-odds toward the positive class that the dialogue adds (negative: toward the other "
                          "class); multiclass: added to the predicted class's log-probability"),
    ("tab_contribution", "the same for the tabular facts"),
    ("baseline", "the model's log-odds at its reference input (the mean training embeddings), the same for every "
                 "row: text_contribution + tab_contribution + baseline = logit(prob_<positive>), the row's "
                 "log-odds (isotonic calibration: of the uncalibrated probability)"),
    ("text_share", "|text_contribution| / (|text_contribution| + |tab_contribution|), 0 to 1, no sign: how much "
                   "of the decision the dialogue moved (0.5 when neither moved it)"),
    ("error", "empty, or why the row could not be scored (its other columns are then empty)"),
)


def columns_help(width: int = 22) -> str:
    """The output columns as `predict --help` lists them, one per line (continuations indented)."""
    import textwrap

    lines = ["output columns (one row per input row, in input order):"]
    for name, meaning in OUTPUT_COLUMNS:
        wrapped = textwrap.wrap(meaning, 116 - width - 2)
        lines.append(f"  {name:<{width}}{wrapped[0]}")
        lines += [" " * (width + 2) + part for part in wrapped[1:]]
    return "\n".join(lines)
