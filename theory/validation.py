"""Input checks shared by the formulas in :mod:`theory`.

Every public function of ``theory`` that takes classifier probabilities or a target distribution validates it
here, so that bad input raises one :class:`ValueError` that says what was wrong and what is expected. The checks
are written to be cheap (a handful of vectorised numpy reductions) because the K = 2 closed form of the expected
OT targets is called once per training step and must stay cheaper than a single assignment solve.
"""

from __future__ import annotations

import math
import operator

import numpy as np
from numpy.typing import ArrayLike

#: Rows of classifier probabilities must sum to one within this tolerance. A float32 softmax over a few classes
#: sums to one within ~1e-7; 1e-5 leaves room for K up to a few hundred without admitting unnormalised scores.
PROBABILITY_SUM_ATOL = 1e-5


def _as_float64(values: ArrayLike, expected: str) -> np.ndarray:
    """``values`` as a float64 array, or one ValueError saying what was expected."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{expected}; got {type(values).__name__}") from err


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_probabilities(probs: ArrayLike, *, name: str = "probs") -> np.ndarray:
    """Validate an (N, K) array of per-image class probabilities and return it as float64.

    Raises
    ------
    ValueError
        If the array is not 2-D, has no rows, has fewer than two columns, contains NaN/inf or negative entries,
        or has a row that does not sum to one within :data:`PROBABILITY_SUM_ATOL`.
    """
    p = _as_float64(probs, f"{name} must be a numeric (N, K) array of class probabilities")
    if p.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, K), one probability row per image; got shape {p.shape}")
    n, k = p.shape
    if n == 0:
        raise ValueError(f"{name} has N = 0 rows; at least one image is needed")
    if k < 2:
        raise ValueError(f"{name} has K = {k} column(s); a categorical attribute needs K >= 2 classes")
    # Two reductions decide validity: NaN propagates into both, inf into the row sums (or the minimum for -inf).
    sums = np.add.reduce(p, axis=1)
    if not p.min() >= 0.0 or not np.abs(sums - 1.0).max() <= PROBABILITY_SUM_ATOL:
        _raise_for_probabilities(p, sums, name)
    return p


def _raise_for_probabilities(p: np.ndarray, sums: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} contains NaN or infinite values (first in row {_first_bad_row(bad)})")
    bad = (p < 0).any(axis=1)
    if bad.any():
        row = _first_bad_row(bad)
        raise ValueError(f"{name} contains negative probabilities (first in row {row}: {p[row].tolist()})")
    row = _first_bad_row(np.abs(sums - 1.0) > PROBABILITY_SUM_ATOL)
    raise ValueError(
        f"each row of {name} must sum to 1 (within {PROBABILITY_SUM_ATOL:g}); row {row} sums to {sums[row]!r}. "
        "Pass probabilities (e.g. softmax of the logits), not scores"
    )


def check_distribution(target: ArrayLike, n_classes: int | None = None, *, name: str = "target") -> np.ndarray:
    """Validate a target distribution over K classes and return it as float64 of shape (K,), renormalised.

    ``n_classes``, when given, is the K the distribution must have (the number of columns of the probabilities).
    """
    d = _as_float64(target, f"{name} must be a 1-D array of class probabilities")
    if d.ndim != 1:
        raise ValueError(f"{name} must be a 1-D distribution over the K classes; got shape {d.shape}")
    if n_classes is not None and d.shape[0] != n_classes:
        raise ValueError(f"{name} has {d.shape[0]} classes but the probabilities have K = {n_classes} columns")
    if d.shape[0] < 2:
        raise ValueError(f"{name} must cover K >= 2 classes; got {d.shape[0]}")
    values = d.tolist()  # K is a handful of classes: plain Python is cheaper than numpy reductions here
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} contains NaN or infinite values: {values}")
    if min(values) < 0:
        raise ValueError(f"{name} is not a distribution: it has negative entries {values}")
    total = math.fsum(values)
    if abs(total - 1.0) > PROBABILITY_SUM_ATOL:
        raise ValueError(f"{name} is not a distribution: it sums to {total!r}, expected 1")
    return d if total == 1.0 else d / total  # exact normalisation, so that identities such as sum_i q_i = N * D hold to rounding


def check_threshold(threshold: float, *, name: str = "threshold") -> float:
    """Validate a confidence threshold C in [0, 1]."""
    try:
        c = float(threshold)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 1]; got {threshold!r}") from err
    if not 0.0 <= c <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1]; got {threshold!r}")
    return c


def check_labels(labels: ArrayLike, n: int, *, name: str = "labels") -> np.ndarray:
    """Validate a length-n vector of integer (or hashable) group labels and return integer codes 0..G-1."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per image (length {n}); got shape {lab.shape}")
    if lab.dtype.kind == "f" and not np.isfinite(lab).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    _, codes = np.unique(lab, return_inverse=True)
    return codes.reshape(-1)


def check_count(value: object, name: str, *, minimum: int = 0) -> int:
    """Validate a count (steps, samples, iterations) and return it as a Python int >= ``minimum``.

    A count is an integer in the sense of ``operator.index`` (Python and numpy integers, integer tensors). Floats are
    refused even when integral-looking, so that 2.9 is never truncated to 2; booleans are refused so that ``True`` is
    never read as one step; negative values are refused instead of behaving like an empty ``range``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer >= {minimum}; got the boolean {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r} of type {type(value).__name__}") from None
    if n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {n}")
    return n


def check_seed(seed: object, *, name: str = "seed") -> object:
    """Validate a random seed: None, an integer >= 0, a ``numpy.random.SeedSequence`` or a ``numpy.random.Generator``.

    Returned unchanged (integers as Python ints). Floats and strings are refused: ``numpy.random.default_rng`` would
    raise a TypeError deep inside numpy for them.
    """
    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return seed
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"{name} must be None, an integer >= 0, a SeedSequence or a Generator; got the boolean {seed!r}")
    try:
        value = operator.index(seed)
    except TypeError:
        raise ValueError(f"{name} must be None, an integer >= 0, a SeedSequence or a Generator; "
                         f"got {seed!r} of type {type(seed).__name__}") from None
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (numpy seeds are non-negative); got {value}")
    return value


def check_positive_finite(value: object, name: str) -> float:
    """Validate a strictly positive, finite number (a temperature such as beta) and return it as a float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be > 0 and finite; got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):  # also rejects NaN
        raise ValueError(f"{name} must be > 0 and finite; got {value!r}")
    return v
