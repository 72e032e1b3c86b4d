"""Prompt-alignment and image-similarity scores of the evaluations (seed 000 Table 1, seed 001 Sec. 5).

- :func:`paired_cosine` — cos(a_i, b_i) row by row: CLIP-T (image vs its prompt), CLIP-I and DINO (finetuned image vs
  the original model's image from the same initial noise, seed 000 Table 1).
- :func:`clip_score_x100` — the "CLIP" column of seed 001 (Tables 1-5): 100 * max(cos, 0), the convention of
  torchmetrics' ``CLIPScore`` (Hessel et al. 2021 use 2.5 instead of 100; both are reported as "CLIP score");
  :func:`clip_score_of_cosine` gives it from a cosine already computed.

The cosine itself is :func:`theory.fairness_criteria.cosine_similarity`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from theory.fairness_criteria import cosine_similarity


def _rows(x: ArrayLike, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric (N, D) array of embeddings; got {type(x).__name__}") from None
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array of shape (N, D), one embedding per row; "
                         f"got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(a, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{name} has a zero row (row {int(np.flatnonzero(norms == 0)[0])}); "
                         "a cosine needs non-zero embeddings")
    return a


def paired_cosine(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """cos(a_i, b_i) for each row i; shapes (N, D) and (N, D), or (N, D) and (1, D) (one text for all images)."""
    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape[1] != y.shape[1] or y.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"a and b must have the same shape (N, D), or b one row of the same D; "
                         f"got {x.shape} and {y.shape}")
    return np.atleast_1d(cosine_similarity(x, y))


def clip_score_of_cosine(cosine: ArrayLike) -> np.ndarray | float:
    """100 * max(cos, 0): seed 001's "CLIP" score of an image-prompt cosine (torchmetrics ``CLIPScore``)."""
    score = 100.0 * np.maximum(np.asarray(cosine, dtype=np.float64), 0.0)
    return float(score) if score.ndim == 0 else score


def clip_score_x100(image_embeddings: ArrayLike, text_embeddings: ArrayLike) -> np.ndarray:
    """100 * max(cos(image_i, text_i), 0) per image (seed 001's "CLIP"; torchmetrics ``CLIPScore``)."""
    return clip_score_of_cosine(paired_cosine(image_embeddings, text_embeddings))
