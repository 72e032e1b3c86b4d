"""Eq. 9 of seed 000 and the adjusted gradient (theory.sampler_gradient) on toy denoisers, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory.derivations.sampler_unrolled import ddim_unrolled_matches, ddpm_unrolled_matches
from theory.sampler_gradient import (
    AdjustedGradient,
    adjusted_gradient_scales,
    b_matrices,
    ddpm_a_coefficients,
    run_sampler,
    scale_gradient,
)
from theory.schedules import linear_betas, scaled_linear_betas
from toy.denoisers import MixtureDenoiser, MLPDenoiser
from toy.sampler_chain import chain_terms, eps_model_for, eq9_relative_error, make_sampler

BETAS_SHORT = linear_betas(100, 1e-3, 0.1).numpy()  # a 100-step chain keeps the DDPM check fast
SD = scaled_linear_betas(1000).numpy()


def mixture(d: int, seed: int = 0) -> MixtureDenoiser:
    gen = torch.Generator().manual_seed(seed)
    return MixtureDenoiser(torch.tensor([0.5, 0.3, 0.2]), torch.randn(3, d, generator=gen, dtype=torch.float64) * 2,
                           torch.tensor([0.3, 0.5, 0.4]))


def test_unrolled_forms_symbolically():
    assert ddpm_unrolled_matches(3)
    assert ddim_unrolled_matches(3)


def test_dpm_solver_unrolled_coefficients_symbolically():
    """sympy's unrolled DPM-Solver++(2M) chain, evaluated at the schedule, equals the coefficients read off the float64
    stepper by autograd (and so, by test_float64_dpm_solver_matches_diffusers, diffusers' scheduler)."""
    from theory.derivations.sampler_unrolled import dpm_solver_pp_2m_unrolled
    from theory.sampler_gradient import dpm_solver_pp_2m_stepper, unrolled_coefficients

    coefficients, z_coefficient, symbols = dpm_solver_pp_2m_unrolled(4)
    abars = np.array([0.05, 0.3, 0.7, 0.95])
    values = dict(zip(symbols, abars))
    k, k_T = unrolled_coefficients(dpm_solver_pp_2m_stepper(np.append(abars, 1.0)), 4)
    np.testing.assert_allclose([float(c.subs(values)) for c in coefficients], k, rtol=1e-12)
    assert float(z_coefficient.subs(values)) == pytest.approx(k_T, rel=1e-12)


def test_sampler_coefficients_match_closed_forms():
    sampler = make_sampler("ddpm", BETAS_SHORT, 100)
    np.testing.assert_allclose(sampler.a_coefficients, ddpm_a_coefficients(BETAS_SHORT)[::-1], rtol=1e-12)
    ddim = make_sampler("ddim", SD, 20)
    abar = ddim.abars
    abar_prev = np.append(abar[1:], 1.0)  # set_alpha_to_one: the last step goes to abar = 1
    a = np.sqrt(abar_prev / abar)
    b = np.sqrt(1 - abar_prev) - np.sqrt(abar_prev * (1 - abar) / abar)
    k = b * np.append(np.cumprod(a[::-1])[::-1][1:], 1.0)
    np.testing.assert_allclose(-ddim.a_coefficients, k, rtol=1e-6)  # diffusers' schedule is float32


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize(("kind", "betas", "n"), [("ddpm", BETAS_SHORT, 100), ("ddim", SD, 20)])
@pytest.mark.parametrize("model_kind", ["mixture", "mlp"])
def test_eq9_equals_autograd(d, kind, betas, n, model_kind):
    gen = torch.Generator().manual_seed(d)
    model = mixture(d, d) if model_kind == "mixture" else MLPDenoiser(d, hidden=8, seed=d)
    noises = [torch.randn(1, d, generator=gen, dtype=torch.float64) for _ in range(n)] if kind == "ddpm" else None
    sampler = make_sampler(kind, betas, n, noises=noises)
    assert eq9_relative_error(model, sampler, torch.randn(1, d, generator=gen, dtype=torch.float64)) < 1e-10


@pytest.mark.parametrize("model_kind", ["mixture", "mlp"])
def test_chain_gradient_of_multistep_dpm_solver(model_kind):
    """DPM-Solver++ (2M) depends on the previous step's z and eps: the forward-accumulated eq. 9 is exact (float64
    DPM-Solver++ of theory.sampler_gradient; diffusers' own step casts to float32)."""
    gen = torch.Generator().manual_seed(5)
    model = mixture(2, 5) if model_kind == "mixture" else MLPDenoiser(2, hidden=8, seed=5)
    sampler = make_sampler("dpmsolver++", SD, 20)
    assert sampler.jacobian_coefficients is None
    assert any(len(c["eps"]) > 1 for c in sampler.step_coefficients)  # genuinely multistep
    assert eq9_relative_error(model, sampler, torch.randn(1, 2, generator=gen, dtype=torch.float64)) < 1e-10


def test_float64_dpm_solver_matches_diffusers():
    """The float64 DPM-Solver++(2M) chain equals diffusers' DPMSolverMultistepScheduler chain to float32 precision,
    and its unrolled coefficients equal the scheduler's."""
    from diffusers import DPMSolverMultistepScheduler

    from theory.sampler_gradient import dpm_solver_pp_2m_stepper, scheduler_stepper, unrolled_coefficients

    def scheduler():
        return DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=SD.tolist(),
                                           algorithm_type="dpmsolver++", solver_order=2)

    s = scheduler()
    s.set_timesteps(20)
    abars = np.append(s.alphas_cumprod.double().numpy()[s.timesteps.numpy()], 1.0)
    gen = torch.Generator().manual_seed(0)
    eps = [torch.randn(3, dtype=torch.float64, generator=gen) for _ in range(20)]
    z_ours = z_theirs = torch.randn(3, dtype=torch.float64, generator=gen)
    ours, theirs = dpm_solver_pp_2m_stepper(abars), scheduler_stepper(scheduler(), 20)
    for i in range(20):
        z_ours, z_theirs = ours(eps[i], z_ours, i), theirs(eps[i], z_theirs, i)
    torch.testing.assert_close(z_ours, z_theirs.double(), rtol=1e-5, atol=1e-5)
    k_ours, _ = unrolled_coefficients(dpm_solver_pp_2m_stepper(abars), 20)
    k_theirs, _ = unrolled_coefficients(scheduler_stepper(scheduler(), 20), 20)
    np.testing.assert_allclose(k_ours, k_theirs, rtol=1e-5, atol=1e-7)


