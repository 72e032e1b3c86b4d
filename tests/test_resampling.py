"""theory.resampling and theory.classifier_error against independent computations: exact enumeration of the
bootstrap distribution, scipy's one-level bootstrap, scikit-learn's confusion matrix, a brute-force search of the
simplex, and CLEAM's closed form for two classes."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from theory.classifier_error import confusion_matrix, corrected_distribution, per_class_accuracy
from theory.resampling import bootstrap, draw_resamples, paired_bootstrap, percentile_interval


def mean_of_means(groups):
    return float(np.mean([np.mean(g) for g in groups]))


# ---------------------------------------------------------------------------------------------- the bootstrap
def test_two_stage_bootstrap_draws_from_its_exact_distribution():
    groups = [np.array([0.0, 1.0]), np.array([2.0, 6.0])]
    # exact: draw 2 groups with replacement, then 2 items of each drawn group with replacement (all equally likely)
    exact = Counter()
    for g1, g2 in itertools.product(range(2), repeat=2):
        for i in itertools.product(range(2), repeat=2):
            for j in itertools.product(range(2), repeat=2):
                value = mean_of_means([groups[g1][list(i)], groups[g2][list(j)]])
                exact[round(value, 9)] += 1 / 64
    samples = bootstrap(groups, mean_of_means, n_resamples=20000, seed=1)
    seen = Counter(round(v, 9) for v in samples)
    assert set(seen) <= set(exact)
    for value, p in exact.items():  # binomial sd <= 0.0035 at 20000 draws: 0.015 is > 4 sd
        assert abs(seen[value] / len(samples) - p) < 0.015, (value, p)


def test_one_level_bootstrap_over_prompts_matches_scipys_percentile_interval():
    from scipy.stats import bootstrap as scipy_bootstrap

    rng = np.random.default_rng(0)
    values = rng.normal(size=40)
    groups = [np.array([v, v]) for v in values]  # the prompt's value, whatever images are drawn
    ours = percentile_interval(bootstrap(groups, mean_of_means, n_resamples=20000, seed=2, over="prompts"))
    theirs = scipy_bootstrap((values,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                             random_state=np.random.default_rng(3)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.02)


def test_levels_kept_by_the_one_level_variants_and_draws_reproducible():
    sizes = [3, 5, 2]
    prompts_only = draw_resamples(sizes, 5, seed=4, over="prompts")
    images_only = draw_resamples(sizes, 5, seed=4, over="images")
    for r in prompts_only:
        assert all(np.array_equal(items, np.arange(sizes[g])) for g, items in r)
    for r in images_only:
        assert [g for g, _ in r] == [0, 1, 2] and all(items.max() < sizes[g] for g, items in r)
    a, b = draw_resamples(sizes, 7, seed=9), draw_resamples(sizes, 3, seed=9)
    for x, y in zip(a, b):  # each draw its own stream: the first three do not depend on how many are drawn
        assert [g for g, _ in x] == [g for g, _ in y] and all(np.array_equal(i, j) for (_, i), (_, j) in zip(x, y))


def test_paired_bootstrap_removes_the_shared_noise():
    rng = np.random.default_rng(5)
    a = [rng.normal(size=6) for _ in range(4)]
    assert np.all(paired_bootstrap(a, a, mean_of_means, n_resamples=200, seed=0) == 0.0)
    shifted = [g + 0.5 for g in a]  # the same noise, a model that adds 0.5 everywhere
    np.testing.assert_allclose(paired_bootstrap(a, shifted, mean_of_means, n_resamples=200, seed=0), 0.5,
                               atol=1e-12)
    unpaired = bootstrap(shifted, mean_of_means, n_resamples=200, seed=1) - bootstrap(a, mean_of_means,
                                                                                    n_resamples=200, seed=2)
    assert unpaired.std() > 0.1  # two separate bootstraps keep the noise both models share
    with pytest.raises(ValueError, match="same prompts with the same number of images"):
        paired_bootstrap(a, a[:3], mean_of_means, n_resamples=2)


@pytest.mark.parametrize("call, message", [
    (lambda: draw_resamples([3, 0], 2, seed=0), "every group needs at least one item"),
    (lambda: draw_resamples([3], 0, seed=0), "n_resamples must be an integer >= 1"),
    (lambda: draw_resamples([3], 2, seed=0, over="pixels"), "over must be"),
    (lambda: percentile_interval(np.array([1.0, np.nan])), "finite"),
    (lambda: percentile_interval(np.array([1.0, 2.0]), 1.0), r"level must lie in \(0, 1\)"),
])
def test_bad_resampling_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------- CLEAM
def _random_confusion(rng, k):
    c = rng.dirichlet(np.ones(k), size=k) * 0.4 + np.eye(k) * 0.6  # diagonally dominant: invertible
    return c / c.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_correction_inverts_the_classifiers_confusion_exactly(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        p, c = rng.dirichlet(np.ones(k)), _random_confusion(rng, k)
        np.testing.assert_allclose(corrected_distribution(c.T @ p, c), p, rtol=0, atol=1e-12)


def test_two_classes_give_cleams_closed_form_clipped():
    for a0, a1, q0 in [(0.9, 0.8, 0.7), (0.95, 0.6, 0.5), (0.7, 0.9, 0.95), (0.8, 0.8, 0.1)]:
        c = np.array([[a0, 1 - a0], [1 - a1, a1]])
        p0 = min(1.0, max(0.0, (q0 - (1 - a1)) / (a0 + a1 - 1)))
        np.testing.assert_allclose(corrected_distribution([q0, 1 - q0], c), [p0, 1 - p0], atol=1e-12)


def test_a_measurement_outside_the_classifiers_reach_gets_the_closest_simplex_point():
    c = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    q = np.array([0.02, 0.9, 0.08])  # more extreme than any true p can produce through c
    assert (np.linalg.solve(c.T, q) < 0).any()
    p = corrected_distribution(q, c)
    grid = np.linspace(0, 1, 501)  # brute force over the simplex at 0.002
    best = min(np.linalg.norm(c.T @ np.array([x, y, 1 - x - y]) - q) for x in grid for y in grid if x + y <= 1)
    assert np.linalg.norm(c.T @ p - q) <= best + 1e-12 and p.min() >= 0 and p.sum() == pytest.approx(1.0)


def test_confusion_matrix_matches_scikit_learn_and_refuses_unlabelled_classes():
    from sklearn.metrics import confusion_matrix as sk_confusion

    rng = np.random.default_rng(7)
    true, pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    np.testing.assert_allclose(confusion_matrix(true, pred, 3), sk_confusion(true, pred, normalize="true"))
    np.testing.assert_allclose(per_class_accuracy(confusion_matrix(true, pred, 3)),
                               np.diag(sk_confusion(true, pred, normalize="true")))
    with pytest.raises(ValueError, match=r"classes \[2\] have no labelled example"):
        confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="singular"):
        corrected_distribution([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]])
