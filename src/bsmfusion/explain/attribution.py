"""Which messages and which tabular facts moved a row's score: values (Shapley, or efficiency-corrected occlusion)
inside each side of the two-player split (`models.contributions`), for every model kind, through the scorer alone.

Two games per row, each played with the tabular side (resp. the dialogue) as the row has it:

* messages: v(S) = the row's `text_contribution` when its thread holds only the messages in S (the others
  removed), and v(∅) = 0: with every message removed the text side is at its reference, the one
  `text_contribution` is measured from (the training-mean text embedding; tfidf_lr the mean TF-IDF row; gbdt the
  background rows). So the messages' values add up to `text_contribution` exactly. v(∅) = 0 rather than "the empty
  thread": the difference, text_contribution(empty thread), is shared equally by the messages (a Shapley or
  occlusion value moves by v'(∅)/n when only v(∅) changes), so it shifts every message by the same amount and
  never reorders them.
* features: v(S) = the row's `tab_contribution` when the columns outside S hold their reference value
  (`players.reference_values`), v(∅) = 0: the tabular side at its reference. They add up to `tab_contribution`.

Both are in the unit of the contributions: calibrated log-odds toward the positive class (binary), the predicted
class's log-probability (multiclass, split at the row's predicted class). An ensemble needs nothing of its own:
its contributions are the weight-summed (and calibration-scaled) contributions of its members on the same rows,
and Shapley and occlusion values are linear in the game, so its values are the members' values summed the same way.

Method (`ExplainOptions.method`, `shapley.choose`): "auto" computes a game of n ≤ 3 players exactly (2ⁿ − 2 ≤ 2n
scored copies of the row) and a larger one by efficiency-corrected occlusion (n copies: each player left out once;
the Shapley value when the game is additive, its interaction remainder r stated per row); "shapley" is exact up to
`exact_max` players (2ⁿ − 2 copies), else `permutations` sampled orderings (about permutations·(n − 1) copies).
Copies of all rows go through the scorer in frames of `batch_rows`: a neural model's chunk cache
(`ScoringOptions.chunk_cache_mb`) re-encodes only the chunks a copy changed (a removed message's chunk and the
ones after it; none in the feature game).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..config import Config
from ..data.tabular import TabularPreprocessor
from ..errors import OptionError
from .players import (MessagePlayer, feature_rows, message_rows, reference_values, row_messages,
                      tabular_players)
from .shapley import METHODS, Estimate, plan


@dataclass(frozen=True)
class ExplainOptions:
    """method: "auto" (exact Shapley up to 3 players, occlusion above), "shapley" (exact or sampled, by
    `exact_max`) or "occlusion" (`shapley.plan`). exact_max: with "shapley", a game with at most this many players
    is computed exactly (2ⁿ coalitions), a larger one by sampling. permutations: orderings sampled per row and side
    (antithetic pairs), the stated sample size behind each value's standard error. seed: the sampling seed (row i uses (seed, i)). batch_rows: copies of rows
    scored per call. top: how many messages / features `top_messages` / `top_features` list. background_rows: a
    gbdt's tabular reference, its first this many stored background rows (each coalition is scored once per row)."""

    method: str = "auto"
    exact_max: int = 8
    permutations: int = 32
    seed: int = 0
    batch_rows: int = 2048
    top: int = 3
    background_rows: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OptionError(f"method '{self.method}' is unknown; use one of {', '.join(METHODS)}")
        for name, low in (("exact_max", 0), ("permutations", 4), ("batch_rows", 1), ("top", 1), ("background_rows", 1)):
            if getattr(self, name) < low:
                raise OptionError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.exact_max > 14:
            raise OptionError(f"exact_max must be at most 14 (2^14 scored copies per row), got {self.exact_max}")


@dataclass
class Attribution:
    """One row's two games: messages with their values and standard errors, tabular columns likewise."""

    messages: list[MessagePlayer]
    message_estimate: Estimate
    features: list[str]
    feature_values: list[Any]
    feature_estimate: Estimate
    text_contribution: float
    tab_contribution: float
    extra: dict = field(default_factory=dict)


def _games(sizes: list[int], options: ExplainOptions, salt: int):
    return [plan(n, options.exact_max, options.permutations, np.random.default_rng((options.seed, salt, i)),
                 options.method) for i, n in enumerate(sizes)]


def _play(plans, contributions: np.ndarray, build: Callable[[int, np.ndarray], pd.DataFrame],
          value: Callable[[pd.DataFrame, np.ndarray], np.ndarray], targets: np.ndarray | None,
          batch_rows: int, copies: int = 1) -> list[Estimate]:
    """Evaluate every row's coalitions (v(∅) = 0, v(all) = the row's contribution, the rest scored in frames of
    about `batch_rows` copies; `build` makes `copies` rows per coalition, whose values are averaged) and estimate
    each row's values."""
    values = [np.zeros(len(p.masks)) for p in plans]
    pending: list[tuple[int, np.ndarray]] = []  # (row, coalition indices) waiting in the current frame
    size = 0

    def flush():
        nonlocal pending, size
        if not pending:
            return
        frame = pd.concat([build(i, plans[i].masks[idx]) for i, idx in pending], ignore_index=True)
        rows = np.concatenate([np.full(len(idx) * copies, i) for i, idx in pending])
        got = value(frame, None if targets is None else targets[rows]).reshape(-1, copies).mean(axis=1)
        start = 0
        for i, idx in pending:
            values[i][idx] = got[start:start + len(idx)]
            start += len(idx)
        pending, size = [], 0

    for i, p in enumerate(plans):
        count = p.masks.sum(axis=1)
        values[i][count == p.n] = contributions[i]
        inner = np.flatnonzero((count > 0) & (count < p.n))
        if len(inner):
            pending.append((i, inner))
            size += len(inner) * copies
        if size >= batch_rows:
            flush()
    flush()
    return [p.estimate(v) for p, v in zip(plans, values)]