def test_recursive_form_equals_product_form_on_one_step_samplers():
    sampler = make_sampler("ddim", SD, 20)
    z_T = torch.tensor([[0.2, -0.7]], dtype=torch.float64)
    assert eq9_relative_error(mixture(2), sampler, z_T, form="recursive") < 1e-10
    assert eq9_relative_error(mixture(2), sampler, z_T, form="product") < 1e-10


def test_b_matrices_are_the_papers_product_for_ddpm():
    """In sampling order (i = 0 is t = T) b_matrices gives seed 000's B_t = prod_{s=1}^{t-1} (I - c_s J_s), s = 1 on
    the left, which is written out here in the paper's indexing from the schedule's c_t."""
    from functools import reduce

    from theory.ddpm import ddpm_coefficients

    rng = np.random.default_rng(0)
    big_t, d = 7, 3
    c = ddpm_coefficients(linear_betas(big_t, 0.05, 0.3).numpy())["c"]  # c_1..c_T
    jac = [rng.standard_normal((d, d)) for _ in range(big_t)]  # J_1..J_T
    paper = [reduce(np.matmul, [np.eye(d) - c[s] * jac[s] for s in range(t - 1)], np.eye(d)) for t in range(1, big_t + 1)]
    ours = b_matrices(c[::-1], jac[::-1])
    for t in range(1, big_t + 1):
        np.testing.assert_allclose(ours[big_t - t], paper[t - 1], rtol=1e-13, atol=1e-15)
    assert np.array_equal(ours[-1], np.eye(d)) and not np.allclose(ours[0], np.eye(d))


