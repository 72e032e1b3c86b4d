"""The models shared by the sampler-finetuning experiments (seed 000, [0110]-[0117]): the SD noise schedule, a
three-component mixture's exact noise predictor and an MLP trained on its samples, and the mean +- sd of repeats."""

from __future__ import annotations

import torch

from experiments.experiment import spawn_seeds
from theory.schedules import alphas_cumprod, scaled_linear_betas
from toy.denoisers import MixtureDenoiser, MLPDenoiser

SD_BETAS = scaled_linear_betas(1000).numpy()


def mixture_model(d: int, seed: int, spread: float = 2.0, std: float = 0.3) -> MixtureDenoiser:
    """The exact noise predictor of 0.5/0.3/0.2 N(m_k, std^2 I) in R^d, means m_k ~ N(0, spread^2 I) drawn from
    ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(3, d, generator=gen, dtype=torch.float64) * spread
    return MixtureDenoiser(torch.tensor([0.5, 0.3, 0.2]), means, torch.full((3,), std))


def trained_mlp(d: int, seed: int, steps: int) -> MLPDenoiser:
    """An MLP trained (briefly) on samples of the same mixture (``mixture_model(d, seed)``): an imperfect, generic
    network.

    Its training data, initial weights and batches come from streams spawned from ``seed`` (not ``seed`` itself,
    which already drew the mixture's means)."""
    teacher = mixture_model(d, seed)
    data_seed, init_seed, fit_seed = spawn_seeds(seed, 3)
    gen = torch.Generator().manual_seed(data_seed)
    comp = torch.multinomial(torch.softmax(teacher.logits.detach(), 0), 4000, replacement=True, generator=gen)
    data = teacher.means.detach()[comp] + torch.exp(teacher.log_stds.detach())[comp, None] * torch.randn(
        4000, d, generator=gen, dtype=torch.float64)
    mlp = MLPDenoiser(d, hidden=16, seed=init_seed)
    if steps:
        mlp.fit(data, alphas_cumprod(torch.as_tensor(SD_BETAS)), steps=steps, seed=fit_seed)
    return mlp

