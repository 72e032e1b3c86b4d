"""The DAL targets of a whole batch, for every debiased attribute at once (seed 000 [0105]-[0106], [0123], [0132]).

The targets are a property of the whole batch (the OT couples all N images), so they are formed once per iteration
from all processes' classifier probabilities, on the images in which a face was found ([0108]: the DAL acts on
face regions only), by :func:`theory.dal.dal_targets`. An attribute with conditioning attributes ([0132]: age 75/25
within every gender x race group) is aligned within the groups of the conditioning attributes' predicted classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from theory.dal import dal_targets

from scaleup.jobs.adft.config import AttributePlan


@dataclass(frozen=True)
class BatchTargets:
    """Targets of the N images of a batch for A attributes; -1 / False where an image has no face."""

    y: np.ndarray
    """(N, A) int64 target class y_i per attribute, -1 without a face."""
    mask: np.ndarray
    """(N, A) bool, c_i >= C (and a face found)."""
    confidence: np.ndarray
    """(N, A) float64 c_i = max_k q_ik, NaN without a face."""


def condition_labels(probs: dict[str, np.ndarray], on: Sequence[str]) -> np.ndarray:
    """Per image the joint predicted class of the attributes ``on`` (e.g. "1-3" for female x Indian)."""
    classes = [np.asarray(probs[name]).argmax(axis=1) for name in on]
    return np.array(["-".join(str(int(c[i])) for c in classes) for i in range(len(classes[0]))])


def batch_targets(probs: dict[str, np.ndarray], has_face: np.ndarray, attributes: Sequence[AttributePlan],
                  threshold: float, *, seed: int, method: str = "auto", n_samples: int = 1000) -> BatchTargets:
    """DAL targets of every attribute for the whole batch.

    Parameters
    ----------
    probs : attribute name -> (N, K) classifier probabilities (rows of images without a face are ignored).
    has_face : (N,) bool.
    attributes : the job's attributes, in order (columns of the result).
    threshold : C of eq. 6.
    seed : seeds the Monte Carlo targets (one stream per attribute, from ``SeedSequence(seed)``).
    """
    has_face = np.asarray(has_face, dtype=bool)
    n = has_face.shape[0]
    y = np.full((n, len(attributes)), -1, dtype=np.int64)
    mask = np.zeros((n, len(attributes)), dtype=bool)
    confidence = np.full((n, len(attributes)), np.nan)
    faces = np.flatnonzero(has_face)
    if faces.size == 0:
        return BatchTargets(y, mask, confidence)
    streams = np.random.SeedSequence(seed).spawn(len(attributes))
    face_probs = {name: np.asarray(p, dtype=np.float64)[faces] for name, p in probs.items()}
    for a, attribute in enumerate(attributes):
        groups = condition_labels(face_probs, attribute.conditional_on) if attribute.conditional_on else None
        t = dal_targets(face_probs[attribute.name], attribute.target, threshold, groups=groups, method=method,
                        n_samples=n_samples, seed=np.random.default_rng(streams[a]))
        y[faces, a], mask[faces, a], confidence[faces, a] = t.y, t.mask, t.c
    return BatchTargets(y, mask, confidence)
