"""PopAlign's objectives (seed 001, eq. 8, eq. 9, App. D, App. E) and the exact mixture model they train."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from theory.denoising import denoising_loss, noise_mse
from theory.popalign import (
    density_log_ratio,
    diffusion_log_ratio,
    implied_reward_accuracy,
    jensen_lower_bound,
    popalign_loss,
    popalign_normaliser,
    population_dpo_loss,
    set_objective,
    split_lower_bound,
)
from theory.schedules import alphas_cumprod, linear_betas
from toy.gaussian_mixture import GaussianMixture1D
from toy.popalign_toy import reference_mixture



@pytest.fixture(autouse=True)
def _float64_default():
    # The checks here are float64; set per test and restored, so the default never leaks into other test files
    # (a module-level set_default_dtype ran at collection and changed every later module's tensors).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_popalign_loss_matches_hand_formula():
    r = torch.tensor([0.3, -0.1, 0.5, -0.4, 0.2])
    winners = torch.tensor([True, True, False, False, False])
    beta, alpha = 2.0, 0.25
    mu = alpha * (0.3 - 0.1) / 2 + (1 - alpha) * (0.5 - 0.4 + 0.2) / 3
    gamma = np.array([1, 1, -1, -1, -1])
    expected = np.mean([math.log1p(math.exp(-g * beta * (x - mu))) for g, x in zip(gamma, r.tolist())])
    assert popalign_loss(r, winners, beta, alpha).item() == pytest.approx(expected, rel=1e-14)
    assert popalign_normaliser(r, winners, alpha).item() == pytest.approx(mu, rel=1e-14)


def test_population_dpo_loss_and_reward_accuracy():
    w = torch.tensor([[0.1, 0.2], [-0.5, 0.1]])
    l = torch.tensor([[0.0, 0.1], [0.3, 0.0]])
    expected = -np.mean([math.log(1 / (1 + math.exp(-0.5 * (0.3 - 0.1)))),
                         math.log(1 / (1 + math.exp(-0.5 * (-0.4 - 0.3))))])
    assert population_dpo_loss(w, l, 0.5).item() == pytest.approx(expected, rel=1e-14)
    assert implied_reward_accuracy(w, l) == 0.5
    assert torch.allclose(set_objective(w, l, 0.5).mean(), -population_dpo_loss(w, l, 0.5))


def test_popalign_loss_of_a_batch_of_runs_equals_the_loop_over_runs():
    """(R, B) log-ratios with per-run beta' and alpha give, bit for bit, each run's own loss, mu and gradient."""
    gen = torch.Generator().manual_seed(0)
    runs, n = 5, 40
    r = (torch.randn(runs, n, generator=gen) * 3).requires_grad_(True)
    winners = torch.arange(n) % 3 == 0
    beta_primes = torch.tensor([0.1, 1.0, 2.5, 10.0, 5000.0])
    alphas = torch.tensor([0.25, 0.5, 0.75, 0.0, 1.0])
    batched = popalign_loss(r, winners, beta_primes, alphas)
    (grad_batched,) = torch.autograd.grad(batched.sum(), r)
    r_loop = r.detach().clone().requires_grad_(True)
    loop = [popalign_loss(r_loop[i], winners, float(beta_primes[i]), float(alphas[i])) for i in range(runs)]
    (grad_loop,) = torch.autograd.grad(sum(loop), r_loop)
    assert batched.shape == (runs,)
    assert torch.equal(batched, torch.stack(loop)) and torch.equal(grad_batched, grad_loop)
    mu = popalign_normaliser(r, winners, alphas)
    assert torch.equal(mu, torch.stack([popalign_normaliser(r[i], winners, float(alphas[i])) for i in range(runs)]))
    # scalar settings broadcast over the runs; a fixed mu may be one per run
    assert torch.equal(popalign_loss(r, winners, 2.0, 0.5), torch.stack([popalign_loss(r[i], winners, 2.0, 0.5)
                                                                          for i in range(runs)]))
    fixed = torch.linspace(-1, 1, runs)
    assert torch.equal(popalign_loss(r, winners, 2.0, mu=fixed),
                       torch.stack([popalign_loss(r[i], winners, 2.0, mu=fixed[i]) for i in range(runs)]))


def test_normaliser_is_detached_and_reducible():
    r = torch.tensor([1.0, 2.0, 3.0, 5.0], requires_grad=True)
    winners = torch.tensor([1, 1, 0, 0])
    mu = popalign_normaliser(r, winners, 0.5)
    assert not mu.requires_grad
    # a cross-process mean that doubles every mean (as if another process saw 3x larger values) moves mu accordingly
    mu_reduced = popalign_normaliser(r, winners, 0.5, reduce_mean=lambda t: (t + 3 * t) / 2)
    assert mu_reduced.item() == pytest.approx(2 * mu.item())


def assert_gradient_matches_central_differences(model: GaussianMixture1D, loss_of, h: float = 1e-6) -> None:
    """Autograd's gradient of loss_of(model) against central differences on every parameter entry, in float64."""
    grads = torch.autograd.grad(loss_of(model), list(model.parameters()))
    for p, g in zip(model.parameters(), grads):
        for idx in np.ndindex(tuple(p.shape)):
            with torch.no_grad():
                p[idx] += h
                up = loss_of(model)
                p[idx] -= 2 * h
                down = loss_of(model)
                p[idx] += h
            assert g[idx].item() == pytest.approx(((up - down) / (2 * h)).item(), rel=1e-6, abs=1e-10)


