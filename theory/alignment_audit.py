"""Alignment auditing with a biased prompt embedding, and its two mitigations (seed 003, "Bias Begets Bias").

An alignment score s(x, p) = cos(f(x), E(p)) compares an image feature f(x) with the prompt embedding E(p)
(CLIPScore up to its affine rescaling). A generator G is audited by its mean score Q(G) = E_{x~G}[s(x, p)].

Biased embedding lowers a balanced generator (exact identity). With unit-norm image features and groups g whose
generations have mean feature mu_g = E[f(x) | g], Q(G) = sum_g P_G(g) <E(p)/||E(p)||, mu_g>, so for two groups

    Q(all of group a) - Q(balanced 1/2 : 1/2) = (1/2) <E(p)/||E(p)||, mu_a - mu_b>,

positive exactly when the prompt embedding leans to group a's features: the auditor ranks the generator that
only shows group a above the balanced one. The mitigations replace E(p) by the subclass prompts E(p, g)
("a photo of a {p}, {g}"):

- :func:`subclass_score`: s_sub(x, p) = max_g cos(f(x), E(p, g)) — each image is judged against the subclass prompt
  that fits it best, so an image of group b is no longer penalised for not being of group a.
- :func:`average_then_score`: s_avg(x, p) = cos(f(x), mean_g E(p, g) / ||.||) — one debiased prompt embedding.
  For two unit subclass embeddings, cos(e_avg, E(p, a)) = cos(e_avg, E(p, b)) exactly, so the averaged prompt is
  unbiased *with respect to its own subclass prompts*; any bias the encoder leaves inside E(p, g) remains.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from theory.fairness_criteria import cosine_similarity


def _rows(x: ArrayLike, name: str) -> np.ndarray:
    try:
        v = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of embeddings; got {type(x).__name__}") from err
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"{name} must be a (d,) vector or a non-empty (N, d) array of embeddings; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} contains a zero vector, whose cosine similarity is undefined")
    return v / norms


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"image features have dimension {a.shape[1]} but prompt embeddings {b.shape[1]}")


def cosine_scores(image_features: ArrayLike, prompt_embedding: ArrayLike) -> np.ndarray:
    """s(x_i, p) = cos(f(x_i), E(p)) for each of the N images; shape (N,)."""
    f = _rows(image_features, "image_features")
    e = _rows(prompt_embedding, "prompt_embedding")
    if e.shape[0] != 1:
        raise ValueError(f"prompt_embedding must be a single (d,) embedding; got {e.shape[0]} rows")
    _same_dim(f, e)
    return np.atleast_1d(cosine_similarity(f, e[0]))


def subclass_score(image_features: ArrayLike, subclass_embeddings: ArrayLike) -> np.ndarray:
    """s_sub(x_i, p) = max_g cos(f(x_i), E(p, g)) over the G subclass prompt embeddings (rows); shape (N,)."""
    f = _rows(image_features, "image_features")
    e = _rows(subclass_embeddings, "subclass_embeddings")
    _same_dim(f, e)
    return cosine_similarity(f[:, None, :], e[None, :, :]).max(axis=1)


def averaged_prompt_embedding(subclass_embeddings: ArrayLike) -> np.ndarray:
    """mean_g E(p, g) / ||mean_g E(p, g)|| of the unit-normalised subclass embeddings; shape (d,)."""
    e = _rows(subclass_embeddings, "subclass_embeddings").mean(axis=0)
    norm = np.linalg.norm(e)
    if norm == 0:
        raise ValueError("the subclass embeddings average to zero; average-then-score is undefined for them")
    return e / norm


def average_then_score(image_features: ArrayLike, subclass_embeddings: ArrayLike) -> np.ndarray:
    """s_avg(x_i, p) = cos(f(x_i), averaged subclass prompt embedding); shape (N,)."""
    return cosine_scores(image_features, averaged_prompt_embedding(subclass_embeddings))


def generator_score(scores: ArrayLike) -> float:
    """Q(G) = mean alignment score of the generator's images (the auditor's ranking statistic)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] == 0 or not np.isfinite(s).all():
        raise ValueError(f"scores must be a non-empty finite 1-D array; got shape {s.shape}")
    return float(s.mean())


def biased_minus_balanced_score(prompt_embedding: ArrayLike, group_mean_features: ArrayLike) -> float:
    """Exact Q(all of group 0) - Q(balanced over the groups) = <e/||e||, mu_0 - mean_g mu_g> (module docstring).

    ``group_mean_features`` holds mu_g = E[f(x) | g] of unit-norm image features (rows, not re-normalised).
    """
    e = _rows(prompt_embedding, "prompt_embedding")[0]
    mu = np.asarray(group_mean_features, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 2 or mu.shape[1] != e.shape[0] or not np.isfinite(mu).all():
        raise ValueError(f"group_mean_features must be a finite (G >= 2, {e.shape[0]}) array of mean features; "
                         f"got shape {mu.shape}")
    return float(e @ (mu[0] - mu.mean(axis=0)))
