"""The Shapley estimator on games whose values are known."""
import numpy as np

import pytest

from bsmfusion.explain.shapley import choose, plan


def play(p, game):
    return p.estimate(np.array([game(mask) for mask in p.masks]))


def test_exact_values_of_an_additive_game_are_its_weights_and_a_pure_pair_splits_in_half():
    weights = np.array([1.5, -2.0, 0.25, 4.0])
    additive = play(plan(4, 8, 32, np.random.default_rng(0)), lambda m: float(weights @ m))
    np.testing.assert_allclose(additive.values, weights, atol=1e-12)
    assert additive.method == "exact" and not additive.stderr.any()
    pair = play(plan(3, 8, 32, np.random.default_rng(0)), lambda m: float(m[0] and m[1]))
    np.testing.assert_allclose(pair.values, [0.5, 0.5, 0.0], atol=1e-12)


def test_sampled_values_add_up_exactly_and_sit_within_their_standard_errors_of_the_exact_ones():
    rng = np.random.default_rng(3)
    n = 10
    w, pairs = rng.normal(size=n), rng.normal(size=(n, n))
    game = lambda m: float(w @ m + m @ pairs @ m / n + 0.5 * np.sin(m.sum()))  # noqa: E731: interactions everywhere
    exact = play(plan(n, n, 0 + 4, rng), game)
    sampled = play(plan(n, 0, 200, np.random.default_rng(1)), game)
    full, empty = game(np.ones(n, bool)), game(np.zeros(n, bool))
    assert sampled.method == "sampled" and sampled.permutations == 200
    assert abs(sampled.values.sum() - (full - empty)) < 1e-9  # efficiency by construction, whatever the sample
    assert abs(exact.values.sum() - (full - empty)) < 1e-9
    z = np.abs(sampled.values - exact.values) / sampled.stderr
    assert (z < 4).all() and sampled.stderr.max() < 0.2, z


def test_an_odd_permutation_count_is_rounded_up_to_antithetic_pairs():
    p = plan(12, 8, 7, np.random.default_rng(0))
    assert p.orders.shape == (8, 12)
    np.testing.assert_array_equal(p.orders[1], p.orders[0][::-1])


def test_occlusion_scores_n_coalitions_and_is_the_shapley_value_of_an_additive_game():
    weights = np.array([1.5, -2.0, 0.25, 4.0, 0.5, -1.0])
    p = plan(6, 8, 32, np.random.default_rng(0), method="occlusion")
    assert len(p.masks) == 6 + 2 and (p.masks.sum(axis=1) >= 5).sum() == 7  # N, ∅ and the 6 leave-one-out
    additive = play(p, lambda m: 3.0 + float(weights @ m))
    np.testing.assert_allclose(additive.values, weights, atol=1e-12)
    assert additive.method == "occlusion" and abs(additive.remainder) < 1e-12
    assert additive.describe() == {"method": "occlusion", "permutations": 0, "max_stderr": None,
                                   "remainder": additive.remainder}


def test_occlusion_adds_up_and_its_remainder_is_what_the_interactions_leave_over():
    # messages 0 and 1 say the same thing (either one gives +2, both still +2): substitutes, r = +2 shared by all 3
    same = lambda m: 2.0 * float(m[0] or m[1]) + 1.0 * m[2]  # noqa: E731
    p = plan(3, 8, 32, np.random.default_rng(0), method="occlusion")
    est = play(p, same)
    assert est.remainder == pytest.approx(2.0)
    np.testing.assert_allclose(est.values, [2 / 3, 2 / 3, 1 + 2 / 3], atol=1e-12)
    assert est.values.sum() == pytest.approx(same(np.ones(3, bool)) - same(np.zeros(3, bool)), abs=1e-12)
    # only both together count: complements, r = −1; each of the pair gets 1 − 1/3, the third −1/3
    both = play(p, lambda m: float(m[0] and m[1]))
    assert both.remainder == pytest.approx(-1.0)
    np.testing.assert_allclose(both.values, [2 / 3, 2 / 3, -1 / 3], atol=1e-12)


def test_occlusion_of_two_players_is_their_shapley_value_whatever_the_game():
    game = lambda m: float(3 * m[0] - m[1] + 5 * (m[0] and m[1]))  # noqa: E731
    occlusion = play(plan(2, 8, 32, np.random.default_rng(0), method="occlusion"), game)
    exact = play(plan(2, 8, 32, np.random.default_rng(0)), game)
    np.testing.assert_allclose(occlusion.values, exact.values, atol=1e-12)
    single = play(plan(1, 8, 32, np.random.default_rng(0), method="occlusion"), lambda m: 4.0 * m[0] + 1)
    np.testing.assert_allclose(single.values, [4.0])
    assert single.remainder == pytest.approx(0.0)


def test_auto_is_exact_while_that_costs_at_most_twice_occlusion():
    assert [choose(n, "auto") for n in range(1, 6)] == ["shapley", "shapley", "shapley", "occlusion", "occlusion"]
    assert plan(3, 2, 32, np.random.default_rng(0), method="auto").method == "exact"  # whatever exact_max
    assert len(plan(9, 8, 32, np.random.default_rng(0), method="auto").masks) == 11
    assert choose(9, "shapley") == "shapley"