def test_gradient_of_per_sample_loss_matches_finite_differences():
    """Density parameterisation, mu held fixed (it is detached in training)."""
    model = GaussianMixture1D([0.5, 0.2, 0.3], [-3.0, 0.5, 4.0], [1.0, 0.7, 1.5])
    ref = GaussianMixture1D([0.6, 0.2, 0.2], [-3.0, 0.0, 4.0], [1.0, 1.0, 1.0])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 12, generator=gen) * 3
    winners = torch.arange(12) % 3 == 0
    mu = popalign_normaliser(density_log_ratio(model.log_prob(x)[0], ref.log_prob(x)[0]), winners, 0.5)
    assert_gradient_matches_central_differences(
        model, lambda m: popalign_loss(density_log_ratio(m.log_prob(x)[0], ref.log_prob(x)[0]), winners, 1.7, mu=mu)
    )


def test_gradient_of_diffusion_loss_matches_finite_differences():
    model = GaussianMixture1D([0.5, 0.2, 0.3], [-3.0, 0.5, 4.0], [1.0, 0.7, 1.5])
    ref = reference_mixture(1)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 10, generator=gen) * 4
    abar = alphas_cumprod(linear_betas(1000))[torch.randint(0, 1000, (1, 10), generator=gen)]
    eps = torch.randn(1, 10, generator=gen)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    winners = torch.arange(10) < 5
    eps_ref = ref.noise_prediction(x_t, abar)[0]
    assert_gradient_matches_central_differences(
        model, lambda m: popalign_loss(diffusion_log_ratio(eps[0], m.noise_prediction(x_t, abar)[0], eps_ref),
                                       winners, 3.0, mu=0.05)
    )


def test_lower_bounds_hold_and_order_on_random_inputs():
    gen = torch.Generator().manual_seed(3)
    for _ in range(3000):
        n = int(torch.randint(1, 16, (1,), generator=gen))
        scale = float(torch.rand(1, generator=gen)) * 6
        w = torch.randn(4, n, generator=gen) * scale + torch.randn(1, generator=gen) * 3
        l = torch.randn(4, n, generator=gen) * scale + torch.randn(1, generator=gen) * 3
        beta = float(torch.rand(1, generator=gen)) * 3 + 1e-3
        mu = float(torch.randn(1, generator=gen)) * 4
        objective = set_objective(w, l, beta)
        jensen = jensen_lower_bound(w, l, beta, mu)
        split = split_lower_bound(w, l, beta, mu)
        assert (jensen <= objective + 1e-12).all()
        assert (split <= jensen + 1e-12).all()


