"""A measured attribute distribution corrected for the attribute classifier's errors (CLEAM, Teo et al., NeurIPS 2023).

A classifier with confusion matrix C (``C[i, j]`` = P(predicted j | true class i), each row a distribution) turns the
true class distribution p of the generated images into predictions distributed as

    q = C^T p                                                                    (CLEAM, Sec. 4, in K-class form)

so the measured q-hat over-states whatever the classifier confuses (a 90 %-accurate gender classifier reports a
perfectly balanced model as balanced, but a fully male one as 90 % male). Given q-hat and C estimated on labelled
images, the corrected distribution is the p on the probability simplex that best explains q-hat:

    p-hat = argmin_{p >= 0, sum p = 1} || C^T p - q-hat ||_2,

which is C^-T q-hat itself whenever that lies on the simplex; for two classes with per-class accuracies a_0 = C[0, 0],
a_1 = C[1, 1] it is CLEAM's point estimate p_0 = (q_0 - (1 - a_1)) / (a_0 + a_1 - 1), clipped to [0, 1]. The
uncertainty of q-hat (finite images) and of C (finite labelled images) is left to a bootstrap over both
(:mod:`theory.resampling`), in place of CLEAM's Gaussian approximation, so that the interval holds for any K.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike

from theory.validation import check_count, check_distribution

__all__ = ["confusion_matrix", "per_class_accuracy", "corrected_distribution"]


def confusion_matrix(true: ArrayLike, predicted: ArrayLike, n_classes: int) -> np.ndarray:
    """C[i, j] = #{true i, predicted j} / #{true i}, from labelled examples; every class needs at least one."""
    k = check_count(n_classes, "n_classes", minimum=2)
    t, p = np.asarray(true), np.asarray(predicted)
    if t.ndim != 1 or t.shape != p.shape or t.size == 0:
        raise ValueError(f"true and predicted must be 1-D arrays of one length >= 1; got shapes {t.shape} and "
                         f"{p.shape}")
    for name, v in (("true", t), ("predicted", p)):
        if v.dtype.kind not in "iu" or v.min() < 0 or v.max() >= k:
            raise ValueError(f"{name} must hold class indices in [0, {k - 1}]; got {np.unique(v)[:8].tolist()}")
    counts = np.zeros((k, k))
    np.add.at(counts, (t, p), 1.0)
    rows = counts.sum(axis=1)
    missing = np.flatnonzero(rows == 0).tolist()
    if missing:
        raise ValueError(f"classes {missing} have no labelled example: their row of the confusion matrix cannot be "
                         "estimated; label images of every class")
    return counts / rows[:, None]


def per_class_accuracy(confusion: ArrayLike) -> np.ndarray:
    """The diagonal of C: the share of each true class the classifier names correctly."""
    return np.diag(_check_confusion(confusion)).copy()


def _check_confusion(confusion: ArrayLike) -> np.ndarray:
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"confusion must be a square K x K matrix with K >= 2; got shape {c.shape}")
    for i, row in enumerate(c):
        check_distribution(row, name=f"confusion row {i}")
    return c


def _simplex_least_squares(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """argmin ||a p - q|| over the simplex, exactly: the optimum of this convex problem solves the equality-constrained
    problem on its own support, so every support is tried and the best feasible solution kept. No well-kept library
    solves it exactly (scipy's solvers are iterative); K <= 8 here, 255 supports at most."""
    k = a.shape[1]
    best, best_residual = None, np.inf
    for size in range(1, k + 1):
        for support in combinations(range(k), size):
            s = list(support)
            a_s = a[:, s]
            # KKT of min ||a_s x - q||^2 s.t. sum x = 1
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2 * a_s.T @ a_s
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.concatenate([2 * a_s.T @ q, [1.0]])
            x = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if (x < -1e-12).any():
                continue
            p = np.zeros(k)
            p[s] = np.clip(x, 0.0, None)
            p /= p.sum()
            residual = float(np.linalg.norm(a @ p - q))
            if residual < best_residual - 1e-15:
                best, best_residual = p, residual
    return best


def corrected_distribution(observed: ArrayLike, confusion: ArrayLike) -> np.ndarray:
    """p-hat: the class distribution on the simplex whose predictions under ``confusion`` best match ``observed``
    (module docstring; CLEAM's point estimate for two classes).

    Raises
    ------
    ValueError
        When the confusion matrix is singular (some classes are told apart no better than chance): no correction
        exists, the classifier cannot measure this attribute.
    """
    c = _check_confusion(confusion)
    q = check_distribution(observed, c.shape[0], name="observed")
    if abs(np.linalg.det(c)) < 1e-9:
        raise ValueError(f"the classifier's confusion matrix is singular (per-class accuracy "
                         f"{np.round(np.diag(c), 3).tolist()}): its predictions carry no information to correct; "
                         "use a better classifier")
    p = np.linalg.solve(c.T, q)
    if (p >= -1e-12).all():
        p = np.clip(p, 0.0, None)
        return p / p.sum()
    return _simplex_least_squares(c.T, q)