def test_b_matrices_of_a_batch_equal_one_run_at_a_time():
    rng = np.random.default_rng(1)
    coefficients = rng.uniform(0.01, 0.5, 6)
    batch = [rng.standard_normal((4, 2, 2)) for _ in range(6)]
    together = b_matrices(coefficients, batch)
    for run in range(4):
        alone = b_matrices(coefficients, [j[run] for j in batch])
        assert all(np.array_equal(t[run], a) for t, a in zip(together, alone))


@pytest.mark.parametrize("coefficients, jacobians, message", [
    (np.ones(2), [np.eye(2)] * 3, "one Jacobian per coefficient"),
    (np.ones(0), [], "at least one"),
    (np.ones(2), [np.eye(2), np.eye(3)], r"jacobians\[1\] has shape \(3, 3\)"),
    (np.ones(1), [np.ones((2, 3))], "square"),
])
def test_b_matrices_bad_input(coefficients, jacobians, message):
    with pytest.raises(ValueError, match=message):
        b_matrices(coefficients, jacobians)


def test_eq9_check_can_fail():
    """Dropping B (B -> I) in eq. 9 gives a visibly different gradient on a mixture denoiser."""
    sampler = make_sampler("ddim", SD, 20)
    model = mixture(2)
    wrong = make_sampler("ddim", SD, 20)
    wrong.jacobian_coefficients = np.zeros_like(sampler.jacobian_coefficients)
    z_T = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    assert eq9_relative_error(model, wrong, z_T) > 1e-3


@pytest.mark.parametrize("standardise", [True, False])
def test_adjusted_gradient_is_minus_sum_of_partials(standardise):
    """With z detached and eps_i's gradient scaled by C_i, dz_0/dtheta = -(1/G) sum_i d eps_i/d theta (G = 1 when not
    standardised), the adjusted gradient of seed 000 [0116]."""
    sampler = make_sampler("ddim", SD, 20)
    model = mixture(2)
    z_T = torch.tensor([[0.4, 0.1]], dtype=torch.float64)
    mode = "adjusted" if standardise else "adjusted_unstandardised"
    z0 = run_sampler(eps_model_for(model, sampler), z_T, sampler.step, 20, AdjustedGradient(mode, sampler.a_coefficients))
    rows = [torch.autograd.grad(z0[0, j], list(model.parameters()), retain_graph=True) for j in range(2)]
    autograd = np.stack([np.concatenate([g.reshape(-1).numpy() for g in row]) for row in rows])
    _, grads = chain_terms(model, sampler, z_T)
    c = 1 / np.abs(sampler.a_coefficients)
    geo = np.exp(np.log(c).mean()) if standardise else 1.0
    expected = -sum(g[0] for g in grads) / geo
    np.testing.assert_allclose(autograd, expected, rtol=1e-10, atol=1e-14)


def test_scale_gradient_and_scales():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad(scale_gradient(x, 3.0).sum(), x)
    assert torch.equal(g, torch.tensor([3.0, 3.0]))
    c = adjusted_gradient_scales(np.array([0.5, 2.0, 1.0]))
    assert np.prod(c) == pytest.approx(1.0) and c[0] / c[1] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="non-zero"):
        adjusted_gradient_scales(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="mode must be one of"):
        AdjustedGradient("approximate", np.ones(3))
    with pytest.raises(ValueError, match="needs the sampler's A"):
        AdjustedGradient("adjusted")


def test_schedulers_must_be_linear():
    from diffusers import DDIMScheduler

    from theory.sampler_gradient import scheduler_stepper

    with pytest.raises(ValueError, match="clip_sample=True"):
        scheduler_stepper(DDIMScheduler(clip_sample=True), 10)


def test_adjusted_gradient_on_a_diffusers_unet_with_and_without_checkpointing():
    """The same mechanism runs on a tiny diffusers UNet2DModel: checkpointing changes memory, not the gradient, and the
    adjusted gradient differs from the exact one."""
    from diffusers import DDIMScheduler, UNet2DModel

    from theory.sampler_gradient import scheduler_stepper

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).double()
    config = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False)
    sampler = make_sampler("ddim", SD, 5)
    timesteps = DDIMScheduler(**config)
    timesteps.set_timesteps(5)
    z_T = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def grads(mode: str, checkpoint: bool) -> torch.Tensor:
        unet.zero_grad()
        step = scheduler_stepper(DDIMScheduler(**config), 5)
        z0 = run_sampler(lambda z, i: unet(z, timesteps.timesteps[i]).sample, z_T, step, 5,
                         AdjustedGradient(mode, sampler.a_coefficients), checkpoint=checkpoint)
        z0.square().mean().backward()
        return torch.cat([p.grad.reshape(-1) for p in unet.parameters() if p.grad is not None])

    adjusted = grads("adjusted", False)
    torch.testing.assert_close(grads("adjusted", True), adjusted, rtol=1e-10, atol=1e-14)
    exact = grads("exact", False)
    assert not torch.allclose(exact, adjusted, rtol=1e-3)


