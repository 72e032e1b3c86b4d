"""Expected optimal-transport targets of the distributional alignment loss (seed 000, [0105]).

A batch of N generated images has classifier probabilities p_i in the K-simplex. Draw u_1..u_N iid one-hot from
the target distribution D, match images to draws by the assignment

    sigma* = argmin_{sigma in S_N} sum_i || p_i - u_sigma(i) ||_2                      (seed 000, [0105])

and take the expected target of each image, q_i = E_u[u_sigma*(i)]. The assignment depends on the draw only through
its class counts m = (m_1..m_K) ~ Multinomial(N, D): given m it is the capacitated assignment of the N images to
the K classes (class k receiving exactly m_k images) with cost C_ik = || p_i - e_k ||_2. Hence

    q_i = sum_m Multinomial(m; N, D) * e_{k_i(m)},                                     (exact)

and for K = 2, where the cost difference C_i1 - C_i2 = sqrt(2) (1 - 2 p_i1) is decreasing in p_i1 so that the m_1
images of highest p_i1 receive class 1,

    q_i1 = P(M >= r_i),  M ~ Binomial(N, d_1),  r_i the 1-based descending rank of p_i1.  (closed form)

``theory/derivations/ot_binary_closed_form.py`` derives the closed form symbolically and checks it against the
exact enumeration. In every case sum_i q_i = N * D, because each draw assigns exactly m_k images to class k and
E[m] = N * D.

Ties. Images with identical probability vectors are interchangeable, so any optimal assignment can be permuted
among them; this module resolves such ties by giving identical images identical targets, the average over the tied
block (equivalently: a uniformly random tie-break). For K = 2 that averages P(M >= r) over the block of tied ranks.
This keeps q equivariant under any permutation of the images. Other exact ties (distinct images with equal total
cost) have probability zero for continuous classifier outputs and are left to the assignment solver.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from itertools import combinations
from math import comb
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.special import bdtrc
from scipy.stats import multinomial

from theory.validation import check_count, check_distribution, check_probabilities, check_seed

Method = Literal["auto", "exact", "binary", "mc"]
METHODS: tuple[str, ...] = ("auto", "exact", "binary", "mc")

#: ``method="auto"`` enumerates exactly while there are at most this many class-count vectors (N = 24, K = 4 has
#: 2925; each costs one N x N assignment, about 15 us at N = 24).
AUTO_EXACT_MAX_COUNT_VECTORS = 5_000
#: ``method="exact"`` refuses beyond this many count vectors (they are enumerated in memory) and names the method to
#: use instead.
EXACT_MAX_COUNT_VECTORS = 200_000
#: ``method="exact"`` also refuses when its estimated work, count vectors x N^2 entries of one N x N assignment
#: (:func:`exact_work`), exceeds this: one entry costs about 10-40 ns in scipy's solver on the development machines
#: (N = 24..1000), so the limit is a few seconds. Without it N = 3000, K = 2 (3001 count vectors) ran for about
#: 14 minutes and N = 199,998 raised a MemoryError building one assignment matrix.
EXACT_MAX_WORK = 200_000_000
DEFAULT_MC_SAMPLES = 1_000


def ot_cost_matrix(probs: np.ndarray) -> np.ndarray:
    """Cost C_ik = || p_i - e_k ||_2 of sending image i to class k (seed 000, [0105]); shape (N, K)."""
    # ||p - e_k||^2 = ||p||^2 - 2 p_k + 1; clip guards the rounding of tiny negative squares.
    sq = (probs * probs).sum(axis=1, keepdims=True) - 2.0 * probs + 1.0
    return np.sqrt(np.clip(sq, 0.0, None))


def n_count_vectors(n: int, k: int) -> int:
    """Number of class-count vectors m in N^K with sum m = n, i.e. C(n + k - 1, k - 1)."""
    return comb(n + k - 1, k - 1)


def exact_work(n: int, k: int) -> int:
    """Estimated work of the exact enumeration: C(n + k - 1, k - 1) count vectors x n^2 entries of one assignment.

    Each count vector costs one N x N capacitated assignment (:func:`capacitated_assignment`), whose cost matrix alone
    has N^2 entries; computed with Python integers, so it is exact and instant even where the enumeration is not.
    """
    return n_count_vectors(n, k) * n * n


def count_vectors(n: int, k: int) -> np.ndarray:
    """All class-count vectors (compositions of n into k non-negative parts), shape (C(n+k-1, k-1), k)."""
    if k == 1:
        return np.array([[n]], dtype=np.int64)
    # Stars and bars: choosing k - 1 bar positions among n + k - 1 slots fixes one composition.
    bars = np.array(list(combinations(range(n + k - 1), k - 1)), dtype=np.int64).reshape(-1, k - 1)
    edges = np.hstack([np.full((bars.shape[0], 1), -1), bars, np.full((bars.shape[0], 1), n + k - 1)])
    return np.diff(edges, axis=1) - 1


def capacitated_assignment(cost: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Optimal class of each image when class k must receive exactly ``counts[k]`` images.

    Solves min sum_i cost[i, k_i] subject to #{i : k_i = k} = counts[k] as a square assignment between the N
    images and the N draws (class k repeated counts[k] times), which is the OT of seed 000 [0105] for one draw.
    """
    columns = np.repeat(np.arange(cost.shape[1]), counts)
    _, chosen = linear_sum_assignment(cost[:, columns])
    return columns[chosen]


