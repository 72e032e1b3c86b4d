"""Image-quality and alignment scores the anchors report, stated once so that the library computing them can be
checked (seed 000 Table 1, seed 001 Tables 1-5).

- :func:`clip_score_unclamped` — 100 * cos(image, prompt): OpenAI CLIP's similarity x100, seed 001's "CLIP" column as
  its code computes it. fairdiff's ``clip_score`` so far is 100 * max(cos, 0), torchmetrics' ``CLIPScore``
  (:func:`theory.image_scores.clip_score_of_cosine`); the two differ only for negative cosines.
- :func:`frechet_distance` — FID (Heusel et al. 2017): ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) of two
  Gaussians fitted to image features; the evaluation computes it with torchmetrics, this is the reference it is
  tested against.
- :func:`kernel_distance` — KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3 on one pair of feature subsets.
- :func:`pick_score` — PickScore (Kirstain et al. 2023): logit_scale * cos(image, prompt) of its CLIP model.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg

from theory.image_scores import paired_cosine

__all__ = ["clip_score_unclamped", "frechet_distance", "hps_v2", "kernel_distance", "pick_score"]


def clip_score_unclamped(image_embeddings: ArrayLike, text_embeddings: ArrayLike) -> np.ndarray:
    """100 * cos(image_i, text_i) per image, negative cosines kept."""
    return 100.0 * paired_cosine(image_embeddings, text_embeddings)


def hps_v2(image_embeddings: ArrayLike, text_embeddings: ArrayLike) -> np.ndarray:
    """HPSv2 (Wu et al. 2023): cos(image_i, text_i) per image from the HPS-finetuned open_clip ViT-H-14, unscaled
    (``hpsv2.img_score.score``: the diagonal of unit image features times unit text features)."""
    return paired_cosine(image_embeddings, text_embeddings)


def _features(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or not np.isfinite(a).all():
        raise ValueError(f"{name} must be a finite (N, D) array of features with N >= 2; got shape {a.shape}")
    return a


def frechet_distance(features_1: ArrayLike, features_2: ArrayLike) -> float:
    """FID between two feature sets (rows are images), covariances with N - 1 in the denominator."""
    a, b = _features(features_1, "features_1"), _features(features_2, "features_2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the feature sets have dimensions {a.shape[1]} and {b.shape[1]}")
    mu_1, mu_2 = a.mean(0), b.mean(0)
    s_1, s_2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_1 @ s_2)
    root = root.real if np.iscomplexobj(root) else root
    return float(np.sum((mu_1 - mu_2) ** 2) + np.trace(s_1 + s_2 - 2 * root))


def kernel_distance(features_1: ArrayLike, features_2: ArrayLike) -> float:
    """KID's unbiased MMD^2 estimate between two feature sets with k(x, y) = (x.y / d + 1)^3."""
    a, b = _features(features_1, "features_1"), _features(features_2, "features_2")
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    m, n = len(a), len(b)
    return float((k_aa.sum() - np.trace(k_aa)) / (m * (m - 1)) + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
                 - 2 * k_ab.mean())


def pick_score(image_embeddings: ArrayLike, text_embeddings: ArrayLike, logit_scale: float) -> np.ndarray:
    """logit_scale * cos(image_i, text_i) per image (PickScore's CLIP, its learned temperature exp(t))."""
    if not np.isfinite(logit_scale) or logit_scale <= 0:
        raise ValueError(f"logit_scale must be a finite number > 0 (exp of the model's logit_scale); got {logit_scale}")
    return float(logit_scale) * paired_cosine(image_embeddings, text_embeddings)
