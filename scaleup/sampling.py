"""Stable Diffusion sampling with a gradient: a guided noise predictor around a diffusers U-Net, the sampler chain of
:func:`theory.sampler_gradient.run_sampler` with its adjusted gradient (seed 000 [0110]-[0116], Algorithm A.1), and
a checkpointed VAE decode.

diffusers' pipelines run under ``torch.no_grad`` and step the scheduler themselves, so the chain that finetuning
differentiates through is assembled here from the pipeline's own parts (U-Net, scheduler, VAE); without gradients it
produces the pipeline's images exactly (tests/test_sampling.py checks this against ``StableDiffusionPipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.utils.checkpoint

from theory.guidance import classifier_free_guidance
from theory.semantic_guidance import semantic_guidance
from theory.sampler_gradient import AdjustedGradient, run_sampler, scheduler_stepper


@dataclass(frozen=True)
class SemanticEdits:
    """Edit prompts of semantic guidance (SEGA, :func:`theory.semantic_guidance.semantic_guidance`) for a batch.

    ``embeddings`` holds one (B, L, D) text embedding per edit prompt, ``scales`` the signed scales (E, B): positive
    toward the edit, negative away from it; ``threshold`` is SEGA's lambda and ``warmup_steps`` its delta.
    """

    embeddings: Sequence[torch.Tensor]
    scales: torch.Tensor
    threshold: float
    warmup_steps: int


class GuidedNoisePredictor:
    """eps(z, i) = eps_u + g (eps_c - eps_u) of a ``UNet2DConditionModel`` at the scheduler's i-th timestep.

    Classifier-free guidance (Ho & Salimans 2022) with scale ``guidance_scale``; the unconditional branch uses
    ``uncond_embeddings`` (the empty prompt through the same, possibly finetuned, text encoder). With
    ``guidance_scale == 1`` only the conditional branch runs. ``added_cond_kwargs`` carries SDXL's pooled text
    embeddings and time ids, already stacked as (uncond, cond) like the embeddings.

    With ``edits`` the prediction is semantic guidance instead (SEGA eq. 2: the guidance above plus one thresholded
    edit term per edit prompt), from one U-Net call on the (uncond, cond, edit 1, ..., edit E) stack; SD 1.x/2.x only.
    """

    def __init__(self, unet, timesteps: Sequence, cond_embeddings: torch.Tensor, uncond_embeddings: torch.Tensor | None,
                 guidance_scale: float, *, added_cond_kwargs: dict | None = None, scale_model_input=None,
                 edits: SemanticEdits | None = None):
        if (guidance_scale != 1.0 or edits is not None) and uncond_embeddings is None:
            raise ValueError("classifier-free guidance with guidance_scale != 1 (or semantic guidance) needs "
                             "uncond_embeddings")
        if edits is not None and added_cond_kwargs is not None:
            raise ValueError("semantic guidance (edits) is implemented for SD 1.x/2.x U-Nets only, not SDXL")
        self.unet = unet
        self.timesteps = list(timesteps)
        self.cond = cond_embeddings
        self.uncond = uncond_embeddings
        self.guidance_scale = float(guidance_scale)
        self.added_cond_kwargs = added_cond_kwargs
        self.scale_model_input = scale_model_input
        self.edits = edits

    def __call__(self, z: torch.Tensor, i: int) -> torch.Tensor:
        t = self.timesteps[i]
        if self.scale_model_input is not None:
            z = self.scale_model_input(z, t)
        dtype = self.unet.dtype
        if self.edits is not None:
            return self._semantic(z, t, i)
        if self.guidance_scale == 1.0:
            return self.unet(z.to(dtype), t, encoder_hidden_states=self.cond.to(dtype),
                             added_cond_kwargs=self._cond_only()).sample.to(z.dtype)
        both = torch.cat([z, z]).to(dtype)
        embeddings = torch.cat([self.uncond, self.cond]).to(dtype)
        eps_u, eps_c = self.unet(both, t, encoder_hidden_states=embeddings,
                                 added_cond_kwargs=self.added_cond_kwargs).sample.to(z.dtype).chunk(2)
        return classifier_free_guidance(eps_u, eps_c, self.guidance_scale)

    def _semantic(self, z: torch.Tensor, t, i: int) -> torch.Tensor:
        edits = self.edits
        n = 2 + len(edits.embeddings)
        embeddings = torch.cat([self.uncond, self.cond, *edits.embeddings]).to(self.unet.dtype)
        eps = self.unet(torch.cat([z] * n).to(self.unet.dtype), t,
                        encoder_hidden_states=embeddings).sample.to(z.dtype).chunk(n)
        return semantic_guidance(eps[0], eps[1], eps[2:], self.guidance_scale, edits.scales,
                                 threshold=edits.threshold, step=i, warmup_steps=edits.warmup_steps)

    def _cond_only(self) -> dict | None:
        if self.added_cond_kwargs is None:
            return None
        return {k: v.chunk(2)[1] for k, v in self.added_cond_kwargs.items()}


def sample_latents(unet, scheduler, cond_embeddings: torch.Tensor, uncond_embeddings: torch.Tensor | None,
                   z_T: torch.Tensor, n_steps: int, guidance_scale: float, gradient: AdjustedGradient, *,
                   checkpoint: bool = True, added_cond_kwargs: dict | None = None,
                   edits: SemanticEdits | None = None) -> torch.Tensor:
    """z_0 from z_T through ``n_steps`` scheduler steps with the chosen gradient mode (seed 000, Algorithm A.1).

    ``scheduler`` must be deterministic and linear (DPM-Solver++ or DDIM with eta = 0, no clipping or thresholding);
    :func:`theory.sampler_gradient.scheduler_stepper` refuses others. With ``checkpoint`` each U-Net call is
    recomputed in the backward pass, so memory stays flat in the number of steps under the adjusted gradient.
    ``edits`` adds semantic guidance (:class:`SemanticEdits`).
    """
    step = scheduler_stepper(scheduler, n_steps)
    eps_model = GuidedNoisePredictor(unet, scheduler.timesteps, cond_embeddings, uncond_embeddings, guidance_scale,
                                     added_cond_kwargs=added_cond_kwargs, scale_model_input=scheduler.scale_model_input,
                                     edits=edits)
    return run_sampler(eps_model, z_T * scheduler.init_noise_sigma, step, n_steps, gradient, checkpoint=checkpoint)


def decode_latents(vae, latents: torch.Tensor, *, checkpoint: bool = True) -> torch.Tensor:
    """Images in [0, 1], (B, 3, H, W), from SD latents: ``vae.decode(z / scaling_factor)``, activations recomputed in
    the backward pass when ``checkpoint`` (the decoder at 512 px holds several GiB of activations per image)."""
    scaled = (latents / vae.config.scaling_factor).to(vae.dtype)
    if checkpoint and torch.is_grad_enabled():
        decoded = torch.utils.checkpoint.checkpoint(lambda z: vae.decode(z).sample, scaled, use_reentrant=False)
    else:
        decoded = vae.decode(scaled).sample
    return (decoded.float() / 2 + 0.5).clamp(0, 1)
