"""The denoising (epsilon-prediction) loss of DDPM (seed 001, eq. 2), the building block of SFT and Diffusion-DPO."""

from __future__ import annotations

import torch


def noise_mse(eps: torch.Tensor, eps_pred: torch.Tensor) -> torch.Tensor:
    """Per-sample ||eps - eps_pred||^2 averaged over all non-batch elements (latent channels, height, width).

    Shape (B,) for inputs of shape (B, ...). The mean over elements, rather than the sum, is the convention of the
    public Diffusion-DPO and PopAlign code, whose beta (5000 for SDXL) is calibrated to it.
    """
    if eps.shape != eps_pred.shape:
        raise ValueError(f"eps and eps_pred must have the same shape; got {tuple(eps.shape)} and {tuple(eps_pred.shape)}")
    if eps.ndim == 0:
        raise ValueError("eps must have a batch dimension")
    err = (eps - eps_pred).square()
    return err.reshape(err.shape[0], -1).mean(dim=1)


def denoising_loss(eps: torch.Tensor, eps_pred: torch.Tensor, weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """L_DDPM = E[lambda(t) ||eps - eps_theta(x_t, t)||^2] (seed 001, eq. 2), as a batch mean.

    ``weight`` is lambda(t) per sample (shape (B,)) or a constant; 1 gives the "simple" loss of Ho et al. The SFT
    baseline of seed 001 is this loss on the winning samples only.

    Non-finite inputs are not refused here (a check would synchronise a GPU on every step): a NaN or an infinity in
    ``eps``, ``eps_pred`` or ``weight`` gives a non-finite loss and non-finite gradients, and the jobs' loop
    (:func:`scaleup.training.loop.run_training`) skips such a step and stops after ten in a row. Settings (weights,
    coefficients) are checked.
    """
    return (torch.as_tensor(weight, dtype=eps.dtype, device=eps.device) * noise_mse(eps, eps_pred)).mean()