# ---------------------------------------------------------------------------------------------------- coefficients
SD_CONFIG = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _sd_ddpm_a_float64(timesteps) -> np.ndarray:
    """Algorithm A.1's A_{t_i} written out independently in float64 from SD's schedule (no diffusers arrays)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    t = np.asarray([int(x) for x in timesteps])
    return (1.0 / np.sqrt(abar[t])) * betas[t] / np.sqrt(1.0 - abar[t])


def _standardised_inverse(a: np.ndarray) -> np.ndarray:
    c = 1.0 / np.abs(a)
    return c / np.prod(c) ** (1.0 / c.shape[0])


@pytest.mark.parametrize("scheduler_name", ["DPMSolverMultistepScheduler", "DDIMScheduler"])
@pytest.mark.parametrize("n_steps", [19, 23])
def test_algorithm_a1_coefficients_are_the_ddpm_a_at_the_visited_timesteps(scheduler_name, n_steps):
    import diffusers

    from theory.sampler_gradient import AdjustedGradient

    config = SD_CONFIG | ({"clip_sample": False} if scheduler_name == "DDIMScheduler" else {})
    scheduler = getattr(diffusers, scheduler_name)(**config)
    gradient = AdjustedGradient.from_scheduler(scheduler, n_steps, coefficients="algorithm_a1")
    reference = getattr(diffusers, scheduler_name)(**config)
    reference.set_timesteps(n_steps)
    expected = _standardised_inverse(_sd_ddpm_a_float64(reference.timesteps))
    # diffusers keeps the schedule in float32: 1 - abar_t is ~1e-3 at the last timesteps, so ~1e-5 relative
    np.testing.assert_allclose(gradient.scales, expected, rtol=2e-5)
    assert gradient.coefficients == "algorithm_a1" and gradient.n_steps == n_steps
    unstandardised = AdjustedGradient.from_scheduler(scheduler, n_steps, "adjusted_unstandardised")
    np.testing.assert_allclose(unstandardised.scales, 1.0 / _sd_ddpm_a_float64(reference.timesteps), rtol=2e-5)
    assert scheduler.num_inference_steps is None  # the caller's scheduler is left untouched


def test_sampler_coefficients_from_scheduler_match_independent_chains():
    """DDIM: against the closed-form one-step coefficients; DPM-Solver++(2M): against theory's float64 solver (its own
    implementation, checked against diffusers in test_float64_dpm_solver_matches_diffusers)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from theory.sampler_gradient import AdjustedGradient, dpm_solver_pp_2m_stepper, unrolled_coefficients

    ddim = DDIMScheduler(num_train_timesteps=1000, trained_betas=SD.tolist(), clip_sample=False, set_alpha_to_one=True)
    gradient = AdjustedGradient.from_scheduler(ddim, 20, coefficients="sampler")
    sampler = make_sampler("ddim", SD, 20)
    abar, abar_prev = sampler.abars, np.append(sampler.abars[1:], 1.0)
    a = np.sqrt(abar_prev / abar)
    b = np.sqrt(1 - abar_prev) - np.sqrt(abar_prev * (1 - abar) / abar)
    k = b * np.append(np.cumprod(a[::-1])[::-1][1:], 1.0)
    np.testing.assert_allclose(gradient.scales, _standardised_inverse(k), rtol=1e-6)
    # today's behaviour, AdjustedGradient(mode, sampler.a_coefficients), is the "sampler" choice
    np.testing.assert_allclose(gradient.scales, AdjustedGradient("adjusted", sampler.a_coefficients).scales, rtol=1e-12)

    dpm = DPMSolverMultistepScheduler(**SD_CONFIG)
    probe = DPMSolverMultistepScheduler(**SD_CONFIG)
    probe.set_timesteps(20)
    abars = probe.alphas_cumprod.double().numpy()[probe.timesteps.numpy()]
    k_ours, _ = unrolled_coefficients(dpm_solver_pp_2m_stepper(np.append(abars, 1.0)), 20)
    np.testing.assert_allclose(AdjustedGradient.from_scheduler(dpm, 20, coefficients="sampler").scales,
                               _standardised_inverse(k_ours), rtol=1e-5)


