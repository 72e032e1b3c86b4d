"""A CLIP-like feature model for auditing prompt-image alignment with a biased text encoder (seed 003).

Orthonormal directions in R^d: u_p for each profession p and a_g for each group g (0 = "man", 1 = "woman").

- Image features: f(x) = normalise(u_{p(x)} + gamma a_{g(x)} + tau xi), xi ~ N(0, I / d).
- Neutral prompt: E(p) = normalise(u_p + b_p a_0) — the encoder's stereotype b_p pulls "a photo of a {p}" toward
  group 0 (b_p < 0 toward group 1).
- Subclass prompts: E(p, g) = normalise(u_p + leak b_p a_0 + kappa a_g) — stating the group overrides the
  stereotype except for a leaked fraction ``leak`` of it (leak = 0: the explicit prompts are unbiased).

Scores are raw cosines from :mod:`theory.alignment_audit`; :func:`platt_calibrate` maps them to [0, 1] on the pooled
audit set so that the multi-accuracy and multi-calibration gaps of :mod:`theory.fairness_criteria` apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from theory.alignment_audit import average_then_score, cosine_scores, subclass_score
from theory.validation import check_count


@dataclass(frozen=True)
class FeatureModel:
    """The feature and text-encoder model of the module docstring."""

    dim: int = 32
    n_professions: int = 2
    gamma: float = 0.8
    tau: float = 0.3
    kappa: float = 0.8
    leak: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < self.n_professions + 2:
            raise ValueError(f"dim must be at least n_professions + 2 = {self.n_professions + 2} orthonormal "
                             f"directions; got {self.dim}")
        if self.n_professions < 2:
            raise ValueError("the audit needs a profession and at least one distractor: n_professions >= 2")
        for name in ("gamma", "tau", "kappa", "leak"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {getattr(self, name)!r}")

    def _profession(self, p: int) -> np.ndarray:
        if not 0 <= p < self.n_professions:
            raise ValueError(f"profession index must be in 0..{self.n_professions - 1}; got {p}")
        return np.eye(self.dim)[p]

    def _group(self, g: int) -> np.ndarray:
        if g not in (0, 1):
            raise ValueError(f"group must be 0 or 1; got {g}")
        return np.eye(self.dim)[self.n_professions + g]

    def image_features(self, professions: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Unit features of images with the given profession and group labels; shape (N, dim)."""
        u = np.eye(self.dim)[np.asarray(professions)]
        a = np.eye(self.dim)[self.n_professions + np.asarray(groups)]
        f = u + self.gamma * a + self.tau * rng.standard_normal(u.shape) / np.sqrt(self.dim)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def neutral_prompt(self, p: int, stereotype: float) -> np.ndarray:
        """E(p) = normalise(u_p + b_p a_0)."""
        e = self._profession(p) + stereotype * self._group(0)
        return e / np.linalg.norm(e)

    def subclass_prompts(self, p: int, stereotype: float) -> np.ndarray:
        """Rows E(p, g) = normalise(u_p + leak b_p a_0 + kappa a_g) for g = 0, 1."""
        rows = [self._profession(p) + self.leak * stereotype * self._group(0) + self.kappa * self._group(g)
                for g in (0, 1)]
        return np.array([r / np.linalg.norm(r) for r in rows])


def raw_scores(model: FeatureModel, features: np.ndarray, p: int, stereotype: float) -> dict[str, np.ndarray]:
    """Raw alignment of each image with profession p by the three scorers: plain, subclass, average-then-score."""
    sub = model.subclass_prompts(p, stereotype)
    return {
        "plain": cosine_scores(features, model.neutral_prompt(p, stereotype)),
        "subclass": subclass_score(features, sub),
        "average": average_then_score(features, sub),
    }


def platt_calibrate(raw: np.ndarray, truth: np.ndarray, *, iterations: int = 100) -> np.ndarray:
    """Calibrated scores expit(a raw + b), (a, b) the pooled maximum-likelihood logistic fit (Newton's method).

    Calibration on the pooled audit set is what a practitioner would do; it makes the score right on average over
    everyone, so whatever multi-accuracy gap remains is a gap *between* the groups.
    """
    iterations = check_count(iterations, "iterations", minimum=1)
    x = np.column_stack([raw, np.ones_like(raw)])
    theta = np.zeros(2)
    for _ in range(iterations):
        p = expit(x @ theta)
        grad = x.T @ (truth - p)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)  # ridge keeps separable data finite
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.abs(step).max() < 1e-12:
            break
    return expit(x @ theta)
