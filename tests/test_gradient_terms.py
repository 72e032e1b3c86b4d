"""The Fig. 6b terms from one adjoint pass (scaleup.gradient_terms) against independent computations, float64:
the explicit products B_t of toy.sampler_chain, one autograd pass per step, central finite differences, and a loop of
per-sample autograd calls through a diffusers UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaleup.gamma_face_ddpm import tiny_unet
from scaleup.gradient_terms import StepIndexed, chain_adjoints, term_norms, vjp_norms
from theory.ddpm import ddpm_coefficients
from theory.sampler_gradient import ddpm_stepper
from theory.schedules import scaled_linear_betas
from toy.denoisers import MLPDenoiser
from toy.sampler_chain import gradient_scales, make_sampler

T = 40
BETAS = scaled_linear_betas(T).numpy()


def _unet_model(seed: int = 0) -> StepIndexed:
    torch.manual_seed(seed)
    unet = tiny_unet(sample_size=4, channels=1, block_out_channels=(4, 8), norm_num_groups=2).double().eval()
    return StepIndexed(unet, lambda net, z, t: net(z, t).sample, torch.arange(T - 1, -1, -1))


def _draws(shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    noises = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(T)]
    return torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen,
                                                                               dtype=torch.float64), noises


def _r_dot_z0(model, z, noises, r, *, start=0, eps_shift=None, at=None):
    step = ddpm_stepper(BETAS, noises)
    for i in range(start, T):
        eps = model(z, torch.tensor(i))
        if at == i:
            eps = eps + eps_shift
        z = step(eps, z, i)
    return (r * z).sum()


def test_term_norms_match_the_explicit_b_products_of_the_toy():
    """Same chain, same MLP: norms from the adjoint pass equal those from B_t = prod (I - c_s J_s) formed explicitly."""
    z_T, r, noises = _draws((3, 2))
    r = r * 1e-2
    mlp = MLPDenoiser(2, hidden=8, seed=3)
    ref = gradient_scales(mlp, make_sampler("ddpm", BETAS, T, noises=noises), z_T, r.numpy())
    abars = torch.as_tensor(ddpm_coefficients(BETAS)["alpha_bars"][::-1].copy())
    out = term_norms(StepIndexed(mlp, lambda net, z, a: net(z, a), abars), BETAS, z_T, r, noises)
    for key in ("exact_term", "term_without_B", "adjusted_term"):
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-11, atol=0)
    # ||R B_t|| <= ||R|| ||B_t||_2: the random row cannot grow more than the spectral norm allows
    assert (out["RB_growth_all"] <= ref["B_norm"] * (1 + 1e-12)).all()


def test_subsampled_steps_are_the_same_numbers():
    z_T, r, noises = _draws((2, 2))
    mlp = MLPDenoiser(2, hidden=8, seed=4)
    abars = torch.as_tensor(ddpm_coefficients(BETAS)["alpha_bars"][::-1].copy())
    model = StepIndexed(mlp, lambda net, z, a: net(z, a), abars)
    full, every = term_norms(model, BETAS, z_T, r, noises), term_norms(model, BETAS, z_T, r, noises, every=7)
    steps = np.append(np.arange(0, T, 7), T - 1)
    np.testing.assert_array_equal(every["t"], T - steps)
    np.testing.assert_allclose(every["exact_term"], full["exact_term"][:, steps], rtol=1e-13)


def test_unet_adjoints_equal_one_autograd_pass_per_step_and_finite_differences():
    """The single backward pass with retain_grad against T separate passes (eps adjoint) and central differences
    (state adjoint), through a diffusers UNet2DModel in float64."""
    model = _unet_model()
    z_T, r, noises = _draws((2, 1, 4, 4))
    adj = chain_adjoints(model, BETAS, z_T, r, noises)
    assert adj["eps_adjoint"].shape == (T, 2, 1, 4, 4)
    assert all(p.grad is None for p in model.parameters()), "the adjoint pass must leave no parameter gradient"
    for i in (0, 13, T - 1):
        shift = torch.zeros_like(z_T, requires_grad=True)
        (brute,) = torch.autograd.grad(_r_dot_z0(model, z_T, noises, r, eps_shift=shift, at=i), shift)
        torch.testing.assert_close(adj["eps_adjoint"][i], brute, rtol=1e-10, atol=1e-14)
        u = torch.randn(z_T.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        h = 1e-5
        with torch.no_grad():
            fd = (_r_dot_z0(model, adj["z"][i] + h * u, noises, r, start=i)
                  - _r_dot_z0(model, adj["z"][i] - h * u, noises, r, start=i)) / (2 * h)
        assert float((adj["state_adjoint"][i] * u).sum()) == pytest.approx(float(fd), rel=1e-6)
    # the last step: z_0 = z_1 step, so d(R . z_0)/d z_0 = R enters as the adjoint after step T - 1
    np.testing.assert_allclose(adj["z"][0].numpy(), z_T.numpy())


def test_vjp_norms_equal_per_sample_gradients_of_torch_func():
    """The loop of autograd calls against torch.func's vmap of per-sample gradients (a second implementation)."""
    from torch.func import functional_call, grad, vmap

    abars = torch.as_tensor(ddpm_coefficients(BETAS)["alpha_bars"][::-1].copy())
    model = StepIndexed(MLPDenoiser(3, hidden=8, seed=6), lambda net, z, a: net(z, a), abars)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    steps = torch.tensor([0, 3, 17, 30, 39])
    params = {k: p.detach() for k, p in model.named_parameters()}

    def contracted(p, zz, ii, vv):
        return (functional_call(model, p, (zz[None], ii)) * vv).sum()

    for j in range(2):
        g = vmap(grad(contracted), in_dims=(None, 0, 0, 0))(params, z, steps, v[j])
        ref = torch.sqrt(sum(x.reshape(5, -1).square().sum(1) for x in g.values()))
        torch.testing.assert_close(vjp_norms(model, z, steps, v)[j], ref, rtol=1e-12, atol=0)
        torch.testing.assert_close(vjp_norms(model, z, steps, v[j]), ref, rtol=1e-12, atol=0)


def test_r_of_another_shape_is_one_clear_error():
    z_T, r, noises = _draws((2, 1, 4, 4))
    with pytest.raises(ValueError, match="r must have z_T's shape"):
        chain_adjoints(_unet_model(), BETAS, z_T, r[:1], noises)
