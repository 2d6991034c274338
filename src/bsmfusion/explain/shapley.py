"""Shapley values of a game over `n` players from its values on subsets: exact, or by permutation sampling.

A game is known through `v`, its values on a set of coalitions (boolean masks). `plan(n, ...)` says which
coalitions to evaluate; the caller evaluates them in batches with whatever model it has, and `Plan.estimate(v)`
turns the values into one value per player.

* **exact** (n ≤ `exact_max`): every one of the 2ⁿ coalitions, φᵢ = Σ_{S∌i} |S|!(n−|S|−1)!/n! · (v(S∪i) − v(S)).
* **sampled** (n > `exact_max`): `permutations` orderings of the players, in antithetic pairs (an ordering and
  its reverse); a player's value is the mean of its marginal contributions v(prefix ∪ i) − v(prefix). Each
  ordering's marginals add up to v(all) − v(∅) exactly, so the estimate does too, whatever the sample: efficiency
  holds by construction. `stderr` per player is the standard error of that mean over the pairs (each pair
  averaged first: the two orderings of a pair are not independent).

Both add up to v(all) − v(∅) to float64 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """One value per player (`values`), its standard error (`stderr`: zeros when exact), how it was computed."""

    values: np.ndarray
    stderr: np.ndarray
    method: str  # "exact" | "sampled" | "none" (no player)
    permutations: int = 0  # sampled: orderings used

    def describe(self) -> dict:
        return {"method": self.method, "permutations": self.permutations,
                "max_stderr": float(self.stderr.max()) if len(self.stderr) else 0.0}


@dataclass(frozen=True)
class Plan:
    """The coalitions to evaluate (`masks`, `M×n` bool, distinct; the empty and the full one included) and how
    their values become Shapley values."""

    n: int
    masks: np.ndarray
    method: str
    orders: np.ndarray | None = None  # sampled: `P×n` player orderings
    index: np.ndarray | None = None  # sampled: `P×(n+1)` row of `masks` holding each ordering's prefix

    def estimate(self, values: np.ndarray) -> Estimate:
        """`values[m]` = v(masks[m]) → the players' Shapley values."""
        values = np.asarray(values, dtype=np.float64)
        if self.n == 0:
            return Estimate(np.zeros(0), np.zeros(0), "none")
        if self.method == "exact":
            return Estimate(_exact(self.n, values), np.zeros(self.n), "exact")
        chain = values[self.index]  # P×(n+1): v of each ordering's prefixes
        marginal = np.zeros(self.orders.shape)
        rows = np.arange(len(self.orders))[:, None]
        marginal[rows, self.orders] = np.diff(chain, axis=1)  # player order[k] gets v(prefix k+1) − v(prefix k)
        pairs = marginal.reshape(-1, 2, self.n).mean(axis=1)
        stderr = pairs.std(axis=0, ddof=1) / np.sqrt(len(pairs))
        return Estimate(marginal.mean(axis=0), stderr, "sampled", len(self.orders))


def plan(n: int, exact_max: int, permutations: int, rng: np.random.Generator) -> Plan:
    """Exact when `n` ≤ `exact_max`, else `permutations` sampled orderings (rounded up to an even number ≥ 4)."""
    if n <= exact_max:
        codes = np.arange(2 ** n)
        return Plan(n, (codes[:, None] >> np.arange(n)) & 1 == 1, "exact")
    count = max(4, permutations + permutations % 2)
    half = np.array([rng.permutation(n) for _ in range(count // 2)])
    orders = np.stack([half, half[:, ::-1]], axis=1).reshape(count, n)
    prefixes = np.zeros((count, n + 1, n), dtype=bool)
    for k in range(1, n + 1):
        prefixes[np.arange(count), k:, orders[:, k - 1]] = True
    masks, index = np.unique(prefixes.reshape(-1, n), axis=0, return_inverse=True)
    return Plan(n, masks, "sampled", orders, index.reshape(count, n + 1))


def _exact(n: int, values: np.ndarray) -> np.ndarray:
    """Shapley values from v on all 2ⁿ coalitions, coalition S at index Σ_{i∈S} 2ⁱ."""
    codes = np.arange(2 ** n)
    sizes = np.array([bin(c).count("1") for c in codes])
    weight = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) if s < n else 0.0 for s in range(n + 1)])
    out = np.zeros(n)
    for i in range(n):
        without = codes[(codes >> i) & 1 == 0]
        out[i] = np.sum(weight[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return out
