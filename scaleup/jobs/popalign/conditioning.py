"""The U-Net's inputs from captions and images: text conditioning (SD 1.5; SDXL's added text/time conditioning)
and VAE latents, through the pipeline's own encoders so that training sees what generation sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class Conditioning:
    """``encoder_hidden_states`` (B, L, D) and, for SDXL, ``added_cond_kwargs`` {"text_embeds", "time_ids"}."""

    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] | None = None

    def repeat(self, times: int) -> "Conditioning":
        """The same conditioning for ``times`` stacked copies of the batch (winners then losers)."""
        added = None if self.added_cond_kwargs is None else {
            k: v.repeat(times, *([1] * (v.ndim - 1))) for k, v in self.added_cond_kwargs.items()}
        return Conditioning(self.encoder_hidden_states.repeat(times, 1, 1), added)

    def select(self, index: slice) -> "Conditioning":
        added = None if self.added_cond_kwargs is None else {k: v[index] for k, v in self.added_cond_kwargs.items()}
        return Conditioning(self.encoder_hidden_states[index], added)


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def encode_captions(pipe, captions: Sequence[str], *, device: torch.device, dtype: torch.dtype,
                    original_sizes: Sequence[tuple[int, int]] | None = None,
                    crop_top_lefts: Sequence[tuple[int, int]] | None = None,
                    target_size: tuple[int, int] | None = None) -> Conditioning:
    """Frozen text encoding of ``captions`` (no classifier-free guidance branch).

    SDXL also gets the pooled text embedding and ``add_time_ids`` = original size + crop corner + target size per
    image (Podell et al. 2023, Sec. 2.2), built by the pipeline's ``_get_add_time_ids``.
    """
    captions = list(captions)
    with torch.no_grad():
        if not is_sdxl(pipe):
            embeds, _ = pipe.encode_prompt(captions, device, 1, False)
            return Conditioning(embeds.to(dtype))
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        if original_sizes is None or crop_top_lefts is None or target_size is None:
            raise ValueError("SDXL conditioning needs original_sizes, crop_top_lefts and target_size per image")
        projection = pipe.text_encoder_2.config.projection_dim
        time_ids = torch.cat([pipe._get_add_time_ids(tuple(size), tuple(corner), tuple(target_size), dtype=dtype,
                                                     text_encoder_projection_dim=projection)
                              for size, corner in zip(original_sizes, crop_top_lefts)]).to(device)
        return Conditioning(embeds.to(dtype), {"text_embeds": pooled.to(dtype), "time_ids": time_ids})


def encode_latents(vae, pixels: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latents of pixels in [-1, 1]: a draw from the encoder's posterior times the scaling factor (as the
    diffusers / Diffusion-DPO training scripts take them)."""
    with torch.no_grad():
        dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        latents = dist.sample(generator=generator)
        shift = getattr(vae.config, "shift_factor", None)
        if shift is not None:
            latents = latents - shift
        return latents * vae.config.scaling_factor
