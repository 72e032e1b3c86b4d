"""The DDPM chain: its coefficients and the ancestral sampling step (seed 000, [0110]; DESIGN.md).

    z_{t-1} = (1 / sqrt(alpha_t)) (z_t - c_t eps_theta(z_t, t)) + sigma_t w_t,   c_t = beta_t / sqrt(1 - abar_t),

with w_t ~ N(0, I), alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s. Arrays are indexed 0..T-1 for t = 1..T.
The forward process it inverts noises data x_0 in one draw, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
(:func:`forward_noise`).
"""

from __future__ import annotations

from typing import Callable, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

SigmaKind = Literal["beta", "posterior"]
#: A torch tensor or a numpy array: the DDPM step is the same arithmetic on either.
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def check_betas(betas: ArrayLike, *, name: str = "betas") -> np.ndarray:
    """Validate a DDPM noise schedule beta_1..beta_T (each in (0, 1)) and return it as float64 of shape (T,)."""
    try:
        b = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D array of noise levels in (0, 1); got {type(betas).__name__}") from err
    if b.ndim != 1 or b.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array beta_1..beta_T; got shape {b.shape}")
    if not (np.isfinite(b).all() and (b > 0).all() and (b < 1).all()):
        raise ValueError(f"every entry of {name} must lie strictly between 0 and 1; got min {b.min()!r}, max {b.max()!r}")
    return b


def ddpm_coefficients(betas: ArrayLike) -> dict[str, np.ndarray]:
    """alpha_t, abar_t and c_t = beta_t / sqrt(1 - abar_t) of the DDPM step (DESIGN.md; seed 000 [0110]).

    Index 0 of every array is step t = 1.
    """
    b = check_betas(betas)
    alphas = 1.0 - b
    alpha_bars = np.cumprod(alphas)
    return {"betas": b, "alphas": alphas, "alpha_bars": alpha_bars, "c": eps_coefficient(b, alpha_bars)}


def eps_coefficient(beta: ArrayLike, alpha_bar: ArrayLike) -> np.ndarray:
    """c_t = beta_t / sqrt(1 - abar_t), the weight of eps in the DDPM step (seed 000 [0110]; seed 002 eq. 6).

    Elementwise for any beta_t and abar_t, e.g. those a diffusers scheduler stores (:func:`ddpm_coefficients` forms
    the whole schedule's).
    """
    return np.asarray(beta, dtype=np.float64) / np.sqrt(1.0 - np.asarray(alpha_bar, dtype=np.float64))


def ddpm_sigmas(betas: ArrayLike, kind: SigmaKind = "beta") -> np.ndarray:
    """Step noise sigma_t of the ancestral sampler: ``"beta"`` sigma_t^2 = beta_t, ``"posterior"`` beta~_t.

    beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) is zero at t = 1, for which the path-KL bound is infinite.
    """
    coef = ddpm_coefficients(betas)
    if kind == "beta":
        return np.sqrt(coef["betas"])
    if kind == "posterior":
        prev = np.concatenate(([1.0], coef["alpha_bars"][:-1]))
        return np.sqrt(coef["betas"] * (1.0 - prev) / (1.0 - coef["alpha_bars"]))
    raise ValueError(f"kind must be 'beta' or 'posterior'; got {kind!r}")


def forward_noise(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the DDPM forward process in one draw (seed 002, below eq. 5).

    ``alpha_bar`` is a scalar or has the leading shape of ``x0`` (one abar_t per sample, e.g. (B,) for x0 of shape
    (B, d) or (B, C, H, W)); it is broadcast over the remaining dimensions.
    """
    abar = torch.as_tensor(alpha_bar, dtype=x0.dtype, device=x0.device)
    if abar.shape != x0.shape[:abar.ndim]:
        raise ValueError(f"alpha_bar must be a scalar or have the leading shape of x0 {tuple(x0.shape)}; "
                         f"got shape {tuple(abar.shape)}")
    abar = abar.reshape(abar.shape + (1,) * (x0.ndim - abar.ndim))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def ddpm_step(z_t: ArrayT, eps: ArrayT, c_t: float, alpha_t: float, sigma_t: float, noise: ArrayT | None) -> ArrayT:
    """One ancestral step z_{t-1} = (z_t - c_t eps) / sqrt(alpha_t) + sigma_t w_t; ``noise=None`` gives the mean.

    Arithmetic only, so ``z_t``, ``eps`` and ``noise`` may be torch tensors or numpy arrays (all of one kind).
    """
    mean = (z_t - c_t * eps) / alpha_t**0.5
    return mean if noise is None else mean + sigma_t * noise


@torch.no_grad()
def ddpm_sample(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z_T: torch.Tensor,
    betas: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    t_from: int | None = None,
    t_to: int = 0,
    sigmas: ArrayLike | None = None,
    noisy_last_step: bool = False,
) -> torch.Tensor:
    """Run the ancestral chain, by default with sigma_t^2 = beta_t and a noiseless last step.

    ``eps_model(z_t, abar_t)`` predicts the noise; ``betas`` is beta_1..beta_T (index 0 is t = 1). By default the
    whole chain from z_T; with ``t_from``/``t_to`` (1-based, 0 <= t_to <= t_from <= T) only the steps
    t = t_from, ..., t_to + 1, starting from ``z_T`` = x_{t_from} and returning x_{t_to}, so that a chain stopped
    at t and continued from x_t is the full chain. ``sigmas`` (length T, index 0 is t = 1) replaces the step noise,
    and ``noisy_last_step=True`` adds sigma_1 w_1 at t = 1 too (the chain of seed 003's path-KL bound, whose every
    step is Gaussian).
    """
    coef = ddpm_coefficients(torch.as_tensor(betas).cpu().numpy())
    big_t = coef["betas"].shape[0]
    t_from = big_t if t_from is None else t_from
    if not (isinstance(t_from, int) and isinstance(t_to, int) and 0 <= t_to <= t_from <= big_t):
        raise ValueError(f"need integers 0 <= t_to <= t_from <= T = {big_t}; got t_from={t_from!r}, t_to={t_to!r}")
    if sigmas is None:
        sigmas = ddpm_sigmas(coef["betas"])
    else:
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if sigmas.shape != (big_t,) or not (np.isfinite(sigmas).all() and (sigmas >= 0).all()):
            raise ValueError(f"sigmas must be {big_t} finite step noises >= 0, one per beta; got {sigmas!r}")
    z = z_T
    for t in range(t_from - 1, t_to - 1, -1):  # array index t is step t + 1
        abar_t = torch.full_like(z, float(coef["alpha_bars"][t]))
        noisy = t > 0 or noisy_last_step
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype) if noisy else None
        z = ddpm_step(z, eps_model(z, abar_t), float(coef["c"][t]), float(coef["alphas"][t]), float(sigmas[t]), noise)
    return z
