"""A small diffusers ``UNet2DModel`` trained as an epsilon-predictor on scikit-learn's 8x8 digits on Stable Diffusion's
noise schedule: the case of paper 000's Fig. 6b closest to SD that runs on a CPU.

The data (:func:`scaleup.digits.load_digit_images`), the architecture (:func:`scaleup.gamma_face_ddpm.tiny_unet`) and
the training loop with the loss of eq. 5 of paper 002 (:func:`scaleup.gamma_face_ddpm.train_ddpm`) are the digits
DDPM's; only the schedule differs (scaled-linear 0.00085..0.012, T = 1000, as SD and paper 000 [0117]).
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import DDPMScheduler, UNet2DModel

from experiments.experiment import spawn_seeds
from scaleup.digits import load_digit_images
from scaleup.gamma_face_ddpm import tiny_unet, train_ddpm
from scaleup.gradient_terms import StepIndexed


def sd_ddpm_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """Stable Diffusion's DDPM schedule in diffusers: scaled-linear betas 0.00085..0.012 (the ``SD_BETAS`` of the toys)."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012)


def trained_digits_unet(seed: int, steps: int, *, block_out_channels: Sequence[int] = (16, 32), batch_size: int = 64,
                        lr: float = 1e-3, progress: bool = False) -> tuple[UNet2DModel, list[float]]:
    """A ``tiny_unet`` trained ``steps`` Adam steps on all ten digit classes (1797 images in [-1, 1]), in float64.

    Its initial weights and its batches come from two streams spawned from ``seed``; ``steps = 0`` leaves it at its
    random initialisation. Trained in float32 (as :func:`train_ddpm` does), then cast to float64 so that the chain and
    its adjoints are computed to float64 precision. Returns (unet in eval mode, training losses).
    """
    init_seed, train_seed = spawn_seeds(seed, 2)
    images, _ = load_digit_images(range(10))
    with torch.random.fork_rng():  # diffusers initialises from the global generator; keep the caller's untouched
        torch.manual_seed(init_seed)
        unet = tiny_unet(sample_size=8, channels=1, block_out_channels=tuple(block_out_channels))
    losses = train_ddpm(unet, sd_ddpm_scheduler(), images, steps=steps, batch_size=batch_size, lr=lr,
                        seed=train_seed, progress=progress)
    return unet.double().eval(), losses


def step_indexed_unet(unet: UNet2DModel, num_train_timesteps: int = 1000) -> StepIndexed:
    """The UNet as the DDPM chain's eps(z, i): step i (sampling order) is diffusers timestep T - 1 - i."""
    timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
    return StepIndexed(unet, lambda net, z, t: net(z, t).sample, timesteps)