def test_a_wrong_constant_is_violated():
    """The average of the per-sample terms with beta' = N beta (half App. D's constant) is not a bound: it exceeds
    the objective whenever the implied reward misorders a pair strongly enough."""
    w = torch.tensor([[-1.0, -1.2, -0.8]])
    l = torch.tensor([[1.0, 0.9, 1.1]])
    beta, mu = 1.0, 0.0
    n = w.shape[1]
    half = 0.5 * (F.logsigmoid(n * beta * (w - mu)).mean(1) + F.logsigmoid(-n * beta * (l - mu)).mean(1))
    assert (half > set_objective(w, l, beta)).all()
    assert (jensen_lower_bound(w, l, beta, mu) <= set_objective(w, l, beta)).all()


def test_exact_noise_prediction_is_the_scaled_score():
    model = GaussianMixture1D([0.2, 0.5, 0.3], [-5.0, 1.0, 6.0], [0.5, 2.0, 1.0], n_runs=2)
    x = (torch.randn(2, 30) * 5).requires_grad_(True)
    abar = torch.rand(2, 30) * 0.98 + 0.01
    (score,) = torch.autograd.grad(model.log_prob(x, abar).sum(), x)
    torch.testing.assert_close(model.noise_prediction(x.detach(), abar), -(1 - abar).sqrt() * score, rtol=1e-12, atol=1e-12)
    # abar = 1 is the clean mixture: compare the density with scipy
    grid = np.linspace(-10, 10, 41)
    expected = np.log(sum(w * norm.pdf(grid, m, s) for w, m, s in zip([0.2, 0.5, 0.3], [-5, 1, 6], [0.5, 2, 1])))
    got = model.log_prob(torch.tensor(grid).expand(2, -1))[0].detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_denoising_loss_and_mse_convention():
    eps = torch.randn(4, 3, 2, 2)
    pred = torch.zeros_like(eps)
    torch.testing.assert_close(noise_mse(eps, pred), eps.square().mean(dim=(1, 2, 3)))
    weight = torch.tensor([1.0, 2.0, 0.0, 1.0])
    assert denoising_loss(eps, pred, weight).item() == pytest.approx((weight * noise_mse(eps, pred)).mean().item())
    r = diffusion_log_ratio(eps, pred, eps)
    torch.testing.assert_close(r, -noise_mse(eps, pred))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: popalign_loss(torch.zeros(4), torch.tensor([1, 1, 1, 1]), 1.0), "both a winning and a losing"),
        (lambda: popalign_loss(torch.zeros(4), torch.tensor([1, 0]), 1.0), "one entry per sample"),
        (lambda: popalign_loss(torch.zeros(4), torch.tensor([1, 0, 2, 0]), 1.0), "boolean"),
        (lambda: popalign_loss(torch.zeros(2), torch.tensor([1, 0]), 0.0), "beta_prime must be > 0"),
        (lambda: popalign_loss(torch.zeros(2, 2, 2), torch.tensor([1, 0]), 1.0), "1-D tensor"),
        (lambda: popalign_loss(torch.zeros(3, 2), torch.tensor([1, 0]), torch.ones(2)), r"one value per run \(shape \(3,\)\)"),
        (lambda: popalign_loss(torch.zeros(2, 2), torch.tensor([1, 0]), torch.tensor([1.0, -1.0])),
         "every beta_prime must be > 0"),
        (lambda: popalign_loss(torch.zeros(2), torch.tensor([1, 0]), torch.ones(2)), r"needs r of shape \(R, B\)"),
        (lambda: popalign_loss(torch.zeros(2, 2), torch.tensor([1, 0]), 1.0, mu=torch.zeros(3)), "mu must be a scalar"),
        (lambda: popalign_loss(torch.zeros(2, 2), torch.tensor([[1, 0], [0, 1]]), 1.0), "shared by all runs"),
        (lambda: popalign_normaliser(torch.zeros(2, 2), torch.tensor([1, 0]), torch.tensor([0.5, 1.5])),
         r"every alpha must lie in \[0, 1\]"),
        (lambda: popalign_normaliser(torch.zeros(2), torch.tensor([1, 0]), 1.5), r"alpha must lie in \[0, 1\]"),
        (lambda: population_dpo_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0), "same shape"),
        (lambda: noise_mse(torch.zeros(2, 3), torch.zeros(2, 4)), "same shape"),
        (lambda: GaussianMixture1D([0.5, 0.6], [0, 1], [1, 1]), "sum to one"),
        (lambda: GaussianMixture1D([0.5, 0.5], [0, 1], [1, -1]), "stds must be positive"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
