"""The players of the two games: a row's messages (text side) and its tabular columns (tabular side), and the
rows that put a coalition of them in front of the model.

Messages are the ones every model reads: each `data.text` cell capped and parsed by `data.text.thread_messages`
(role-tagged, cleaned; case kept, the models lowercase as they always do). A coalition of messages becomes a row
whose text cells hold only those messages, written back with `[bom] … [eom]` markers so the parser returns exactly
them (text holding `<` or `&` is HTML-escaped: the parser unescapes it again).

A tabular column is absent when it holds its reference value: a numeric column its training mean (standardised:
0, not missing), a categorical column its most frequent training value (missing when it had none) — or, for a
gbdt, whose own tabular baseline is its stored background of training rows, the value each background row has,
the score averaged over them (one mean row sits on a tree's split and says nothing). One-hot blocks and missing
indicators belong to their column, so a column is one player.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..data.dialogue import Message
from ..data.tabular import TabularPreprocessor
from ..data.text import cleaning_options, thread_messages


@dataclass(frozen=True)
class MessagePlayer:
    """One message of a row: the text column it came from, its role (None when unknown) and cleaned text."""

    column: str
    role: str | None
    text: str


def row_messages(frame: pd.DataFrame, cfg: Config) -> list[list[MessagePlayer]]:
    """Each row's messages in reading order (the columns of `data.text` one after the other)."""
    cleaning = cleaning_options(cfg.text, lowercase=False)
    columns = list(cfg.data.text)
    per_column = [thread_messages([[cell] for cell in frame[c]], cfg.text, cleaning) for c in columns]
    return [[MessagePlayer(c, m.role, m.text) for c, threads in zip(columns, per_column) for m in threads[i]]
            for i in range(len(frame))]


def render_messages(messages: list[MessagePlayer]) -> str:
    """A cell that `data.dialogue.parse_thread` parses back into exactly `messages` ("" for none)."""
    parts = []
    for m in messages:
        text = html.escape(m.text, quote=False) if ("<" in m.text or "&" in m.text) else m.text
        parts.append(f"[bom] {Message(m.role, text).render(True)} [eom]")
    return " ".join(parts)


def message_rows(frame: pd.DataFrame, row: int, players: list[MessagePlayer], masks: np.ndarray,
                 columns: list[str]) -> pd.DataFrame:
    """`len(masks)` copies of row `row`, copy m holding the messages `masks[m]` keeps in its text columns."""
    out = frame.iloc[np.full(len(masks), row)].reset_index(drop=True)
    for column in columns:
        mine = [k for k, p in enumerate(players) if p.column == column]
        out[column] = [render_messages([players[k] for k in mine if mask[k]]) for mask in masks]
    return out


def tabular_players(cfg: Config) -> list[str]:
    """The tabular columns, numeric then categorical, as the config lists them."""
    return [*cfg.data.numeric, *cfg.data.categorical]


def reference_values(tabular: TabularPreprocessor) -> dict[str, Any]:
    """Column → the value that makes it absent: numeric the training mean, categorical the most frequent value."""
    out: dict[str, Any] = {c: tabular.numeric_stats[c].mean for c in tabular.numeric}
    out.update({c: (tabular.vocab[c][0] if tabular.vocab[c] else None) for c in tabular.categorical})
    return out


UNKNOWN_VALUE = "\x00unknown"  # a categorical value no vocabulary holds: the unknown id


def background_values(tabular: TabularPreprocessor, matrix: np.ndarray) -> list[dict[str, Any]]:
    """Rows of `classical.tab_features.tab_matrix` (a gbdt's stored training background) back to column values:
    numerics un-standardised (missing where the indicator is set), one-hot blocks to their category."""
    names = tabular.numeric_feature_names
    rows = []
    for x in matrix:
        row: dict[str, Any] = {}
        for j, column in enumerate(tabular.numeric):
            stats = tabular.numeric_stats[column]
            flag = f"{column}__missing"
            missing = flag in names and x[names.index(flag)] > 0.5
            row[column] = None if missing else float(x[j] * stats.std + stats.mean)
        start = len(names)
        for column, width in zip(tabular.categorical, tabular.cardinalities):
            code = int(np.argmax(x[start:start + width]))
            row[column] = None if code == 0 else UNKNOWN_VALUE if code == 1 else tabular.vocab[column][code - 2]
            start += width
        rows.append(row)
    return rows


def feature_rows(frame: pd.DataFrame, row: int, columns: list[str], references: list[dict[str, Any]],
                 masks: np.ndarray) -> pd.DataFrame:
    """`len(masks) × len(references)` copies of row `row`: copy (m, r) with the columns `masks[m]` leaves out at
    their value in reference row r (copies of one mask next to each other)."""
    repeated = np.repeat(masks, len(references), axis=0)
    which = np.tile(np.arange(len(references)), len(masks))
    out = frame.iloc[np.full(len(repeated), row)].reset_index(drop=True)
    for k, column in enumerate(columns):
        absent = ~repeated[:, k]
        if absent.any():
            values = out[column].to_numpy(dtype=object, copy=True)
            values[absent] = [references[r][column] for r in which[absent]]
            out[column] = values
    return out
