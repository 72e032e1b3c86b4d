"""Seeded, batched generation shared by the evaluation and training jobs.

Every image is drawn from its own seed: its initial latent is ``torch.randn`` of one CPU ``torch.Generator`` seeded
with that seed (float32, then cast), exactly what a diffusers pipeline draws when given ``generator=[...]`` with one
CPU generator per image. An image therefore depends on its prompt and seed only, not on its batch position, batch
size, device or dtype of the noise draw; the "original" and finetuned images of seed 000 [0107] (Table 1's CLIP-I
and DINO) share their noise by sharing their seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from numbers import Integral

import torch
from tqdm.auto import tqdm


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) and not hasattr(seeds, "__len__"):
        raise ValueError(f"seeds must be a sequence of integers; got {type(seeds).__name__}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, Integral) or not 0 <= int(s) < 2 ** 63:
            raise ValueError(f"seeds must be integers in [0, 2**63); got {s!r}")
    return [int(s) for s in seeds]


def seed_latents(seeds: Sequence[int], shape: tuple[int, int, int], *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Initial noise, one (C, h, w) draw per seed from its own CPU generator (float32), stacked to (B, C, h, w)."""
    return _draw_latents(seeded_generators(seeds), shape).to(device=device, dtype=dtype)


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per seed, seeded with it."""
    return [torch.Generator("cpu").manual_seed(s) for s in _check_seeds(seeds)]


def _draw_latents(generators: list[torch.Generator], shape: tuple[int, int, int]) -> torch.Tensor:
    # diffusers' randn_tensor draws (1, C, h, w) from each generator of a list in turn; so does this, in float32.
    return torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators])


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    """(C, h, w) of the latents of an image of ``height`` x ``width`` pixels for this pipeline."""
    f = pipe.vae_scale_factor
    return (pipe.unet.config.in_channels, height // f, width // f)


def default_size(pipe) -> int:
    """The pipeline's native resolution: the U-Net's sample size times the VAE factor (512 SD 1.5, 1024 SDXL)."""
    return int(pipe.unet.config.sample_size) * pipe.vae_scale_factor


def _is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def generate_batches(pipe, prompts: str | Sequence[str], seeds: Sequence[int], *, num_inference_steps: int = 20,
                     guidance_scale: float = 7.5, height: int | None = None, width: int | None = None,
                     batch_size: int = 8, negative_prompt: str | None = None, soft_prompt=None,
                     progress: bool = True, desc: str = "generating") -> Iterator[tuple[list[int], torch.Tensor]]:
    """Like :func:`generate`, yielding ``(indices, images)`` per batch so callers can write images as they come."""
    seeds = _check_seeds(seeds)
    if isinstance(prompts, str):
        prompts = [prompts] * len(seeds)
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a string or a sequence of strings")
    if len(prompts) != len(seeds):
        raise ValueError(f"prompts and seeds must have the same length (one seed per image); got {len(prompts)} "
                         f"prompts and {len(seeds)} seeds")
    num_inference_steps = _check_positive_int("num_inference_steps", num_inference_steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0; got {guidance_scale!r}")
    height = default_size(pipe) if height is None else _check_positive_int("height", height)
    width = default_size(pipe) if width is None else _check_positive_int("width", width)
    for name, size in (("height", height), ("width", width)):
        if size % 8:  # the diffusers pipelines refuse these too, but only after encoding the prompts
            raise ValueError(f"{name} must be a multiple of 8; got {size}")
    if soft_prompt is not None and _is_sdxl(pipe):
        raise ValueError("soft_prompt is supported for single-text-encoder (SD 1.x/2.x) pipelines only")

    # validated above, generated below: bad input fails at the call, not at the first next()
    return _batches(pipe, prompts, seeds, num_inference_steps, guidance_scale, height, width, batch_size,
                    negative_prompt, soft_prompt, progress, desc)


def _batches(pipe, prompts, seeds, num_inference_steps, guidance_scale, height, width, batch_size, negative_prompt,
             soft_prompt, progress, desc) -> Iterator[tuple[list[int], torch.Tensor]]:
    device = pipe._execution_device
    dtype = pipe.unet.dtype
    shape = latent_shape(pipe, height, width)
    cfg = guidance_scale > 1.0
    pipe.set_progress_bar_config(disable=True)  # one bar over images here instead of one per batch
    bar = tqdm(total=len(seeds), desc=desc, unit="img", disable=not progress)
    for start in range(0, len(seeds), batch_size):
        idx = list(range(start, min(start + batch_size, len(seeds))))
        batch_seeds = [seeds[i] for i in idx]
        generators = seeded_generators(batch_seeds)
        latents = _draw_latents(generators, shape).to(device=device, dtype=dtype)
        # The same generators, advanced past the latents, drive any stochastic scheduler step (SDE, ancestral), as
        # they would inside the pipeline.
        kwargs = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=height,
                      width=width, output_type="pt", latents=latents, generator=generators)
        batch_prompts = [prompts[i] for i in idx]
        if soft_prompt is not None:
            from scaleup.models.soft_prompt import encode_with_soft_prompt

            with torch.no_grad():
                kwargs["prompt_embeds"] = encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, batch_prompts,
                                                                  soft_prompt).to(dtype)
                if cfg:
                    neg, _ = pipe.encode_prompt([negative_prompt or ""] * len(idx), device, 1, False)
                    kwargs["negative_prompt_embeds"] = neg
        else:
            kwargs["prompt"] = batch_prompts
            if negative_prompt is not None:
                kwargs["negative_prompt"] = [negative_prompt] * len(idx)
        with torch.no_grad():
            images = pipe(**kwargs).images
        bar.update(len(idx))
        yield idx, images.float().cpu()
    bar.close()


def generate(pipe, prompts: str | Sequence[str], seeds: Sequence[int], *, num_inference_steps: int = 20,
             guidance_scale: float = 7.5, height: int | None = None, width: int | None = None, batch_size: int = 8,
             negative_prompt: str | None = None, soft_prompt=None, progress: bool = True,
             desc: str = "generating") -> torch.Tensor:
    """Images of ``prompts[i]`` from ``seeds[i]``, as float32 tensors in [0, 1] of shape (B, 3, H, W), on the CPU.

    Parameters
    ----------
    pipe : a diffusers SD 1.x/2.x or SDXL text-to-image pipeline (its scheduler is used as set; see
        :func:`scaleup.models.schedulers.set_scheduler`; the loaders default to DPM-Solver++(2M)).
    prompts : one prompt for every seed, or one per seed.
    seeds : one integer per image; the image depends on its prompt and seed only (module docstring).
    num_inference_steps, guidance_scale : sampler steps and classifier-free guidance weight (seed 000 [0120]: 20-25,
        7.5); guidance_scale <= 1 disables the unconditional branch.
    height, width : pixels, multiples of 8; None: the pipeline's native size (:func:`default_size`).
    batch_size : images per pipeline call (memory only: the images do not depend on it up to float rounding).
    negative_prompt : the unconditional branch's prompt (default: the empty prompt).
    soft_prompt : a :class:`scaleup.models.soft_prompt.SoftPrompt` prefixed to every prompt (SD 1.x/2.x only).
    progress : show a tqdm bar over images.
    """
    batches = generate_batches(pipe, prompts, seeds, num_inference_steps=num_inference_steps,
                               guidance_scale=guidance_scale, height=height, width=width, batch_size=batch_size,
                               negative_prompt=negative_prompt, soft_prompt=soft_prompt, progress=progress, desc=desc)
    return torch.cat([images for _, images in batches])
