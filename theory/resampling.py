"""How sure an evaluation's numbers are: bootstrap over prompts and over images within prompts, and the paired
comparison of two models evaluated on the same noise.

An evaluation's data are groups (prompts) of items (images). A headline statistic (the mean over prompts of the
bias of [0124], the discrepancy of eq. 11 pooled over prompts) varies with the prompts drawn and with the images
drawn for each. The two-stage bootstrap resamples both, as the data were made (Davison & Hinkley 1997, Sec. 3.8:
resample groups with replacement, then items within each drawn group with replacement); ``over="prompts"`` keeps each
prompt's images as they are and ``over="images"`` keeps the prompts. scipy's ``stats.bootstrap`` resamples one level
of independent observations only, hence these few lines.

Two models evaluated on the same prompts and the same initial noise (fairdiff's evaluation seeds image i of prompt P
identically for every model) are compared by resampling the same prompt and image indices for both: the interval of
the difference then excludes the noise both share, which two separate intervals cannot.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np

__all__ = ["Resample", "draw_resamples", "bootstrap", "paired_bootstrap", "percentile_interval"]

Over = Literal["prompts+images", "prompts", "images"]
Statistic = Callable[[Sequence[np.ndarray]], float]


class Resample(tuple):
    """One resample: a tuple of (group index, item indices of that group), in draw order."""


def draw_resamples(group_sizes: Sequence[int], n_resamples: int, *, seed: int,
                   over: Over = "prompts+images") -> list[Resample]:
    """``n_resamples`` index draws for groups of ``group_sizes`` items, each from its own stream of
    ``numpy.random.SeedSequence(seed)`` (so a draw does not depend on how many others are made)."""
    sizes = [int(s) for s in group_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"every group needs at least one item; got sizes {sizes[:8]}")
    if over not in ("prompts+images", "prompts", "images"):
        raise ValueError(f"over must be prompts+images, prompts or images; got {over!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1; got {n_resamples!r}")
    draws = []
    for stream in np.random.SeedSequence(seed).spawn(n_resamples):
        rng = np.random.default_rng(stream)
        groups = rng.integers(0, len(sizes), len(sizes)) if over != "images" else np.arange(len(sizes))
        draws.append(Resample(
            (int(g), rng.integers(0, sizes[g], sizes[g]) if over != "prompts" else np.arange(sizes[g]))
            for g in groups))
    return draws


def _apply(groups: Sequence[np.ndarray], resample: Resample) -> list[np.ndarray]:
    return [np.asarray(groups[g])[items] for g, items in resample]


def bootstrap(groups: Sequence[np.ndarray], statistic: Statistic, *, n_resamples: int = 2000, seed: int = 0,
              over: Over = "prompts+images") -> np.ndarray:
    """The statistic on each resample of ``groups`` (one array of items per group; rows are items)."""
    draws = draw_resamples([len(g) for g in groups], n_resamples, seed=seed, over=over)
    return np.array([statistic(_apply(groups, r)) for r in draws], dtype=np.float64)


def paired_bootstrap(groups_a: Sequence[np.ndarray], groups_b: Sequence[np.ndarray], statistic: Statistic, *,
                     n_resamples: int = 2000, seed: int = 0, over: Over = "prompts+images") -> np.ndarray:
    """statistic(B) - statistic(A) on each resample, the same prompt and image indices drawn for both models (item
    i of group g of A and of B come from the same noise)."""
    if len(groups_a) != len(groups_b) or any(len(a) != len(b) for a, b in zip(groups_a, groups_b)):
        raise ValueError("a paired comparison needs the same prompts with the same number of images in both "
                         f"evaluations; got {[len(g) for g in groups_a][:8]} and {[len(g) for g in groups_b][:8]}")
    draws = draw_resamples([len(g) for g in groups_a], n_resamples, seed=seed, over=over)
    return np.array([statistic(_apply(groups_b, r)) - statistic(_apply(groups_a, r)) for r in draws],
                    dtype=np.float64)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples (non-finite samples refused)."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or not np.isfinite(s).all():
        raise ValueError(f"samples must be a 1-D array of >= 2 finite values; got shape {s.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    low, high = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
