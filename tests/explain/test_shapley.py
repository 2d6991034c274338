"""The Shapley estimator on games whose values are known."""
import numpy as np

from bsmfusion.explain.shapley import plan


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
