"""The conditional mixture diffusion toy (seed 003): Lipschitz constant, exact generations, bound and corollary."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm

from theory.embedding_bias_bound import (
    class_mass_lower_bound,
    generation_tv_bound,
    path_kl_step_terms,
    pinsker_tv_bound,
)
from theory.ddpm import ddpm_sigmas
from toy.audit_features import FeatureModel, platt_calibrate, raw_scores
from toy.conditional_diffusion import ConditionalMixtureDiffusion, Grid, generation_tv, grid_mass

BETAS = np.linspace(0.03, 0.35, 20)
SIGMAS = ddpm_sigmas(BETAS)


def overlapping(k_dim: int = 1) -> ConditionalMixtureDiffusion:
    if k_dim == 1:
        return ConditionalMixtureDiffusion([[-1.0], [1.0]], 0.6, 2.0 * np.eye(2), BETAS, SIGMAS)
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    return ConditionalMixtureDiffusion(1.2 * np.column_stack([np.cos(angles), np.sin(angles)]), 0.6, 2.0 * np.eye(3),
                                       BETAS, SIGMAS)


def test_jacobian_matches_finite_differences():
    model = overlapping(2)
    rng = np.random.default_rng(0)
    x, e = rng.standard_normal((50, 2)) * 2, rng.standard_normal(3)
    for t in (1, 7, 20):
        jac = model.eps_jacobian_e(x, t, e)
        h = 1e-6
        fd = np.stack([(model.eps(x, t, e + h * np.eye(3)[j]) - model.eps(x, t, e - h * np.eye(3)[j])) / (2 * h)
                       for j in range(3)], axis=2)
        np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dim", [1, 2])
def test_lipschitz_constant_holds_everywhere_sampled(dim):
    model = overlapping(dim)
    lip = model.lipschitz()
    rng = np.random.default_rng(dim)
    for t in range(1, model.n_steps + 1):
        x = rng.standard_normal((4000, dim)) * 4
        e = rng.standard_normal(model.embedding_dim) * 3
        e2 = e + rng.standard_normal(model.embedding_dim) * rng.uniform(1e-3, 3)
        ratio = np.linalg.norm(model.eps(x, t, e) - model.eps(x, t, e2), axis=1) / np.linalg.norm(e - e2)
        assert ratio.max() <= lip[t - 1] * (1 + 1e-12)
        assert np.linalg.norm(model.eps_jacobian_e(x, t, e), ord=2, axis=(1, 2)).max() <= lip[t - 1] * (1 + 1e-12)


def test_lipschitz_constant_is_attained_for_two_modes():
    """For K = 2 the sup of ||d eps / d e|| is reached where r = (1/2, 1/2): a smaller L_t would be false."""
    model = overlapping(1)
    lip = model.lipschitz()
    x = np.linspace(-8, 8, 400_001)[:, None]
    for t in (1, 10, 20):
        for e in (np.array([0.3, -0.2]), np.array([0.05, 0.0])):  # r = 1/2 lies inside [-8, 8] for these
            norms = np.linalg.norm(model.eps_jacobian_e(x, t, e), ord=2, axis=(1, 2))
            assert norms.max() == pytest.approx(lip[t - 1], rel=1e-6)


def test_grid_propagation_is_exact_for_a_linear_gaussian_chain():
    """One mode: eps is affine in x, the chain stays Gaussian with a mean/variance recursion; the grid matches it."""
    model = ConditionalMixtureDiffusion([[1.5]], 0.5, np.zeros((1, 2)), BETAS, SIGMAS)
    grid = Grid(1, 8.0, 801)
    gen = model.generate_on_grid(np.zeros(2), grid)
    mean, var = 0.0, 1.0
    for t in range(model.n_steps, 0, -1):
        abar, alpha, c = model.alpha_bars[t - 1], model.alphas[t - 1], model.c[t - 1]
        v = abar * 0.25 + 1 - abar
        slope = (1 - c * np.sqrt(1 - abar) / v) / np.sqrt(alpha)
        shift = c * np.sqrt(1 - abar) * np.sqrt(abar) * 1.5 / v / np.sqrt(alpha)
        mean, var = slope * mean + shift, slope ** 2 * var + SIGMAS[t - 1] ** 2
    np.testing.assert_allclose(gen.final, norm.pdf(grid.axis, mean, np.sqrt(var)), rtol=0, atol=1e-10)
    assert grid_mass(gen, grid) == pytest.approx(1.0, abs=1e-10)


def test_grid_class_masses_agree_with_monte_carlo_sampling():
    model = overlapping(2)
    grid = Grid(2, 6.0, 61)
    e = np.array([0.9, 0.3, -0.2])
    probs = model.class_distribution(model.generate_on_grid(e, grid), grid)
    z = model.sample(e, 20_000, torch.Generator().manual_seed(3))
    counts = model.class_membership(z).sum(axis=0)
    pvalues = [binomtest(int(round(counts[k])), z.shape[0], probs[k]).pvalue for k in range(3)]
    assert min(pvalues) * 3 > 1e-4  # Bonferroni; fails by chance with probability < 1e-4


@pytest.mark.parametrize("dim", [1, 2])
def test_bound_holds_for_all_pairs_and_a_halved_kl_constant_fails(dim):
    model = overlapping(dim)
    grid = Grid(dim, 8.0 if dim == 1 else 6.0, 401 if dim == 1 else 61)
    lip = model.lipschitz()
    rng = np.random.default_rng(10 + dim)
    n = 8 if dim == 1 else 5  # the 2-D grid costs ~0.5 s per embedding
    emb = rng.standard_normal((n, model.embedding_dim))
    scales = np.geomspace(0.02, 0.6, n - 2)
    emb[2:] = emb[0] + rng.standard_normal((n - 2, model.embedding_dim)) * scales[:, None]
    gens = [model.generate_on_grid(e, grid) for e in emb]
    terms = path_kl_step_terms(BETAS, SIGMAS, lip)
    violated_half = 0
    for i, j in combinations(range(len(emb)), 2):
        d = np.linalg.norm(emb[i] - emb[j])
        tv = generation_tv(gens[i], gens[j], grid)
        kl = model.exact_path_kl(gens[i], gens[j], grid)
        assert tv <= pinsker_tv_bound(kl) <= generation_tv_bound(BETAS, SIGMAS, lip, d)
        assert kl <= terms.sum() * d ** 2
        violated_half += tv > pinsker_tv_bound(kl / 2)
    assert violated_half > 0


def test_corollary_on_the_chain():
    model = overlapping(1)
    grid = Grid(1, 8.0, 401)
    lip = model.lipschitz()
    e_man = np.array([1.0, 0.0])
    p_man = model.class_distribution(model.generate_on_grid(e_man, grid), grid)[0]
    for theta in np.linspace(0, np.pi / 2, 7):
        e = np.array([np.cos(theta), np.sin(theta)])
        p = model.class_distribution(model.generate_on_grid(e, grid), grid)[0]
        assert p >= class_mass_lower_bound(p_man, generation_tv_bound(BETAS, SIGMAS, lip, np.linalg.norm(e - e_man)))
    balanced = model.class_distribution(model.generate_on_grid(np.array([1.0, 1.0]) / np.sqrt(2), grid), grid)
    np.testing.assert_allclose(balanced, [0.5, 0.5], atol=1e-12)


def test_subclass_and_average_scores_repair_the_audit_without_leak():
    model = FeatureModel(tau=2.0, leak=0.0)
    rng = np.random.default_rng(4)
    n = 4000
    prof, grp = np.repeat([0, 0, 1, 1], n), np.repeat([0, 1, 0, 1], n)
    feats = model.image_features(prof, grp, rng)
    scores = raw_scores(model, feats, 0, 0.6)
    target = prof == 0
    for name, s in scores.items():
        diff = s[target & (grp == 0)].mean() - s[target & (grp == 1)].mean()
        se = np.sqrt(s[target & (grp == 0)].var() / n + s[target & (grp == 1)].var() / n)
        if name == "plain":
            assert diff > 10 * se  # the biased embedding prefers images of group 0
        else:
            assert abs(diff) < 4 * se
    calibrated = platt_calibrate(scores["plain"], target.astype(float))
    assert abs(calibrated.mean() - target.mean()) < 1e-9  # logistic MLE with an intercept matches the base rate


@pytest.mark.parametrize(("call", "message"), [
    (lambda: ConditionalMixtureDiffusion([[0.0, 0.0, 0.0]], 1.0, np.eye(1), BETAS, SIGMAS), "d = 1 or 2"),
    (lambda: ConditionalMixtureDiffusion([[0.0], [1.0]], 1.0, np.eye(3), BETAS, SIGMAS), "one per mode"),
    (lambda: ConditionalMixtureDiffusion([[0.0], [1.0]], 0.0, np.eye(2), BETAS, SIGMAS), "data_std"),
    (lambda: ConditionalMixtureDiffusion([[0.0], [1.0]], 1.0, np.eye(2), BETAS, SIGMAS * 0), "positive step noises"),
    (lambda: overlapping(1).eps(np.zeros((1, 1)), 0, np.zeros(2)), "step t"),
    (lambda: overlapping(1).attribute_weights(np.zeros(3)), "length d_e"),
    (lambda: Grid(3, 1.0, 10), "1 or 2 dimensions"),
    (lambda: overlapping(1).generate_on_grid(np.zeros(2), Grid(2, 4.0, 11)), "grid has dim"),
    (lambda: FeatureModel(dim=3), "orthonormal"),
])
def test_toy_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
