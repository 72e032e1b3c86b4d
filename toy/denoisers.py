"""Noise predictors with parameters theta for the sampler-gradient toys (seed 000, [0110]-[0117]).

- :class:`MixtureDenoiser`: the exact eps*(z, t) of an isotropic Gaussian mixture in R^d, analytic in theta =
  (component logits, means, log standard deviations); its Jacobians are exact (autograd of a closed form).
- :class:`MLPDenoiser`: a small MLP eps_theta(z, abar_t), trained on mixture samples with the denoising loss.

- :class:`MixtureAsDenoiser`: a 1-D :class:`toy.gaussian_mixture.GaussianMixture1D` seen as such a predictor.

All take (z of shape (B, d), abar of shape (B,) or scalar) and return eps of shape (B, d), in float64.
"""

from __future__ import annotations

import math

import torch

from theory.ddpm import forward_noise
from theory.denoising import denoising_loss
from theory.validation import check_count
from toy.gaussian_mixture import mixture_noise_prediction, noised_mixture_components


class MixtureDenoiser(torch.nn.Module):
    """eps*(z, t) = -sqrt(1 - abar) grad log p_t(z) for p_0 = sum_k w_k N(m_k, s_k^2 I) in R^d
    (:func:`toy.gaussian_mixture.mixture_noise_prediction`).

    p_t = sum_k w_k N(sqrt(abar) m_k, v_k I) with v_k = abar s_k^2 + 1 - abar, hence
    eps* = sqrt(1 - abar) sum_k pi_k(z) (z - sqrt(abar) m_k) / v_k with pi_k the posterior of component k.
    """

    def __init__(self, weights, means, stds):
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64)
        m = torch.as_tensor(means, dtype=torch.float64)
        s = torch.as_tensor(stds, dtype=torch.float64)
        if m.ndim != 2 or w.shape != (m.shape[0],) or s.shape != (m.shape[0],):
            raise ValueError(f"need weights (K,), means (K, d), stds (K,); got {tuple(w.shape)}, {tuple(m.shape)}, "
                             f"{tuple(s.shape)}")
        if (w <= 0).any() or (s <= 0).any():
            raise ValueError("weights and stds must be positive")
        self.logits = torch.nn.Parameter(w.log() - w.log().mean())
        self.means = torch.nn.Parameter(m.clone())
        self.log_stds = torch.nn.Parameter(s.log())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def component_logits(self) -> torch.Tensor:
        """Unnormalised log-weights of the components, shape (K,)."""
        return self.logits

    def _log_joint(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        return noised_mixture_components(z, abar, torch.log_softmax(self.component_logits(), 0), self.means,
                                         self.log_stds.exp())[0]

    def log_prob(self, z: torch.Tensor, abar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """log p_t(z), shape (B,)."""
        return torch.logsumexp(self._log_joint(z, abar), dim=1)

    def posterior(self, z: torch.Tensor, abar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """pi_k(z) under p_t, shape (B, K)."""
        return torch.softmax(self._log_joint(z, abar), dim=1)

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        return mixture_noise_prediction(z, abar, torch.log_softmax(self.component_logits(), 0), self.means,
                                        self.log_stds.exp())


class MLPDenoiser(torch.nn.Module):
    """eps_theta(z, abar): a tanh MLP on (z, log-SNR), float64 (smooth, so its Jacobians are well defined)."""

    def __init__(self, dim: int, hidden: int = 32, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / math.sqrt(p.shape[-1])))
        self.double()

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        abar = torch.as_tensor(abar, dtype=z.dtype).expand(z.shape[0])
        log_snr = torch.log(abar / (1 - abar)).unsqueeze(-1) / 10.0
        return self.net(torch.cat([z, log_snr], dim=-1))

    def fit(self, data: torch.Tensor, alphas_cumprod: torch.Tensor, *, steps: int = 2000, lr: float = 3e-3,
            batch: int = 256, seed: int = 0) -> list[float]:
        """Train on samples ``data`` (N, d) with the denoising loss (seed 001, eq. 2); returns the loss curve."""
        steps = check_count(steps, "steps", minimum=0)
        batch = check_count(batch, "batch", minimum=1)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            x0 = data[torch.randint(0, data.shape[0], (batch,), generator=gen)]
            t = torch.randint(0, alphas_cumprod.shape[0], (batch,), generator=gen)
            abar = alphas_cumprod[t]
            eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            loss = denoising_loss(eps, self(forward_noise(x0, eps, abar), abar))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        return losses


class PromptMixtureDenoiser(MixtureDenoiser):
    """A text-to-image stand-in: mixture weights softmax(W e + b) depend on a learnable prompt embedding e.

    Means and standard deviations are frozen; only the prompt (a soft prompt, seed 000's prompt-tuning variant)
    is trained, so every change of the generated distribution goes through the component weights.
    """

    def __init__(self, projection, bias, prompt, means, stds):
        k = torch.as_tensor(means).shape[0]
        super().__init__(torch.full((k,), 1.0 / k), means, stds)
        self.means.requires_grad_(False)
        self.log_stds.requires_grad_(False)
        del self.logits
        self.register_buffer("projection", torch.as_tensor(projection, dtype=torch.float64))
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float64))
        self.prompt = torch.nn.Parameter(torch.as_tensor(prompt, dtype=torch.float64).clone())

    def component_logits(self) -> torch.Tensor:
        return self.projection @ self.prompt + self.bias

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.component_logits(), 0)


class LinearDenoiser(torch.nn.Module):
    """eps_theta(z) = lambda * z (elementwise lambda, shape (d,)): J = diag(lambda) at every step.

    Not a denoiser of any data for lambda < 0; it isolates the growth condition |1 - c_t lambda| > 1 of B_t.
    """

    def __init__(self, dim: int, eigenvalue: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((dim,), float(eigenvalue), dtype=torch.float64))

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        return z * self.scale


class MixtureAsDenoiser(torch.nn.Module):
    """A batch-of-one 1-D GaussianMixture1D seen as eps(z (B, 1), abar): the PopAlign toy's model in the sampler."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        abar = torch.as_tensor(abar, dtype=z.dtype).expand(z.shape[0])
        return self.mixture.noise_prediction(z.T, abar[None]).T
