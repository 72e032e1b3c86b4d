"""Classifier-free guidance (Ho & Salimans 2022), the sampling rule whose scale seed 001 ablates (App. A.1, Fig. 6).

eps_cfg(x_t, t, c) = eps(x_t, t, empty) + w (eps(x_t, t, c) - eps(x_t, t, empty)): w = 1 is the conditional model
itself, w > 1 extrapolates away from the unconditional prediction. Exactly at t -> 0 this is the score of the tilted
density p(x | c)^w p(x)^(1 - w), so a class ratio rho_c of the conditional and rho_0 of the unconditional model become
about rho_c^w rho_0^(1 - w): guidance amplifies whatever imbalance the conditional has beyond the unconditional's.
"""

from __future__ import annotations

import math

import torch


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_uncond + scale (eps_cond - eps_uncond), elementwise (module docstring; seed 001, App. A.1).

    Parameters
    ----------
    eps_uncond, eps_cond : Tensor
        Noise predictions of the empty prompt and of the prompt, of one shape.
    scale : float
        The guidance scale w (finite; w = 1 returns ``eps_cond``, w = 0 ``eps_uncond``).
    """
    if eps_uncond.shape != eps_cond.shape:
        raise ValueError("eps_uncond and eps_cond must have the same shape, one prediction per element; got "
                         f"{tuple(eps_uncond.shape)} and {tuple(eps_cond.shape)}")
    try:
        w = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale (the guidance scale w) must be a finite number; got {scale!r}") from None
    if not math.isfinite(w):
        raise ValueError(f"scale (the guidance scale w) must be a finite number; got {scale!r}")
    return eps_uncond + w * (eps_cond - eps_uncond)
