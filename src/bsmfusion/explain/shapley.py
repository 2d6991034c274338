"""Values of the players of a game over `n` players from its values on subsets, adding up to v(all) − v(∅):
Shapley values (exact, or by permutation sampling), or efficiency-corrected occlusion.

A game is known through `v`, its values on a set of coalitions (boolean masks). `plan(n, ...)` says which
coalitions to evaluate; the caller evaluates them in batches with whatever model it has, and `Plan.estimate(v)`
turns the values into one value per player.

* **exact** (n ≤ `exact_max`): every one of the 2ⁿ coalitions, φᵢ = Σ_{S∌i} |S|!(n−|S|−1)!/n! · (v(S∪i) − v(S)).
* **sampled** (n > `exact_max`): `permutations` orderings of the players, in antithetic pairs (an ordering and
  its reverse); a player's value is the mean of its marginal contributions v(prefix ∪ i) − v(prefix). Each
  ordering's marginals add up to v(all) − v(∅) exactly, so the estimate does too, whatever the sample: efficiency
  holds by construction. `stderr` per player is the standard error of that mean over the pairs (each pair
  averaged first: the two orderings of a pair are not independent).

* **occlusion** (leave one out, efficiency-corrected): the full coalition, the empty one and the `n` coalitions
  missing one player. φᵢ = [v(N) − v(N∖i)] + r/n, with the interaction remainder r = v(N) − v(∅) −
  Σⱼ [v(N) − v(N∖j)]. n scored coalitions instead of 2ⁿ − 2 or about permutations·(n − 1). It is the Shapley value
  whenever the game is additive (v(S) = v(∅) + Σ_{i∈S} wᵢ: every marginal of i is wᵢ and r = 0), and for n ≤ 2
  whatever the game; otherwise r is what the players' interactions leave over (positive when players are
  substitutes — removing one costs little because another says the same —, negative when they complement each
  other), shared equally, so it never reorders the players. |r| against |v(N) − v(∅)| says how far from additive
  the row's game is.
* **auto** (`choose`): exact Shapley when it needs at most twice occlusion's coalitions (2ⁿ − 2 ≤ 2n: n ≤ 3; for
  n ≤ 2 the two agree anyway), occlusion above.

All add up to v(all) − v(∅) to float64 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """One value per player (`values`), its standard error (`stderr`: zeros when exact, NaN for occlusion, which
    has none), how it was computed, and occlusion's interaction remainder r (`remainder`, shared equally)."""

    values: np.ndarray
    stderr: np.ndarray
    method: str  # "exact" | "sampled" | "occlusion" | "none" (no player)
    permutations: int = 0  # sampled: orderings used
    remainder: float | None = None  # occlusion: r = v(N) − v(∅) − Σ leave-one-out marginals

    def describe(self) -> dict:
        """method, permutations, max_stderr (None for occlusion) and remainder (None for the Shapley methods)."""
        stderr = None if self.method == "occlusion" else float(self.stderr.max()) if len(self.stderr) else 0.0
        return {"method": self.method, "permutations": self.permutations, "max_stderr": stderr,
                "remainder": self.remainder}


@dataclass(frozen=True)
class Plan:
    """The coalitions to evaluate (`masks`, `M×n` bool, distinct; the empty and the full one included) and how
    their values become Shapley values."""

    n: int
    masks: np.ndarray
    method: str
    orders: np.ndarray | None = None  # sampled: `P×n` player orderings
    index: np.ndarray | None = None  # sampled: `P×(n+1)` row of `masks` holding each ordering's prefix;
    # occlusion: the rows of N, ∅ and N∖0 … N∖(n−1)

    def estimate(self, values: np.ndarray) -> Estimate:
        """`values[m]` = v(masks[m]) → the players' values (Shapley, or occlusion's)."""
        values = np.asarray(values, dtype=np.float64)
        if self.n == 0:
            return Estimate(np.zeros(0), np.zeros(0), "none")
        if self.method == "exact":
            return Estimate(_exact(self.n, values), np.zeros(self.n), "exact")
        if self.method == "occlusion":
            full, empty, dropped = values[self.index[0]], values[self.index[1]], values[self.index[2:]]
            marginal = full - dropped
            remainder = float(full - empty - marginal.sum())
            return Estimate(marginal + remainder / self.n, np.full(self.n, np.nan), "occlusion", remainder=remainder)
        chain = values[self.index]  # P×(n+1): v of each ordering's prefixes
        marginal = np.zeros(self.orders.shape)
        rows = np.arange(len(self.orders))[:, None]
        marginal[rows, self.orders] = np.diff(chain, axis=1)  # player order[k] gets v(prefix k+1) − v(prefix k)
        pairs = marginal.reshape(-1, 2, self.n).mean(axis=1)
        stderr = pairs.std(axis=0, ddof=1) / np.sqrt(len(pairs))
        return Estimate(marginal.mean(axis=0), stderr, "sampled", len(self.orders))


METHODS = ("auto", "shapley", "occlusion")


def choose(n: int, method: str) -> str:
    """`method` for a game of `n` players: "auto" is "shapley" when 2ⁿ − 2 ≤ 2n (n ≤ 3), else "occlusion"."""
    if method == "auto":
        return "shapley" if 2 ** n - 2 <= 2 * n else "occlusion"
    return method


def plan(n: int, exact_max: int, permutations: int, rng: np.random.Generator, method: str = "shapley") -> Plan:
    """`method` "shapley": exact when `n` ≤ `exact_max`, else `permutations` sampled orderings (rounded up to an
    even number ≥ 4); "occlusion": N, ∅ and the n leave-one-out coalitions; "auto": `choose` (exact Shapley
    whatever `exact_max`, or occlusion)."""
    asked, method = method, choose(n, method)
    if method == "occlusion" and n > 0:
        rows = np.ones((n + 2, n), dtype=bool)
        rows[1] = False
        rows[np.arange(2, n + 2), np.arange(n)] = False
        masks, index = np.unique(rows, axis=0, return_inverse=True)  # n = 1: N∖0 is ∅
        return Plan(n, masks, "occlusion", index=index.reshape(-1))
    if n <= exact_max or asked == "auto":
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
