"""Summaries over repeated seeds: what every experiment reports as "mean ± sd over seeds"."""

from __future__ import annotations

import numpy as np


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the per-seed values."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
