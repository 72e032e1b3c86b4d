"""Expected OT targets (seed 000, [0105]) against an independent brute force, and their invariants."""

from __future__ import annotations

from itertools import permutations, product

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from theory.optimal_transport import (
    AUTO_EXACT_MAX_COUNT_VECTORS,
    count_vectors,
    expected_ot_targets,
    n_count_vectors,
    resolve_method,
)

EXACT_TOL = 1e-12


def brute_force_targets(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """E[u_sigma*(i)] by enumerating all K^N ordered one-hot draws, straight from the definition.

    For N <= 5 the optimal permutation is found by enumerating all N! permutations (no solver at all); beyond that
    by scipy's square assignment on the N x N cost ||p_i - u_j||_2. Shares no code with theory.optimal_transport.
    """
    n, k = probs.shape
    eye = np.eye(k)
    q = np.zeros((n, k))
    for draw in product(range(k), repeat=n):
        weight = float(np.prod(target[list(draw)]))
        if weight == 0.0:
            continue
        u = eye[list(draw)]
        cost = np.linalg.norm(probs[:, None, :] - u[None, :, :], axis=2)
        if n <= 5:
            sigma = min(permutations(range(n)), key=lambda s: sum(cost[i, s[i]] for i in range(n)))
            sigma = np.array(sigma)
        else:
            sigma = linear_sum_assignment(cost)[1]
        q += weight * u[sigma]
    return q


def random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.dirichlet(np.full(k, 0.7), size=n)


@pytest.mark.parametrize(
    ("k", "n"), [(2, 1), (2, 3), (2, 5), (2, 8), (3, 4), (3, 5), (3, 6), (4, 4), (4, 5)]
)
def test_exact_equals_brute_force(k, n):
    rng = np.random.default_rng(100 * k + n)
    probs = random_probs(rng, n, k)
    target = rng.dirichlet(np.ones(k))
    expected = brute_force_targets(probs, target)
    np.testing.assert_allclose(expected_ot_targets(probs, target, method="exact"), expected, rtol=0, atol=EXACT_TOL)
    if k == 2:
        np.testing.assert_allclose(expected_ot_targets(probs, target, method="binary"), expected, rtol=0, atol=EXACT_TOL)


def test_exact_handles_zero_mass_classes():
    rng = np.random.default_rng(1)
    probs = random_probs(rng, 5, 4)
    target = np.array([0.6, 0.0, 0.4, 0.0])
    q = expected_ot_targets(probs, target, method="exact")
    np.testing.assert_allclose(q, brute_force_targets(probs, target), atol=EXACT_TOL)
    assert np.all(q[:, [1, 3]] == 0)


@pytest.mark.parametrize("n", [2, 7, 24, 60])
@pytest.mark.parametrize("d1", [0.0, 0.1, 0.5, 0.75, 1.0])
def test_binary_closed_form_equals_exact_enumeration(n, d1):
    rng = np.random.default_rng(n)
    p1 = rng.uniform(size=n)
    probs = np.column_stack([p1, 1 - p1])
    target = np.array([d1, 1 - d1])
    np.testing.assert_allclose(
        expected_ot_targets(probs, target, method="binary"), expected_ot_targets(probs, target, method="exact"),
        rtol=0, atol=EXACT_TOL,
    )


def test_ties_get_identical_targets_and_match_exact():
    rng = np.random.default_rng(3)
    p1 = rng.uniform(size=9)
    p1[[1, 4, 7]] = p1[1]
    p1[[2, 5]] = p1[2]
    probs = np.column_stack([p1, 1 - p1])
    target = np.array([0.4, 0.6])
    binary = expected_ot_targets(probs, target, method="binary")
    exact = expected_ot_targets(probs, target, method="exact")
    np.testing.assert_allclose(binary, exact, atol=EXACT_TOL)
    for block in ([1, 4, 7], [2, 5]):
        np.testing.assert_allclose(binary[block], binary[block[0]][None].repeat(len(block), 0), atol=0)
    np.testing.assert_allclose(binary.sum(axis=0), 9 * target, atol=EXACT_TOL)
    # identical rows in K = 3 are averaged the same way by exact enumeration and Monte Carlo
    probs3 = random_probs(rng, 6, 3)
    probs3[3] = probs3[0]
    for method in ("exact", "mc"):
        q = expected_ot_targets(probs3, [0.3, 0.3, 0.4], method=method, seed=0)
        np.testing.assert_array_equal(q[3], q[0])


@pytest.mark.parametrize(("k", "n", "method"), [(2, 24, "binary"), (2, 24, "exact"), (3, 10, "exact"),
                                                 (4, 8, "exact"), (5, 30, "mc"), (2, 40, "mc")])
def test_rows_are_distributions_and_sum_identity(k, n, method):
    rng = np.random.default_rng(k * n)
    probs = random_probs(rng, n, k)
    target = rng.dirichlet(np.ones(k))
    q, se = expected_ot_targets(probs, target, method=method, seed=5, n_samples=400, return_stderr=True)
    assert q.shape == (n, k) and se.shape == (n, k)
    assert (q >= 0).all() and (q <= 1).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    if method == "mc":
        # each draw puts exactly m_k images in class k, so sum_i q_ik is the mean count, whose standard error is
        # sqrt(N d_k (1 - d_k) / n_samples)
        count_se = np.sqrt(n * target * (1 - target) / 400)
        assert np.all(np.abs(q.sum(axis=0) - n * target) <= 4 * count_se + 1e-12)
    else:
        np.testing.assert_allclose(q.sum(axis=0), n * target, rtol=0, atol=1e-11)
        assert not se.any()


@pytest.mark.parametrize(("k", "method"), [(2, "binary"), (2, "exact"), (3, "exact"), (3, "mc")])
def test_permuting_images_permutes_targets(k, method):
    rng = np.random.default_rng(11)
    probs = random_probs(rng, 12, k)
    target = rng.dirichlet(np.ones(k))
    perm = rng.permutation(12)
    q = expected_ot_targets(probs, target, method=method, seed=2, n_samples=300)
    q_perm = expected_ot_targets(probs[perm], target, method=method, seed=2, n_samples=300)
    np.testing.assert_allclose(q_perm, q[perm], atol=1e-13)


def test_mc_reproducible_and_within_standard_error():
    rng = np.random.default_rng(4)
    probs = random_probs(rng, 10, 3)
    target = np.array([0.2, 0.5, 0.3])
    q1, se1 = expected_ot_targets(probs, target, method="mc", seed=9, n_samples=2000, return_stderr=True)
    q2, se2 = expected_ot_targets(probs, target, method="mc", seed=9, n_samples=2000, return_stderr=True)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(se1, se2)
    exact = expected_ot_targets(probs, target, method="exact")
    positive = se1 > 0
    assert np.all(np.abs(q1 - exact)[positive] <= 5 * se1[positive])
    # an entry with no spread over the draws is an event never (or always) seen: its probability is then below
    # 5 / n_samples except with probability < e^-5
    assert np.all(np.abs(q1 - exact)[~positive] < 5 / 2000)
    q3 = expected_ot_targets(probs, target, method="mc", seed=10, n_samples=2000)
    assert not np.array_equal(q1, q3)


def test_mc_converges_at_inverse_sqrt_rate():
    rng = np.random.default_rng(8)
    probs = random_probs(rng, 8, 3)
    target = np.array([0.5, 0.25, 0.25])
    exact = expected_ot_targets(probs, target, method="exact")
    sizes = np.array([50, 200, 800, 3200])
    rmse = []
    for n_samples in sizes:
        errs = [expected_ot_targets(probs, target, method="mc", n_samples=int(n_samples), seed=s) - exact
                for s in range(6)]
        rmse.append(np.sqrt(np.mean(np.square(errs))))
    slope = np.polyfit(np.log(sizes), np.log(rmse), 1)[0]
    assert -0.65 < slope < -0.35, f"log-log slope of MC error {slope:.3f}, expected -1/2"


def test_auto_default_is_reproducible_above_the_exact_budget():
    """Issue 9: N = 32, K = 4 (the seed's race setting) has more than 5000 count vectors, so method="auto" runs Monte
    Carlo; without a seed it used a fresh random stream, and the DAL targets changed from call to call."""
    rng = np.random.default_rng(11)
    probs = random_probs(rng, 32, 4)
    target = np.full(4, 0.25)
    assert resolve_method("auto", 32, target) == "mc"
    q1 = expected_ot_targets(probs, target, n_samples=50)
    q2 = expected_ot_targets(probs, target, n_samples=50)
    np.testing.assert_array_equal(q1, q2)
    # the derived stream is a function of the inputs: a permutation of the images permutes the targets exactly ...
    perm = rng.permutation(32)
    np.testing.assert_allclose(expected_ot_targets(probs[perm], target, n_samples=50), q1[perm], atol=1e-13)
    # ... and other inputs, or an explicit seed, give other draws
    assert not np.array_equal(expected_ot_targets(random_probs(rng, 32, 4), target, n_samples=50), q1)
    assert not np.array_equal(expected_ot_targets(probs, target, n_samples=50, seed=0), q1)


def test_conditional_dal_targets_are_reproducible_without_seed():
    from theory.dal import dal_targets

    rng = np.random.default_rng(12)
    probs = random_probs(rng, 64, 4)
    groups = np.arange(64) % 2  # 32 images per group with K = 4: above the exact budget, so Monte Carlo
    assert resolve_method("auto", 32, np.full(4, 0.25)) == "mc"
    first = dal_targets(probs, np.full(4, 0.25), 0.5, groups=groups, n_samples=30)
    second = dal_targets(probs, np.full(4, 0.25), 0.5, groups=groups, n_samples=30)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_resolve_method_tells_which_method_runs():
    assert resolve_method("mc", 24, [0.5, 0.5]) == "mc"
    assert resolve_method("auto", 32, [0.25] * 4) == "mc"
    assert resolve_method("auto", 32, [0.5, 0.5, 0.0, 0.0]) == "exact"  # only classes with mass are enumerated
    with pytest.raises(ValueError, match="n \\(number of images\\) must be an integer >= 1"):
        resolve_method("auto", 0, [0.5, 0.5])


def test_count_vectors_enumeration():
    for n, k in [(0, 2), (3, 1), (3, 2), (4, 3), (5, 4)]:
        counts = count_vectors(n, k)
        assert counts.shape == (n_count_vectors(n, k), k)
        assert (counts >= 0).all() and (counts.sum(axis=1) == n).all()
        assert len({tuple(c) for c in counts}) == counts.shape[0]


def test_auto_method_choice():
    assert resolve_method("auto", 1000, np.array([0.5, 0.5])) == "binary"
    assert resolve_method("auto", 24, np.full(4, 0.25)) == "exact"
    assert n_count_vectors(24, 8) > AUTO_EXACT_MAX_COUNT_VECTORS
    assert resolve_method("auto", 24, np.full(8, 0.125)) == "mc"
    # classes without target mass do not count against the exact budget
    assert resolve_method("auto", 24, np.array([0.5, 0.5, 0, 0, 0, 0, 0, 0])) == "exact"


def test_exact_refuses_when_too_large_and_names_the_alternative():
    probs = np.full((160, 4), 0.25)
    with pytest.raises(ValueError, match="method='mc'"):
        expected_ot_targets(probs, np.full(4, 0.25), method="exact")
    with pytest.raises(ValueError, match="max_count_vectors = 10"):
        expected_ot_targets(np.full((5, 3), 1 / 3), np.full(3, 1 / 3), method="exact", max_count_vectors=10)


GOOD = np.array([[0.2, 0.8], [0.6, 0.4]])


@pytest.mark.parametrize(
    ("probs", "target", "kwargs", "message"),
    [
        ([[-0.1, 1.1], [0.5, 0.5]], [0.5, 0.5], {}, "negative"),
        ([[np.nan, 0.5], [0.5, 0.5]], [0.5, 0.5], {}, "NaN"),
        ([[np.inf, 0.0], [0.5, 0.5]], [0.5, 0.5], {}, "NaN or infinite"),
        ([[0.3, 0.3], [0.5, 0.5]], [0.5, 0.5], {}, "must sum to 1"),
        ([0.5, 0.5], [0.5, 0.5], {}, "2-D"),
        (np.zeros((0, 2)), [0.5, 0.5], {}, "N = 0"),
        ([[1.0], [1.0]], [1.0], {}, "K >= 2"),
        (GOOD, [0.7, 0.7], {}, "sums to"),
        (GOOD, [1.5, -0.5], {}, "negative"),
        (GOOD, [np.nan, 0.5], {}, "NaN"),
        (GOOD, [0.2, 0.3, 0.5], {}, "K = 2"),
        (GOOD, [[0.5, 0.5]], {}, "1-D"),
        (GOOD, [0.5, 0.5], {"method": "sinkhorn"}, "method must be one of"),
        (GOOD, [0.5, 0.5], {"method": "mc", "n_samples": 1}, "n_samples"),
        (np.full((3, 3), 1 / 3), [1 / 3] * 3, {"method": "binary"}, "K = 2 closed form"),
        ("abc", [0.5, 0.5], {}, "numeric"),
    ],
)
def test_bad_input_raises_clear_value_error(probs, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        expected_ot_targets(probs, target, **kwargs)
