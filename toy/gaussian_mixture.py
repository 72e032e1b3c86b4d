"""A batch of learnable 1-D Gaussian mixtures with exact densities and exact diffusion noise predictors.

P_theta = sum_c w_c N(x; m_c, s_c^2) (seed 001, eq. 10), parameterised by logits, means and log standard deviations,
with a leading batch dimension of R independent runs so that a sweep over seeds and settings trains as one tensor
program. Under the DDPM forward process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps the noised marginal is again a
mixture, p_t = sum_c w_c N(sqrt(abar_t) m_c, abar_t s_c^2 + 1 - abar_t), so the optimal noise predictor is analytic:

    eps*(x_t, t) = -sqrt(1 - abar_t) d/dx log p_t(x_t)
                 = sqrt(1 - abar_t) sum_c pi_c(x_t) (x_t - sqrt(abar_t) m_c) / (abar_t s_c^2 + 1 - abar_t),

with pi_c(x_t) the posterior of component c under p_t. A "diffusion model" with parameters theta is this predictor.
"""

from __future__ import annotations

import math

import torch


def noised_variance(alpha_bar, std):
    """v = abar s^2 + 1 - abar, the per-coordinate variance of N(m, s^2 I) data under the forward process
    x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps (:func:`theory.ddpm.forward_noise`); numbers, arrays or tensors."""
    return alpha_bar * std**2 + (1.0 - alpha_bar)


def noised_mixture_components(
    x: torch.Tensor, abar: torch.Tensor | float, log_weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-component terms of p_t = sum_k w_k N(sqrt(abar) m_k, v_k I), v_k = abar s_k^2 + 1 - abar, in R^d.

    ``x`` has shape (..., d) and ``abar`` broadcasts to x's batch shape (...); ``log_weights`` (..., K),
    ``means`` (..., K, d) and ``stds`` (..., K) broadcast against it. Returns log(w_k N(x; sqrt(abar) m_k, v_k I))
    of shape (..., K), x - sqrt(abar) m_k of shape (..., K, d) and v_k of shape (..., K).
    """
    abar = torch.as_tensor(abar, dtype=x.dtype).expand(x.shape[:-1]).unsqueeze(-1)  # (..., 1)
    var = noised_variance(abar, stds)
    diff = x.unsqueeze(-2) - abar.sqrt().unsqueeze(-1) * means
    log_joint = log_weights - 0.5 * diff.square().sum(-1) / var - 0.5 * x.shape[-1] * torch.log(2 * math.pi * var)
    return log_joint, diff, var


def mixture_noise_prediction(
    x: torch.Tensor, abar: torch.Tensor | float, log_weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> torch.Tensor:
    """eps*(x, t) = sqrt(1 - abar) sum_k pi_k(x) (x - sqrt(abar) m_k) / v_k (module docstring); shape of ``x``."""
    log_joint, diff, var = noised_mixture_components(x, abar, log_weights, means, stds)
    post = torch.softmax(log_joint, dim=-1)
    scale = (1.0 - torch.as_tensor(abar, dtype=x.dtype).expand(x.shape[:-1])).sqrt().unsqueeze(-1)
    return scale * (post.unsqueeze(-1) * diff / var.unsqueeze(-1)).sum(dim=-2)


class GaussianMixture1D(torch.nn.Module):
    """R independent learnable 1-D Gaussian mixtures of C components (seed 001, eq. 10).

    Parameters
    ----------
    weights, means, stds : array-like of shape (C,) or (R, C)
        Initial mixture weights (positive, summing to one), means and standard deviations (positive).
    n_runs : int
        R, when the initial values are given for a single mixture (broadcast to every run).
    """

    def __init__(self, weights, means, stds, *, n_runs: int | None = None):
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64)
        m = torch.as_tensor(means, dtype=torch.float64)
        s = torch.as_tensor(stds, dtype=torch.float64)
        if not (w.shape == m.shape == s.shape) or w.ndim not in (1, 2):
            raise ValueError(f"weights, means and stds must share a shape (C,) or (R, C); got "
                             f"{tuple(w.shape)}, {tuple(m.shape)}, {tuple(s.shape)}")
        if (w <= 0).any() or not torch.allclose(w.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-9):
            raise ValueError("weights must be positive and sum to one")
        if (s <= 0).any() or not torch.isfinite(m).all():
            raise ValueError("stds must be positive and means finite")
        if w.ndim == 1:
            runs = 1 if n_runs is None else int(n_runs)
            w, m, s = (v.expand(runs, -1).clone() for v in (w, m, s))
        elif n_runs is not None and n_runs != w.shape[0]:
            raise ValueError(f"n_runs = {n_runs} but the parameters have R = {w.shape[0]} rows")
        self.logits = torch.nn.Parameter(w.log())
        self.means = torch.nn.Parameter(m)
        self.log_stds = torch.nn.Parameter(s.log())

    @property
    def weights(self) -> torch.Tensor:
        """(R, C) mixture weights softmax(logits)."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def stds(self) -> torch.Tensor:
        return self.log_stds.exp()

    def _components(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (R, B) as (R, B, 1) with log-weights (R, 1, C), means (R, 1, C, 1), stds (R, 1, C) broadcasting over it."""
        return (x.unsqueeze(-1), torch.log_softmax(self.logits, dim=-1).unsqueeze(1),
                self.means.unsqueeze(1).unsqueeze(-1), self.stds.unsqueeze(1))

    def _log_joint(self, x: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        x1, log_w, means, stds = self._components(x)
        return noised_mixture_components(x1, abar, log_w, means, stds)[0]

    def log_prob(self, x: torch.Tensor, abar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """log p_t(x) of each run's (noised) mixture; x of shape (R, B), abar scalar or (R, B). abar = 1 is p_0."""
        return torch.logsumexp(self._log_joint(x, abar), dim=-1)

    def posterior(self, x: torch.Tensor, abar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """pi_c(x) = P(component c | x_t = x), shape (R, B, C)."""
        return torch.softmax(self._log_joint(x, abar), dim=-1)

    def noise_prediction(self, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """Exact eps*(x_t, t) of the noised mixture (module docstring); x_t and abar of shape (R, B)."""
        x1, log_w, means, stds = self._components(x_t)
        return mixture_noise_prediction(x1, abar, log_w, means, stds).squeeze(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples from each run's mixture, shape (R, n)."""
        runs = self.logits.shape[0]
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(runs, n, generator=generator, dtype=torch.float64)
        return self.means.gather(1, comp) + self.stds.gather(1, comp) * noise
