"""DDPM noise schedules: beta_t, alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s.

The same arrays as diffusers' ``DDPMScheduler`` (``beta_schedule="linear"`` and ``"scaled_linear"``), written out
here because ``theory`` imports no model library; ``tests/test_schedules.py`` checks the two agree.
"""

from __future__ import annotations

import torch

from theory.validation import check_count


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_t linear in t (Ho et al. 2020), float64, shape (T,)."""
    _check(num_steps, beta_start, beta_end)
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def scaled_linear_betas(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """sqrt(beta_t) linear in t: Stable Diffusion's schedule (seed 000, Fig. 6b uses 0.00085..0.012), float64."""
    _check(num_steps, beta_start, beta_end)
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s)."""
    return torch.cumprod(1.0 - betas, dim=0)


def _check(num_steps: int, beta_start: float, beta_end: float) -> None:
    check_count(num_steps, "num_steps", minimum=1)  # refuses 2.9 rather than truncating it
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1; got beta_start={beta_start!r}, beta_end={beta_end!r}")
