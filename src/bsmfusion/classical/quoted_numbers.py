"""Numbers quoted in a thread, as features for gbdt: what each side offered last, and against the row's facts.

Buyer-seller threads bargain in numbers ("I can do $1,500", "1.5k firm", "how about 1525?"). TF-IDF sees "1525"
as a token and the SVD of it sees less; neither can tell that the buyer's last offer is 68% of the list price or
that the two sides ended 400 apart, which is what decides whether a sale happens. This block gives the trees those
magnitudes:

* text part (`N×Q`, a function of the thread alone, so it joins gbdt's text block): for each of the `roles` (the
  two roles that quote numbers in most training threads, e.g. buyer and seller; none when threads carry no roles)
  and for the whole thread (`*`): the last and the first number quoted (NaN: none); the count of numbers the
  thread quotes; with two roles, the gap between their last numbers (second − first role, in `roles` order);
* ratio part (`N×R·M`, where both blocks meet: computed inside `GBDT.pair_scores`, so the text/tab split of the
  contributions stays the exact Shapley split): each role's last number, the thread's last number and the gap,
  divided by each numeric column's value (NaN where that is 0) — e.g. last offer / list price.

A number is a run of digits with optional thousands commas and decimals, optionally `$`-prefixed and `k`-suffixed
(×1,000), not glued to a word before it ("i3", "v2" are not numbers). Threads are the rendered lines the classical
members vectorise (`text_features.render_frame`: one message per line, ``role:`` prefixed when `text.role_prefix`).
Whether gbdt uses the block is `model.classical.quoted_numbers` (auto: the one of the two designs with the lower
cross-validated — else validation — log loss).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..data.dialogue import split_role

NUMBER = re.compile(r"(?<![\w.,])\$?(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?(k\b)?", re.IGNORECASE)
LARGEST = 1e12  # a longer digit run is an id or a phone number, not an amount
ANY = "*"
MIN_ROLE_SHARE = 0.1  # a role must quote a number in at least this share of the training threads


def numbers_in(text: str) -> list[float]:
    """The numbers quoted in one message, in order: ``"$1,500 or 1.5k"`` → [1500.0, 1500.0] (a run of digits
    worth more than `LARGEST` is left out)."""
    values = (float(m.group(1).replace(",", "") + (m.group(2) or "")) * (1000.0 if m.group(3) else 1.0)
              for m in NUMBER.finditer(text))
    return [v for v in values if v <= LARGEST]


def thread_quotes(thread: str) -> dict[str, list[float]]:
    """Per role (and `ANY` for every message) the numbers its messages quote, in order; role-less lines count for
    `ANY` only."""
    quotes: dict[str, list[float]] = {}
    for line in thread.split("\n"):
        role, body = split_role(line)
        found = numbers_in(body)
        if found:
            for key in ([role] if role else []) + [ANY]:
                quotes.setdefault(key, []).extend(found)
    return quotes


@dataclass(frozen=True)
class QuotedNumbers:
    """The fitted block: which roles it follows and how many numeric columns the ratios divide by."""

    roles: tuple[str, ...]
    numeric_dim: int

    @classmethod
    def fit(cls, threads: list[str], numeric_dim: int) -> "QuotedNumbers":
        """The (at most two) roles that quote a number in the most training threads, each in ≥ 10% of them; ties by
        name."""
        counts = Counter(role for thread in threads for role in thread_quotes(thread) if role != ANY)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(tuple(role for role, n in ranked[:2] if n >= MIN_ROLE_SHARE * len(threads)), numeric_dim)

    @property
    def has_gap(self) -> bool:
        return len(self.roles) == 2

    @property
    def count_column(self) -> int:
        """The `text_part` column of the count of numbers the thread quotes."""
        return 2 * (len(self.roles) + 1)

    @property
    def text_dim(self) -> int:
        return 2 * (len(self.roles) + 1) + 1 + self.has_gap

    @property
    def ratio_dim(self) -> int:
        return (len(self.roles) + 1 + self.has_gap) * self.numeric_dim

    def text_names(self) -> list[str]:
        keys = [*self.roles, "thread"]
        return ([f"quoted_last_{k}" for k in keys] + [f"quoted_first_{k}" for k in keys] + ["quoted_count"]
                + (["quoted_gap"] if self.has_gap else []))

    def ratio_names(self) -> list[str]:
        """By position (`num_j`: the j-th numeric column): a column's own name may hold characters LightGBM refuses."""
        last = [f"quoted_last_{k}" for k in [*self.roles, "thread"]] + (["quoted_gap"] if self.has_gap else [])
        return [f"{name}_per_num_{j}" for name in last for j in range(self.numeric_dim)]

    def text_part(self, threads: list[str]) -> np.ndarray:
        """`N×text_dim` float64 (NaN: nothing quoted)."""
        keys = [*self.roles, ANY]
        out = np.full((len(threads), self.text_dim), np.nan)
        for i, thread in enumerate(threads):
            quotes = thread_quotes(thread)
            n = len(keys)
            for j, key in enumerate(keys):
                if key in quotes:
                    out[i, j], out[i, n + j] = quotes[key][-1], quotes[key][0]
            out[i, self.count_column] = len(quotes.get(ANY, ()))
            if self.has_gap:
                out[i, 2 * n + 1] = out[i, 1] - out[i, 0]
        return out

    def ratio_part(self, text_part: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        """`N×ratio_dim`: the last numbers (each role's, the thread's) and the gap of `text_part` `N×text_dim`,
        each divided by every column of `numeric` `N×numeric_dim` (raw values; NaN where 0)."""
        n = len(self.roles) + 1
        last = text_part[:, list(range(n)) + ([2 * n + 1] if self.has_gap else [])]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = last[:, :, None] / np.where(numeric == 0, np.nan, numeric)[:, None, :]
        return ratios.reshape(len(text_part), last.shape[1] * numeric.shape[1])

    def to_dict(self) -> dict:
        return {"roles": list(self.roles), "numeric_dim": self.numeric_dim}

    @classmethod
    def from_dict(cls, state: dict) -> "QuotedNumbers":
        return cls(tuple(state["roles"]), int(state["numeric_dim"]))