def test_algorithm_a1_gradient_through_ddim_is_sum_of_k_c_partials():
    """Run through DDIM with Algorithm A.1's C_i: z is detached (B -> I) and eps_i's gradient is scaled by C_i, so
    dz_0/dtheta = sum_i k_i C_i d eps_i/d theta with the sampler's k_i, here not -1/G (DDIM's A_i are not DDPM's)."""
    from diffusers import DDIMScheduler

    from theory.sampler_gradient import AdjustedGradient

    sampler = make_sampler("ddim", SD, 20)
    ddim = DDIMScheduler(num_train_timesteps=1000, trained_betas=SD.tolist(), clip_sample=False, set_alpha_to_one=True)
    gradient = AdjustedGradient.from_scheduler(ddim, 20)  # the default is the paper's
    assert gradient.coefficients == "algorithm_a1"
    model = mixture(2)
    z_T = torch.tensor([[0.4, 0.1]], dtype=torch.float64)
    z0 = run_sampler(eps_model_for(model, sampler), z_T, sampler.step, 20, gradient)
    rows = [torch.autograd.grad(z0[0, j], list(model.parameters()), retain_graph=True) for j in range(2)]
    autograd = np.stack([np.concatenate([g.reshape(-1).numpy() for g in row]) for row in rows])
    _, grads = chain_terms(model, sampler, z_T)
    abar, abar_prev = sampler.abars, np.append(sampler.abars[1:], 1.0)
    a = np.sqrt(abar_prev / abar)
    b = np.sqrt(1 - abar_prev) - np.sqrt(abar_prev * (1 - abar) / abar)
    k = b * np.append(np.cumprod(a[::-1])[::-1][1:], 1.0)
    ddim.set_timesteps(20)
    betas = np.asarray(SD, dtype=np.float64)
    abar_all = np.cumprod(1.0 - betas)
    t = ddim.timesteps.numpy()
    c = _standardised_inverse(betas[t] / np.sqrt(1 - abar_all[t]) / np.sqrt(abar_all[t]))
    expected = sum(k[i] * c[i] * grads[i][0] for i in range(20))
    # C_i from diffusers' float32 alphas_cumprod against the float64 cumprod here: ~1e-5 relative at small t
    np.testing.assert_allclose(autograd, expected, rtol=2e-5, atol=1e-12)
    # the "sampler" choice would give -(1/G) sum_i d eps_i/d theta instead: visibly different under DDIM
    c_sampler = _standardised_inverse(k)
    sampler_choice = sum(k[i] * c_sampler[i] * grads[i][0] for i in range(20))
    assert np.abs(sampler_choice - expected).max() > 1e-2 * np.abs(expected).max()


def test_from_scheduler_bad_input():
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    from theory.sampler_gradient import AdjustedGradient

    ddim = DDIMScheduler(clip_sample=False)
    assert AdjustedGradient.from_scheduler(ddim, 10, "exact").scales is None
    with pytest.raises(ValueError, match="coefficients must be one of"):
        AdjustedGradient.from_scheduler(ddim, 10, coefficients="official")
    with pytest.raises(ValueError, match="mode must be one of"):
        AdjustedGradient.from_scheduler(ddim, 10, "approximate")
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        AdjustedGradient.from_scheduler(ddim, 0)
    euler = EulerDiscreteScheduler(timestep_spacing="linspace")  # continuous timesteps such as 946.47
    with pytest.raises(ValueError, match="integer DDPM timesteps.*coefficients='sampler'"):
        AdjustedGradient.from_scheduler(euler, 20, coefficients="algorithm_a1")
