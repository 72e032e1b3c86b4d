"""One training step's loss: PopAlign's per-sample objective (seed 001, eq. 9) or the SFT baseline.

For a batch of B pairs (x^w_i, x^l_i) the winner and the loser of a pair get the same noise eps_i and timestep t_i
(as in the public PopAlign and Diffusion-DPO code), so their r differ by the images alone. With x_t = add_noise(x,
eps, t) for the 2B latents,

    r = diffusion_log_ratio(target, eps_theta(x_t), eps_ref(x_t))  (reference MSE - model MSE, mean over elements)
    loss = popalign_loss(r, gamma, beta', alpha, mu = popalign_normaliser(r, gamma, alpha, reduce_mean))

both imported from :mod:`theory.popalign`; ``reduce_mean`` averages the winner and loser means across processes
before mu is formed (the public code's ``accelerator.reduce(..., "mean")``). The SFT baseline is
:func:`theory.denoising.denoising_loss` on the winners only. ``target`` is eps, or the velocity for a
v-prediction model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from scaleup.jobs.popalign.conditioning import Conditioning
from theory.denoising import denoising_loss, noise_mse
from theory.popalign import diffusion_log_ratio, implied_reward_accuracy, popalign_loss, popalign_normaliser

#: (noisy latents, timesteps, conditioning) -> the U-Net's prediction.
Predictor = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]


def unet_predictor(unet) -> Predictor:
    """A diffusers ``UNet2DConditionModel`` (or its accelerate wrapper) as a :data:`Predictor`."""
    def predict(noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return unet(noisy, timesteps, encoder_hidden_states=cond.encoder_hidden_states,
                    added_cond_kwargs=cond.added_cond_kwargs).sample
    return predict


def lora_reference(unet) -> Predictor:
    """The reference of a LoRA finetune: the same U-Net with every adapter bypassed (no second copy in memory)."""
    from scaleup.models.adapters import adapters_disabled

    predict = unet_predictor(unet)

    def reference(noisy, timesteps, cond):
        with adapters_disabled(unet):
            return predict(noisy, timesteps, cond)
    return reference


def noised_pairs(scheduler, latents_w: torch.Tensor, latents_l: torch.Tensor, noise: torch.Tensor,
                 timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_t of the 2B latents [winners; losers] with shared noise and timesteps; returns (x_t, target, t)."""
    latents = torch.cat([latents_w, latents_l])
    eps = torch.cat([noise, noise])
    t = torch.cat([timesteps, timesteps])
    noisy = scheduler.add_noise(latents, eps, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = eps
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, eps, t)
    else:
        raise ValueError(f"prediction_type {kind!r} is not supported; expected epsilon or v_prediction")
    return noisy, target, t


@dataclass
class StepResult:
    """The loss to backpropagate, what is logged (plain floats) and the per-sample r (detached; PopAlign only)."""

    loss: torch.Tensor
    metrics: dict
    r: torch.Tensor | None = None


def popalign_step(model: Predictor, reference: Predictor, noisy: torch.Tensor, target: torch.Tensor,
                  timesteps: torch.Tensor, cond: Conditioning, *, beta_prime: float, alpha: float,
                  reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepResult:
    """Eq. 9 on 2B noised latents, the first B winners and the last B losers (module docstring).

    ``cond`` holds the conditioning of all 2B rows. Logged: the loss, mu, mean r of winners and losers (this
    process), the model's and reference's denoising MSE, and the pair-level implied reward accuracy (App. E with
    one timestep per image: the share of pairs with r(x^w) > r(x^l)).
    """
    half = noisy.shape[0] // 2
    is_winner = torch.arange(noisy.shape[0], device=noisy.device) < half
    prediction = model(noisy, timesteps, cond)
    with torch.no_grad():
        reference_prediction = reference(noisy, timesteps, cond)
    r = diffusion_log_ratio(target.float(), prediction.float(), reference_prediction.float())
    mu = popalign_normaliser(r, is_winner, alpha, reduce_mean=reduce_mean)
    loss = popalign_loss(r, is_winner, beta_prime, alpha, mu=mu)
    with torch.no_grad():
        metrics = {"loss": float(loss), "mu": float(mu), "r_winner": float(r[:half].mean()),
                   "r_loser": float(r[half:].mean()),
                   "model_mse": float(noise_mse(target.float(), prediction.float()).mean()),
                   "reference_mse": float(noise_mse(target.float(), reference_prediction.float()).mean()),
                   "reward_accuracy_pairs": implied_reward_accuracy(r[:half, None].double(), r[half:, None].double())}
    return StepResult(loss, metrics, r.detach())


def sft_step(model: Predictor, noisy_w: torch.Tensor, target_w: torch.Tensor, timesteps: torch.Tensor,
             cond: Conditioning) -> StepResult:
    """The SFT baseline (seed 001, Sec. 5.2): the denoising loss of eq. 2 on winning images only."""
    prediction = model(noisy_w, timesteps, cond)
    loss = denoising_loss(target_w.float(), prediction.float())
    return StepResult(loss, {"loss": float(loss.detach())})