def attribute(score_frame: Callable, cfg: Config, tabular: TabularPreprocessor, frame: pd.DataFrame,
              options: ExplainOptions | None = None, *, uses_text: bool = True,
              references: list[dict[str, Any]] | None = None, targets: np.ndarray | None = None) -> list[Attribution]:
    """Both games for every row of `frame` (rows the scorer can score) with one model. `score_frame(frame,
    targets)` is a calibrated scorer's `score_frame` (`scoring.scorers`); `uses_text` False skips the message game
    (a model without a dialogue); `references`: the rows whose column values make a column absent (default: the
    one mean/mode row, `players.reference_values`); `targets` (multiclass): the class to split, default the
    predicted one."""
    options = options or ExplainOptions()
    frame = frame.reset_index(drop=True)
    scores = score_frame(frame, targets)
    if targets is None and scores.probs.shape[1] > 2:
        targets = np.asarray(scores.probs).argmax(axis=1)
    text = np.asarray(scores.text_contribution, dtype=np.float64)
    tab = np.asarray(scores.tab_contribution, dtype=np.float64)

    messages = row_messages(frame, cfg) if uses_text and cfg.data.text else [[] for _ in range(len(frame))]
    text_columns = list(cfg.data.text)
    text_estimates = _play(
        _games([len(m) for m in messages], options, 1), text,
        lambda i, masks: message_rows(frame, i, messages[i], masks, text_columns),
        lambda f, t: np.asarray(score_frame(f, t).text_contribution, dtype=np.float64), targets, options.batch_rows)

    columns = tabular_players(cfg)
    references = references or [reference_values(tabular)]
    tab_estimates = _play(
        _games([len(columns)] * len(frame), options, 2), tab,
        lambda i, masks: feature_rows(frame, i, columns, references, masks),
        lambda f, t: np.asarray(score_frame(f, t).tab_contribution, dtype=np.float64), targets, options.batch_rows,
        copies=len(references))

    return [Attribution(messages[i], text_estimates[i], columns, [frame[c].iloc[i] for c in columns],
                        tab_estimates[i], float(text[i]), float(tab[i])) for i in range(len(frame))]


def calibration_scale(calibration) -> float:
    """What a bundle's calibration multiplies contributions by: 1/T (temperature), the Platt scale, else 1."""
    if calibration.method == "temperature":
        return 1.0 / calibration.temperature
    if calibration.method == "platt":
        return float(calibration.scale)
    return 1.0


def combine(parts: list[tuple[float, list[Attribution]]]) -> list[Attribution]:
    """Per row, Σ cₘ · (member m's attribution): values, contributions and occlusion's remainder summed with the
    coefficients (all linear in the game); a sampled value's standard error bounded by Σ |cₘ| · its member's (the
    members share the orderings: same seed). The members play the same players, so they chose the same method."""
    out = []
    for rows in zip(*(attributions for _, attributions in parts)):
        first = rows[0]

        def summed(name):
            estimates = [getattr(a, name) for a in rows]
            values = sum(c * e.values for (c, _), e in zip(parts, estimates))
            stderr = sum(abs(c) * e.stderr for (c, _), e in zip(parts, estimates))
            remainder = None if estimates[0].remainder is None else \
                float(sum(c * e.remainder for (c, _), e in zip(parts, estimates)))
            return Estimate(values, stderr, estimates[0].method, estimates[0].permutations, remainder)

        out.append(Attribution(first.messages, summed("message_estimate"), first.features, first.feature_values,
                               summed("feature_estimate"),
                               float(sum(c * a.text_contribution for (c, _), a in zip(parts, rows))),
                               float(sum(c * a.tab_contribution for (c, _), a in zip(parts, rows)))))
    return out


def explain_with(scorer, cfg: Config, tabular: TabularPreprocessor, frame: pd.DataFrame,
                 options: ExplainOptions | None = None, targets: np.ndarray | None = None) -> list[Attribution]:
    """`attribute` for a bundle's calibrated scorer (`scoring.scorers.CalibratedScorer`), whatever its kind: a gbdt
    takes its background rows as the tabular reference; an ensemble is the weighted sum of its members' attributions
    (each member with its own reference, all split at the ensemble's class), scaled by the ensemble's calibration."""
    from .players import background_values

    options = options or ExplainOptions()
    model = scorer.uncalibrated
    if hasattr(model, "members"):  # an ensemble: its scorer's members are calibrated scorers too
        frame = frame.reset_index(drop=True)
        if targets is None and cfg.model.num_classes > 2:  # binary: nothing to choose, no scoring pass
            targets = np.asarray(scorer.score_frame(frame).probs).argmax(axis=1)
        scale = calibration_scale(scorer.calibration)
        parts = [(scale * weight, explain_with(member, member_config(member, cfg), tabular, frame, options, targets))
                 for _, weight, member in model.members]
        return combine(parts)
    references = None
    if hasattr(model, "tab_background"):
        references = background_values(model.tabular, model.tab_background[:options.background_rows])
    return attribute(lambda f, t: scorer.score_frame(f, targets=t), cfg, tabular, frame, options,
                     uses_text=bool(scorer.text_columns), references=references, targets=targets)


def member_config(member, cfg: Config) -> Config:
    """The config a member scorer was trained with (a neural member's bundle's, a classical member's own)."""
    model = member.uncalibrated
    return getattr(getattr(model, "bundle", None), "cfg", None) or getattr(model, "cfg", cfg)
