"""A prompt-conditioned diffusion model whose generations are computed exactly (seed 003, "Bias Begets Bias").

Data for embedding e: the Gaussian mixture p_e(x0) = sum_k pi_k(e) N(x0; mu_k, s^2 I) in d = 1 or 2 dimensions,
with attribute weights pi(e) = softmax(W e). Its exact noise predictor at noise level abar_t is

    eps(x, t, e) = sqrt(1 - abar_t) (x - sum_k r_k(x, e) m_k) / v_t,   m_k = sqrt(abar_t) mu_k,
    v_t = abar_t s^2 + 1 - abar_t,   r(x, e) = softmax(W e - ||x - m_k||^2 / (2 v_t)),

i.e. -sqrt(1 - abar_t) times the score of the noised mixture. Its Jacobian in e is
-(sqrt(1 - abar_t) / v_t) Cov_r(m, w) (w_k the rows of W, Cov_r the cross-covariance under the responsibilities r),
and by Cauchy-Schwarz and Popoviciu's variance inequality (Var <= range^2 / 4) for every x and e

    ||d eps / d e||_op <= L_t = sqrt(abar_t (1 - abar_t)) / v_t * diam(mu) diam(W) / 4,

where diam is the largest distance between two rows. For K = 2 this is the exact Lipschitz constant (attained
where r = (1/2, 1/2), which every e reaches at some x). :meth:`ConditionalMixtureDiffusion.lipschitz` returns it.

The noise predictor is :func:`toy.gaussian_mixture.mixture_noise_prediction` of the mixture with weights pi(e), the
step :func:`theory.ddpm.ddpm_step` and the Monte Carlo chain :func:`theory.ddpm.ddpm_sample` (with sigma_t at every
step, the last included). The generated distribution of the finite-step DDPM ancestral sampler
(theory.embedding_bias_bound) is propagated
as a density on a grid: each Gaussian transition kernel is integrated by the trapezoid rule (the density vanishes
at the grid's edges, so the rule is spectrally accurate), from z_T ~ N(0, I) down to z_0. In 2-D the kernel is
separable in the two output coordinates, so one step costs G^2 x G rather than G^4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import log_softmax, softmax

from theory.ddpm import check_betas, ddpm_coefficients, ddpm_sample, ddpm_step
from theory.embedding_bias_bound import path_kl_step_terms
from toy.gaussian_mixture import mixture_noise_prediction, noised_mixture_components, noised_variance


@dataclass(frozen=True)
class Grid:
    """A tensor-product grid of ``n`` points per axis on [-half_width, half_width]^dim."""

    dim: int
    half_width: float
    n: int
    axis: np.ndarray = field(init=False, repr=False)
    points: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dim not in (1, 2):
            raise ValueError(f"the grid propagation is implemented in 1 or 2 dimensions; got dim = {self.dim}")
        if self.n < 3 or self.half_width <= 0:
            raise ValueError(f"the grid needs n >= 3 points and half_width > 0; got n = {self.n}, "
                             f"half_width = {self.half_width}")
        axis = np.linspace(-self.half_width, self.half_width, self.n)
        object.__setattr__(self, "axis", axis)
        mesh = np.meshgrid(*([axis] * self.dim), indexing="ij")
        object.__setattr__(self, "points", np.stack([m.ravel() for m in mesh], axis=1))

    @property
    def spacing(self) -> float:
        return float(self.axis[1] - self.axis[0])

    @property
    def cell(self) -> float:
        """Volume element h^dim of the rule."""
        return self.spacing ** self.dim

    def weights(self) -> np.ndarray:
        """Trapezoid weights of every grid point (flattened), including h^dim."""
        w1 = np.full(self.n, self.spacing)
        w1[[0, -1]] *= 0.5
        if self.dim == 1:
            return w1
        return np.outer(w1, w1).ravel()


@dataclass
class GridGenerations:
    """Densities of z_T, ..., z_0 on the grid for one embedding (``densities[0]`` is z_T, ``[-1]`` is z_0)."""

    embedding: np.ndarray
    densities: list[np.ndarray]
    #: eps(z, t, e) at every grid point for t = T..1 (same order as ``densities``), reused by the path KL
    eps_values: list[np.ndarray]

    @property
    def final(self) -> np.ndarray:
        return self.densities[-1]


class ConditionalMixtureDiffusion:
    """Exact conditional mixture denoiser with weights softmax(W e) and its DDPM ancestral sampler.

    Parameters
    ----------
    means : array-like of shape (K, d)
        Attribute modes mu_k in d = 1 or 2 dimensions.
    data_std : float
        Within-mode standard deviation s > 0.
    weight_matrix : array-like of shape (K, d_e)
        W: attribute logits W e of an embedding e in R^{d_e}.
    betas : array-like of shape (T,)
        The sampler's noise schedule (index 0 is t = 1); the denoiser is exact at each abar_t.
    sigmas : array-like of shape (T,)
        Step noise sigma_t > 0 of the ancestral sampler.
    """

    def __init__(self, means: ArrayLike, data_std: float, weight_matrix: ArrayLike, betas: ArrayLike, sigmas: ArrayLike):
        mu = np.asarray(means, dtype=np.float64)
        if mu.ndim == 1:
            mu = mu[:, None]
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] not in (1, 2) or not np.isfinite(mu).all():
            raise ValueError(f"means must be a finite (K, d) array with d = 1 or 2; got shape {mu.shape}")
        w = np.asarray(weight_matrix, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != mu.shape[0] or not np.isfinite(w).all():
            raise ValueError(f"weight_matrix must be a finite (K, d_e) array with K = {mu.shape[0]} rows (one per "
                             f"mode); got shape {w.shape}")
        if not (np.isfinite(data_std) and data_std > 0):
            raise ValueError(f"data_std must be a positive number; got {data_std!r}")
        self.betas = check_betas(betas)
        s = np.asarray(sigmas, dtype=np.float64)
        if s.shape != self.betas.shape or not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError(f"sigmas must be {self.betas.shape[0]} positive step noises (one per beta); got {sigmas!r}")
        self.means, self.data_std, self.weight_matrix, self.sigmas = mu, float(data_std), w, s
        coef = ddpm_coefficients(self.betas)
        self.alphas, self.alpha_bars, self.c = coef["alphas"], coef["alpha_bars"], coef["c"]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_steps(self) -> int:
        return self.betas.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight_matrix.shape[1]

    def _embedding(self, e: ArrayLike) -> np.ndarray:
        v = np.asarray(e, dtype=np.float64)
        if v.shape != (self.embedding_dim,) or not np.isfinite(v).all():
            raise ValueError(f"embedding must be a finite vector of length d_e = {self.embedding_dim}; got shape {v.shape}")
        return v

    def attribute_weights(self, e: ArrayLike) -> np.ndarray:
        """pi(e) = softmax(W e): the data distribution's attribute mix for embedding e."""
        return softmax(self.weight_matrix @ self._embedding(e))

    def _noise_level(self, t: int) -> tuple[float, float]:
        if not 1 <= t <= self.n_steps:
            raise ValueError(f"step t must be in 1..{self.n_steps}; got {t}")
        abar = float(self.alpha_bars[t - 1])
        return abar, noised_variance(abar, self.data_std)

    def _mixture(self, e: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(e) (K,), means (K, d) and stds (K,) in the form of :mod:`toy.gaussian_mixture`, float64."""
        log_weights = torch.from_numpy(log_softmax(self.weight_matrix @ self._embedding(e)))
        return log_weights, torch.from_numpy(self.means), torch.full((self.means.shape[0],), self.data_std,
                                                                     dtype=torch.float64)

    def responsibilities(self, x: np.ndarray, t: int, e: ArrayLike) -> np.ndarray:
        """r_k(x, e) = P(mode k | x_t = x) under the noised mixture; shape (N, K)."""
        abar, _ = self._noise_level(t)
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        return torch.softmax(noised_mixture_components(x, abar, *self._mixture(e))[0], dim=1).numpy()

    def eps(self, x: ArrayLike, t: int, e: ArrayLike) -> np.ndarray:
        """Exact noise predictor eps(x, t, e) of the noised mixture at abar_t; x of shape (N, d)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        abar, _ = self._noise_level(t)
        return mixture_noise_prediction(torch.as_tensor(x), abar, *self._mixture(e)).numpy()

    def eps_jacobian_e(self, x: ArrayLike, t: int, e: ArrayLike) -> np.ndarray:
        """d eps / d e = -(sqrt(1 - abar) / v) sqrt(abar) Cov_r(mu, w); shape (N, d, d_e)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        abar, _ = self._noise_level(t)
        r = self.responsibilities(x, t, e)
        mu_c = self.means[None, :, :] - (r @ self.means)[:, None, :]
        w_c = self.weight_matrix[None, :, :] - (r @ self.weight_matrix)[:, None, :]
        cov = np.einsum("nk,nki,nkj->nij", r, mu_c, w_c)
        return -self._e_sensitivity(abar) * cov

    def _e_sensitivity(self, alpha_bar: float | np.ndarray) -> float | np.ndarray:
        """sqrt(abar (1 - abar)) / v: the factor of Cov_r(mu, w) in d eps / d e and hence of the bound L_t."""
        return np.sqrt(alpha_bar * (1.0 - alpha_bar)) / noised_variance(alpha_bar, self.data_std)

    def lipschitz(self) -> np.ndarray:
        """L_t = sqrt(abar_t (1 - abar_t)) / v_t * diam(mu) diam(W) / 4 for t = 1..T (module docstring)."""
        def diameter(rows: np.ndarray) -> float:
            return float(np.sqrt(((rows[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)).max())

        return self._e_sensitivity(self.alpha_bars) * diameter(self.means) * diameter(self.weight_matrix) / 4

    def sample(self, e: ArrayLike, n: int, generator: torch.Generator | None = None) -> np.ndarray:
        """n draws of z_0 from the ancestral sampler (Monte Carlo; the grid is the exact route), shape (n, d)."""
        mixture = self._mixture(e)
        z_T = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        z_0 = ddpm_sample(lambda z, abar: mixture_noise_prediction(z, abar[:, 0], *mixture), z_T,
                          torch.from_numpy(self.betas), generator, sigmas=self.sigmas, noisy_last_step=True)
        return z_0.numpy()

    def generate_on_grid(self, e: ArrayLike, grid: Grid) -> GridGenerations:
        """Densities of z_T..z_0 on ``grid`` under the ancestral sampler for embedding e (trapezoid quadrature)."""
        if grid.dim != self.dim:
            raise ValueError(f"grid has dim {grid.dim} but the model lives in d = {self.dim}")
        e = self._embedding(e)
        pts, quad = grid.points, grid.weights()
        density = _normal_pdf(pts, 1.0).prod(axis=1)  # z_T ~ N(0, I)
        densities, eps_values = [density], []
        for t in range(self.n_steps, 0, -1):
            eps = self.eps(pts, t, e)
            eps_values.append(eps)
            mean = ddpm_step(pts, eps, self.c[t - 1], self.alphas[t - 1], self.sigmas[t - 1], None)
            sigma = self.sigmas[t - 1]
            mass = density * quad
            # Points carrying no mass (far tails, below double precision relative to the peak) add nothing.
            keep = mass > mass.max() * 1e-18
            mass, mean = mass[keep], mean[keep]
            # Gaussian kernel factorises over output coordinates: phi(y1 - m1) phi(y2 - m2)
            kernels = [_normal_pdf(grid.axis[None, :] - mean[:, [j]], sigma) for j in range(self.dim)]
            if self.dim == 1:
                density = mass @ kernels[0]
            else:
                density = ((kernels[0] * mass[:, None]).T @ kernels[1]).ravel()
            densities.append(density)
        return GridGenerations(embedding=e, densities=densities, eps_values=eps_values)

    def class_membership(self, points: np.ndarray) -> np.ndarray:
        """Classifier: the nearest mode (highest N(x; mu_k, s^2 I)); points equidistant from several modes are
        split equally among them, so that a grid point on a symmetric boundary favours no class. Shape (N, K)."""
        sq = ((points[:, None, :] - self.means[None, :, :]) ** 2).sum(axis=2)
        nearest = sq <= sq.min(axis=1, keepdims=True) * (1 + 1e-12) + 1e-300
        return nearest / nearest.sum(axis=1, keepdims=True)

    def class_distribution(self, gen: GridGenerations, grid: Grid) -> np.ndarray:
        """P(class k) of the generated z_0, normalised by the mass on the grid (reported by :func:`grid_mass`)."""
        by_class = (gen.final * grid.weights()) @ self.class_membership(grid.points)
        return by_class / by_class.sum()

    def exact_path_kl(self, gen_e: GridGenerations, gen_other: GridGenerations, grid: Grid) -> float:
        """KL between the path measures: sum_t E_{z_t ~ P_e}[c_t^2 ||eps_e - eps_e'||^2 / (2 alpha_t sigma_t^2)].

        The Lipschitz-free middle term of the bound (chain rule of KL; given z_t both step kernels are Gaussians
        with covariance sigma_t^2 I), computed with the grid densities of z_t under e.
        """
        quad = grid.weights()
        per_unit = path_kl_step_terms(self.betas, self.sigmas, 1.0)  # c_t^2 / (2 alpha_t sigma_t^2)
        kl = 0.0
        for i, t in enumerate(range(self.n_steps, 0, -1)):
            diff = gen_e.eps_values[i] - gen_other.eps_values[i]
            kl += float((gen_e.densities[i] * quad * per_unit[t - 1] * (diff ** 2).sum(axis=1)).sum())
        return kl


def _normal_pdf(x: np.ndarray, std: float) -> np.ndarray:
    """N(x; 0, std^2) elementwise. By hand: scipy.stats.norm.pdf gives the same to 2e-16 but is 4x slower on the grids."""
    return np.exp(-0.5 * (x / std) ** 2) / (np.sqrt(2 * np.pi) * std)


def grid_mass(gen: GridGenerations, grid: Grid) -> float:
    """Total mass of the generated density on the grid (1 up to quadrature error and mass beyond the edges)."""
    return float((gen.final * grid.weights()).sum())


def generation_tv(gen_a: GridGenerations, gen_b: GridGenerations, grid: Grid) -> float:
    """TV(P_a, P_b) = (1/2) integral |p_a - p_b| of two generated densities, by the trapezoid rule."""
    return float(0.5 * (np.abs(gen_a.final - gen_b.final) * grid.weights()).sum())
