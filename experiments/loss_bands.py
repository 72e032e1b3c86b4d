"""Training curves drawn as mean +- sd over seeds of a moving average: the DAL of one iteration is 0 whenever no
target is confident (seed 000 eq. 6) and jumps otherwise, so a raw per-iteration band mostly shows that noise."""

from __future__ import annotations

import matplotlib.axes
import numpy as np


def moving_average(curves: np.ndarray, window: int) -> np.ndarray:
    """The trailing mean over ``window`` iterations of every row of ``curves`` (seeds, iterations); the first
    ``window - 1`` entries average what exists so far."""
    curves = np.asarray(curves, dtype=np.float64)
    csum = np.cumsum(curves, axis=-1)
    out = csum.copy()
    out[..., window:] = csum[..., window:] - csum[..., :-window]
    counts = np.minimum(np.arange(1, curves.shape[-1] + 1), window)
    return out / counts


def draw_loss_band(ax: matplotlib.axes.Axes, curves: list[list[float]], *, window: int = 10, color: str = "C0",
                   label: str = "") -> None:
    """Mean +- sd over seeds (rows of ``curves``) of the ``window``-iteration moving average, over the faint raw
    mean."""
    curves = np.asarray(curves, dtype=np.float64)
    it = np.arange(1, curves.shape[1] + 1)
    smooth = moving_average(curves, window)
    mean = smooth.mean(0)
    sd = smooth.std(0, ddof=1) if curves.shape[0] > 1 else np.zeros_like(mean)
    ax.plot(it, curves.mean(0), color=color, lw=0.6, alpha=0.35, label=f"{label}raw mean per iteration")
    ax.plot(it, mean, color=color, lw=1.8, label=f"{label}{window}-iteration moving average, mean")
    ax.fill_between(it, mean - sd, mean + sd, color=color, alpha=0.25, label=f"{label}± sd over {curves.shape[0]} seeds")
