"""theory.schedules and theory.ddpm against diffusers' DDPMScheduler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from theory.ddpm import ddpm_coefficients, ddpm_step, forward_noise
from theory.schedules import alphas_cumprod, linear_betas, scaled_linear_betas


@pytest.mark.parametrize(("name", "fn", "start", "end"), [("linear", linear_betas, 1e-4, 0.02),
                                                           ("scaled_linear", scaled_linear_betas, 0.00085, 0.012)])
def test_schedules_match_diffusers(name, fn, start, end):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=start, beta_end=end)
    np.testing.assert_allclose(fn(1000, start, end).numpy(), sched.betas.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(alphas_cumprod(fn(1000, start, end)).numpy(), sched.alphas_cumprod.double().numpy(),
                               rtol=1e-5)


def test_ddpm_step_matches_diffusers_mean():
    """With variance_type 'fixed_large' diffusers' step has mean (z_t - c_t eps) / sqrt(alpha_t) and std sqrt(beta_t)."""
    sched = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large", clip_sample=False)
    sched.set_timesteps(1000)
    coef = ddpm_coefficients(sched.betas.double().numpy())
    z = torch.randn(2, 4, dtype=torch.float64)
    eps = torch.randn(2, 4, dtype=torch.float64)
    for t in (999, 500, 1):
        noise = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(z, eps, coef["c"][t], coef["alphas"][t], coef["betas"][t] ** 0.5, noise)
        theirs = sched.step(eps, t, z, generator=torch.Generator().manual_seed(t)).prev_sample
        # diffusers keeps its schedule in float32 and forms the mean through x_0 = (z - sqrt(1 - abar) eps) / sqrt(abar),
        # which amplifies float32 rounding by 1 / sqrt(abar_T) ~ 150 at t = 999
        torch.testing.assert_close(ours, theirs.double(), rtol=1e-4, atol=1e-4)


def test_forward_noise_matches_diffusers_add_noise():
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps against DDPMScheduler.add_noise, one t per sample, in float64."""
    sched = DDPMScheduler(num_train_timesteps=1000)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 5, 1, 3, 3, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 17, 500, 998, 999])
    theirs = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(forward_noise(x0, eps, sched.alphas_cumprod[t]), theirs, rtol=1e-15, atol=1e-15)
    flat = forward_noise(x0[:, 0, 0], eps[:, 0, 0], sched.alphas_cumprod[t])  # (B, d) with abar of shape (B,)
    torch.testing.assert_close(flat, theirs[:, 0, 0], rtol=1e-15, atol=1e-15)
    assert torch.equal(forward_noise(x0, eps, 1.0), x0)
    with pytest.raises(ValueError, match="leading shape of x0"):
        forward_noise(x0, eps, sched.alphas_cumprod[:3])


def test_bad_schedule():
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        linear_betas(10, 0.5, 0.1)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        linear_betas(0)
