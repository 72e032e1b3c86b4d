"""Fairness criteria for generators and for alignment scores (seed 003, "Bias Begets Bias"), stated once.

- :func:`total_variation` — TV(p, q) = (1/2) sum_k |p_k - q_k| between two class distributions.
- :func:`representational_balance` — distance in TV of a generator's class distribution (for a neutral prompt)
  from the target; 0 is perfectly balanced. A generator is eps-balanced when this is <= eps.
- :func:`cosine_similarity`, :func:`embedding_bias_ratio`, :func:`embedding_bias_gap` — embedding bias of a prompt:
  cos(e, e_a) / cos(e, e_b) (1 is unbiased) and cos(e, e_a) - cos(e, e_b) (0 is unbiased).
- :func:`multiaccuracy_gap` — max over groups g of |E[y - s | g]| for an alignment score s of true alignment y.
- :func:`multicalibration_gap` — max over groups g and score bins v of |E[(y - s) 1{s in v} | g]|.

Multi-accuracy asks the score to be right on average within every protected group; multi-calibration asks it
within every group *and* every score level. A score calibrated on the pooled population can fail both.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from theory.validation import check_distribution, check_labels


def total_variation(p: ArrayLike, q: ArrayLike) -> float:
    """TV(p, q) = (1/2) sum_k |p_k - q_k| = max over class sets A of |p(A) - q(A)|."""
    a = check_distribution(p, name="p")
    b = check_distribution(q, a.shape[0], name="q")
    return float(0.5 * np.abs(a - b).sum())


def representational_balance(class_distribution: ArrayLike, target: ArrayLike | None = None) -> float:
    """Representational imbalance TV(class distribution of the generations, target) (seed 003); uniform by default."""
    p = check_distribution(class_distribution, name="class_distribution")
    d = np.full(p.shape[0], 1.0 / p.shape[0]) if target is None else check_distribution(target, p.shape[0])
    return total_variation(p, d)


def _vectors(x: ArrayLike, name: str) -> np.ndarray:
    try:
        v = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric embedding vector or (N, d) array; got {type(x).__name__}") from err
    if v.ndim == 0 or v.shape[-1] == 0:
        raise ValueError(f"{name} must be a (d,) embedding or an (..., d) array of embeddings; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(v, axis=-1)
    if (norms == 0).any():
        raise ValueError(f"{name} contains a zero vector, whose cosine similarity is undefined")
    return v


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> np.ndarray | float:
    """cos(a, b) = <a, b> / (||a|| ||b||) over the last axis, broadcast over the leading ones ((N, d) against a single
    (d,) vector, (N, 1, d) against (G, d) for the N x G table, ...). The one cosine of the package's numpy scores."""
    u = _vectors(a, "a")
    v = _vectors(b, "b")
    if u.shape[-1] != v.shape[-1]:
        raise ValueError(f"embeddings must have the same dimension; got {u.shape[-1]} and {v.shape[-1]}")
    cos = (u * v).sum(axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return float(cos) if np.ndim(cos) == 0 else cos


def embedding_bias_ratio(prompt: ArrayLike, attribute_a: ArrayLike, attribute_b: ArrayLike) -> np.ndarray | float:
    """cos(e, e_a) / cos(e, e_b) (seed 003): > 1 when the prompt leans to attribute a. Needs cos(e, e_b) > 0."""
    ca = cosine_similarity(prompt, attribute_a)
    cb = cosine_similarity(prompt, attribute_b)
    if np.any(np.asarray(cb) <= 0):
        raise ValueError("the cosine ratio needs cos(prompt, attribute_b) > 0; use embedding_bias_gap for "
                         "embeddings with non-positive similarities")
    return ca / cb


def embedding_bias_gap(prompt: ArrayLike, attribute_a: ArrayLike, attribute_b: ArrayLike) -> np.ndarray | float:
    """cos(e, e_a) - cos(e, e_b) (seed 003): > 0 when the prompt leans to attribute a; defined for any embeddings."""
    return cosine_similarity(prompt, attribute_a) - cosine_similarity(prompt, attribute_b)


def _score_inputs(scores: ArrayLike, truth: ArrayLike, groups: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, one per (image, prompt); got shape {s.shape}")
    y = np.asarray(truth, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"truth must have the shape of scores {s.shape}; got {y.shape}")
    for name, v in (("scores", s), ("truth", y)):
        if not np.isfinite(v).all() or (v < 0).any() or (v > 1).any():
            raise ValueError(f"{name} must lie in [0, 1] (a score on the scale of the true alignment); "
                             f"got range [{np.nanmin(v)!r}, {np.nanmax(v)!r}]")
    return s, y, check_labels(groups, s.shape[0], name="groups")


def multiaccuracy_gap(scores: ArrayLike, truth: ArrayLike, groups: ArrayLike) -> float:
    """max_g |E[y - s | g]|: the score is alpha-multi-accurate over the groups iff this is <= alpha (seed 003).

    Parameters
    ----------
    scores : array-like of shape (N,)
        Alignment score s(image, prompt) in [0, 1] of each audited pair.
    truth : array-like of shape (N,)
        True alignment y in [0, 1] (e.g. 1 if the image depicts the prompt).
    groups : array-like of shape (N,)
        Protected group of each image.
    """
    s, y, g = _score_inputs(scores, truth, groups)
    residual = np.bincount(g, weights=y - s) / np.bincount(g)
    return float(np.abs(residual).max())


def multicalibration_gap(scores: ArrayLike, truth: ArrayLike, groups: ArrayLike, n_bins: int = 10) -> float:
    """max_{g, v} |E[(y - s) 1{s in v} | g]| over groups g and ``n_bins`` equal-width score bins v of [0, 1].

    The 1{s in v} weighting (rather than conditioning on the bin) keeps empty or tiny bins from dominating; the
    gap is >= the multi-accuracy gap / n_bins and 0 for a score equal to the conditional mean of y within each
    (group, bin). Scores equal to 1 fall in the last bin.
    """
    s, y, g = _score_inputs(scores, truth, groups)
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    bins = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    n_groups = int(g.max()) + 1
    cell = g * n_bins + bins
    sums = np.bincount(cell, weights=y - s, minlength=n_groups * n_bins).reshape(n_groups, n_bins)
    return float(np.abs(sums / np.bincount(g, minlength=n_groups)[:, None]).max())