class _TieAverager:
    """Averages per-image quantities over blocks of identical probability rows (see module docstring)."""

    def __init__(self, probs: np.ndarray):
        _, inverse, sizes = np.unique(probs, axis=0, return_inverse=True, return_counts=True)
        self.has_ties = bool((sizes > 1).any())
        self._inverse = inverse.reshape(-1)
        self._sizes = sizes

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if not self.has_ties:
            return values
        sums = np.zeros((self._sizes.shape[0],) + values.shape[1:])
        np.add.at(sums, self._inverse, values)
        return (sums / self._sizes.reshape((-1,) + (1,) * (values.ndim - 1)))[self._inverse]


@lru_cache(maxsize=256)
def _binomial_upper_tail(n: int, d1: float) -> np.ndarray:
    """Row r - 1 is (P(M >= r), P(M < r)) for r = 1..n, M ~ Binomial(n, d1): the K = 2 targets of rank r.

    Cached because training calls it with a fixed batch size N and target D.
    """
    tail = bdtrc(np.arange(n, dtype=np.float64), n, d1)  # bdtrc(k, n, p) = P(M > k)
    targets = np.stack([tail, 1.0 - tail], axis=1)
    targets.setflags(write=False)
    return targets


def binary_closed_form_targets(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """K = 2 expected OT targets q_i1 = P(M >= r_i), M ~ Binomial(N, d_1) (seed 000, [0105]; DESIGN.md "DAL").

    Inputs must already be validated float64 arrays; :func:`expected_ot_targets` is the checked entry point.
    Ties in p_i1 get the average of P(M >= r) over their block of ranks. Cost: one sort and a cached binomial tail.
    """
    n = probs.shape[0]
    p1 = probs[:, 0]
    order = np.argsort(p1)[::-1]  # descending; tied images are averaged below, so the order among them is moot
    by_rank = _binomial_upper_tail(n, float(target[0]))
    if len(set(p1.tolist())) < n:  # some p_i1 coincide (cheaper than a numpy comparison at training batch sizes)
        ranked = p1[order]
        block = np.concatenate(([0], np.cumsum(ranked[1:] != ranked[:-1])))
        tail = np.bincount(block, weights=by_rank[:, 0]) / np.bincount(block)
        by_rank = np.stack([tail[block], 1.0 - tail[block]], axis=1)
    q = np.empty((n, 2))
    q[order] = by_rank
    return q


def exact_targets(
    probs: np.ndarray,
    target: np.ndarray,
    *,
    max_count_vectors: int = EXACT_MAX_COUNT_VECTORS,
    max_work: int = EXACT_MAX_WORK,
) -> np.ndarray:
    """Exact expected OT targets by enumerating class counts m ~ Multinomial(N, D) (seed 000, [0105]).

    Classes with zero target mass never appear in a draw, so only the support of D is enumerated. Refused, before
    anything is allocated, beyond ``max_count_vectors`` count vectors or ``max_work`` estimated assignment entries
    (:func:`exact_work`).
    """
    n, k = probs.shape
    support = np.flatnonzero(target > 0)
    n_vectors = n_count_vectors(n, support.size)
    work = n_vectors * n * n
    if n_vectors > max_count_vectors or work > max_work:
        instead = "use method='mc' (Monte Carlo with a standard error)" + (
            " or method='binary' (the exact K = 2 closed form)" if support.size <= 2 and k == 2 else "")
        raise ValueError(
            f"exact enumeration for N = {n}, K = {support.size} (classes with target mass) needs C(N+K-1, K-1) = "
            f"{n_vectors} class-count vectors, each an N x N assignment: about {float(work):.2g} assignment entries "
            f"(limits: max_count_vectors = {max_count_vectors}, max_work = {float(max_work):.2g}, a few seconds); "
            + instead
        )
    cost = ot_cost_matrix(probs)[:, support]
    counts = count_vectors(n, support.size)
    weights = multinomial.pmf(counts, n, target[support] / target[support].sum())
    q = np.zeros((n, k))
    rows = np.arange(n)
    for m, w in zip(counts, weights):
        if w > 0.0:
            q[rows, support[capacitated_assignment(cost, m)]] += w
    return _TieAverager(probs)(q)


def input_seed_sequence(probs: np.ndarray, target: np.ndarray) -> np.random.SeedSequence:
    """The Monte Carlo stream used when no seed is given: a SeedSequence determined by the inputs alone.

    Its entropy is a BLAKE2b digest of the target and of the probability rows in lexicographic order, so identical
    inputs give identical targets on every call, in every process, and a permutation of the images gives the same
    class-count draws, hence permuted targets (the draws do not depend on the image order). Distinct inputs give
    unrelated streams.
    """
    p = np.ascontiguousarray(probs, dtype=np.float64)
    rows = p[np.lexsort(p.T[::-1])] if p.shape[0] > 1 else p
    digest = hashlib.blake2b(digest_size=16)
    for part in (np.asarray(p.shape, dtype=np.int64), np.ascontiguousarray(target, dtype=np.float64), rows):
        digest.update(part.tobytes())
    return np.random.SeedSequence(int.from_bytes(digest.digest(), "little"))


def monte_carlo_targets(
    probs: np.ndarray,
    target: np.ndarray,
    *,
    n_samples: int = DEFAULT_MC_SAMPLES,
    seed: int | np.random.SeedSequence | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo expected OT targets and their standard errors (seed 000, [0105]: "empirical average").

    Each sample draws class counts m ~ Multinomial(N, D), which has the law of the counts of N iid one-hot draws
    from D (the OT depends on a draw only through its counts), and solves one capacitated assignment. Returns
    (q, stderr), both (N, K); stderr is the standard error of each entry of q over the ``n_samples`` draws.
    ``seed=None`` draws from :func:`input_seed_sequence`, so the targets are a function of the inputs; pass a seed
    (or a Generator) for draws independent of them.
    """
    # >= 2 for a standard error; an integer, so that 2.9 is refused rather than truncated to 2
    n_samples = check_count(n_samples, "n_samples (Monte Carlo draws)", minimum=2)
    n, k = probs.shape
    rng = np.random.default_rng(input_seed_sequence(probs, target) if seed is None else seed)
    cost = ot_cost_matrix(probs)
    tie_average = _TieAverager(probs)
    draws = rng.multinomial(n, target, size=n_samples)
    total = np.zeros((n, k))
    total_sq = np.zeros((n, k))
    rows = np.arange(n)
    for m in draws:
        y = np.zeros((n, k))
        y[rows, capacitated_assignment(cost, m)] = 1.0
        y = tie_average(y)
        total += y
        total_sq += y * y
    q = total / n_samples
    variance = np.clip(total_sq / n_samples - q * q, 0.0, None) * n_samples / max(n_samples - 1, 1)
    return q, np.sqrt(variance / n_samples)


def resolve_method(method: str, n: int, target: ArrayLike) -> str:
    """The method :func:`expected_ot_targets` runs for ``method`` on N = ``n`` images and this ``target``.

    ``"auto"`` stands for the closed form for K = 2 (``"binary"``), exact enumeration while there are at most
    :data:`AUTO_EXACT_MAX_COUNT_VECTORS` class-count vectors over the classes with target mass (``"exact"``), and
    Monte Carlo beyond (``"mc"``, reproducible without a seed, see :func:`input_seed_sequence`); any other method is
    returned unchanged. Record it beside results that call the DAL with the default method.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    n = check_count(n, "n (number of images)", minimum=1)
    target = np.asarray(target, dtype=np.float64)
    if method != "auto":
        return method
    if target.shape[0] == 2:
        return "binary"
    if n_count_vectors(n, int((target > 0).sum())) <= AUTO_EXACT_MAX_COUNT_VECTORS:
        return "exact"
    return "mc"


def expected_ot_targets(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    method: Method = "auto",
    n_samples: int = DEFAULT_MC_SAMPLES,
    seed: int | np.random.SeedSequence | np.random.Generator | None = None,
    return_stderr: bool = False,
    max_count_vectors: int = EXACT_MAX_COUNT_VECTORS,
    max_work: int = EXACT_MAX_WORK,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Expected optimal-transport targets q_i = E_u[u_sigma*(i)] of the DAL (seed 000, [0105]).

    Parameters
    ----------
    probs : array-like of shape (N, K)
        Classifier probabilities of the N generated images; rows on the simplex.
    target : array-like of shape (K,)
        Target distribution D over the K classes.
    method : {"auto", "exact", "binary", "mc"}
        ``"exact"`` enumerates the class counts (refused beyond ``max_count_vectors``); ``"binary"`` is the K = 2
        closed form; ``"mc"`` averages ``n_samples`` sampled assignments; ``"auto"`` picks the closed form for
        K = 2, exact enumeration while at most 5000 count vectors, Monte Carlo otherwise.
    n_samples : int
        Monte Carlo draws (``"mc"`` only).
    seed : int, SeedSequence, Generator or None
        Seed of the Monte Carlo draws; the same seed gives the same targets. ``None`` derives the stream from the
        inputs (:func:`input_seed_sequence`), so that the default (``method="auto"``, which switches to Monte Carlo
        beyond 5000 count vectors, e.g. N = 32 with K = 4) gives the same targets on every call.
        :func:`resolve_method` says which method runs.
    return_stderr : bool
        Also return the (N, K) standard error of each entry (zeros for the exact methods).
    max_count_vectors, max_work : int
        Refusal limits of ``"exact"``: class-count vectors, and count vectors x N^2 (:func:`exact_work`).

    Returns
    -------
    q : ndarray of shape (N, K)
        Row i is the probability that image i should have each class; sum_i q_i = N * target.
    stderr : ndarray of shape (N, K)
        Only if ``return_stderr``.
    """
    p = check_probabilities(probs)
    d = check_distribution(target, p.shape[1])
    n_samples = check_count(n_samples, "n_samples (Monte Carlo draws)", minimum=2)
    seed = check_seed(seed)
    resolved = resolve_method(method, p.shape[0], d)
    if resolved == "binary":
        if p.shape[1] != 2:
            raise ValueError(f"method='binary' is the K = 2 closed form; probs have K = {p.shape[1]} classes")
        q = binary_closed_form_targets(p, d)
    elif resolved == "exact":
        q = exact_targets(p, d, max_count_vectors=max_count_vectors, max_work=max_work)
    else:
        q, stderr = monte_carlo_targets(p, d, n_samples=n_samples, seed=seed)
        return (q, stderr) if return_stderr else q
    return (q, np.zeros_like(q)) if return_stderr else q
