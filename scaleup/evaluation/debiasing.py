"""Inference-time debiasing baselines of the evaluation job: prompt augmentation and Fair Diffusion's semantic guidance.

Both ask each image for one class of the attribute, drawn at random from the target distribution (uniform unless
given) by :func:`requested_class`, a function of the image's seed alone: an image's request does not depend on the
batch size, the batch position or the other prompts, and the image keeps the noise of its seed, so "with" and
"without" the baseline compare the same noise.

- Prompt augmentation (the ideal when the attribute can be named: Fair Diffusion's and PopAlign's identity-augmented
  prompts): the image is generated from ``augment_template`` with ``{prompt}`` and ``{cls}`` filled in, e.g.
  "{prompt} in {cls} ink" -> "a handwritten seven in blue ink", or "{prompt}, {cls}" for faces.
- Semantic guidance (Fair Diffusion, Friedrich et al. 2023, on SEGA, Brack et al. 2023): the image is generated from
  its prompt with one edit prompt per class, ``edit_template`` with ``{cls}`` (e.g. "{cls} person", "{cls} ink"),
  guided toward the requested class's edit and away from the others'
  (:func:`theory.semantic_guidance.semantic_guidance`, :func:`theory.semantic_guidance.fair_diffusion_scales`).

``class_phrases`` replaces the class names in both templates (e.g. "woman,man" for female, male).
"""

from __future__ import annotations

import hashlib
import math
import string
from typing import Sequence

import numpy as np
import torch

#: Fair Diffusion's published settings (ml-research/Fair-Diffusion README: s_e = 4, lambda = 0.95, warm-up 10 of
#: SD's 50 steps; momentum 0.3 / beta 0.6, not implemented here). The warm-up is kept at the same share of the chain:
#: 10 of 50 is 4 of the evaluation's default 20 DPM-Solver steps.
FAIR_DIFFUSION_EDIT_SCALE = 4.0
FAIR_DIFFUSION_THRESHOLD = 0.95
FAIR_DIFFUSION_WARMUP_SHARE = 10 / 50

_REQUEST_TAG = int.from_bytes(hashlib.sha256(b"fairdiff requested class").digest()[:8], "little")


def default_warmup_steps(num_inference_steps: int) -> int:
    """Fair Diffusion's warm-up share of the chain in steps: round(0.2 n) (4 of 20, 10 of 50)."""
    return int(round(FAIR_DIFFUSION_WARMUP_SHARE * num_inference_steps))


def requested_class(seed: int, target: Sequence[float]) -> int:
    """The class asked of the image of ``seed``: a draw from ``target`` on a stream independent of the image's noise.

    The stream is ``numpy.random.SeedSequence([seed, tag])``, a fixed tag keeping it apart from the noise that the
    same seed drives in ``torch.Generator``.
    """
    p = np.asarray(target, dtype=np.float64)
    u = np.random.default_rng(np.random.SeedSequence([int(seed), _REQUEST_TAG])).random()
    # inverse CDF; the clip guards the last class against a cumulative sum that rounds below 1
    return int(min(np.searchsorted(np.cumsum(p) / p.sum(), u, side="right"), len(p) - 1))


def template_fields(template: str) -> set[str]:
    """The ``{name}`` fields of a format string (ValueError on a malformed one)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(option: str, template: str, required: Sequence[str], example: str) -> None:
    """One clear ValueError unless ``template`` is a format string with exactly the fields ``required``."""
    try:
        fields = template_fields(template)
    except ValueError as err:
        raise ValueError(f"{option} {template!r} is not a valid template ({err}); expected e.g. {example!r}") from None
    if fields != set(required):
        wanted = " and ".join("{" + f + "}" for f in required)
        raise ValueError(f"{option} must contain {wanted} and no other field, e.g. {example!r}; got {template!r}")


def fill(template: str, cls: str, prompt: str | None = None) -> str:
    return template.format(cls=cls) if prompt is None else template.format(prompt=prompt, cls=cls)


def generate_with_semantic_guidance(pipe, prompts: Sequence[str], seeds: Sequence[int], requested: Sequence[int],
                                    edit_prompts: Sequence[str], *, edit_scale: float, threshold: float,
                                    warmup_steps: int, num_inference_steps: int, guidance_scale: float,
                                    height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Images in [0, 1] of ``prompts[i]`` from ``seeds[i]`` with Fair Diffusion's semantic guidance toward
    ``edit_prompts[requested[i]]`` and away from the other edit prompts (SD 1.x/2.x pipelines).

    The chain is :func:`scaleup.sampling.sample_latents` on the pipeline's own U-Net, scheduler and VAE, with the
    noise :func:`scaleup.models.pipelines.generate` draws for the same seeds; with ``edit_scale = 0`` it gives the
    pipeline's images (up to float rounding). Classifier-free guidance is off at ``guidance_scale <= 1``, as in the
    pipeline.
    """
    from scaleup.models.pipelines import default_size, latent_shape, seed_latents
    from scaleup.sampling import SemanticEdits, decode_latents, sample_latents
    from theory.sampler_gradient import AdjustedGradient
    from theory.semantic_guidance import fair_diffusion_scales

    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ValueError("edit_template (semantic guidance) supports SD 1.x/2.x pipelines only, not SDXL")
    if len(prompts) != len(seeds) or len(requested) != len(seeds):
        raise ValueError("prompts, seeds and requested classes must have one entry per image")
    if not math.isfinite(edit_scale):
        raise ValueError(f"edit_scale must be finite; got {edit_scale!r}")
    device, dtype = pipe._execution_device, pipe.unet.dtype
    height = default_size(pipe) if height is None else height
    width = default_size(pipe) if width is None else width
    n = len(seeds)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(list(prompts), device, 1, True, negative_prompt=[""] * n)
        edits = pipe.encode_prompt(list(edit_prompts), device, 1, False)[0]
        scales = torch.tensor(fair_diffusion_scales(requested, len(edit_prompts), edit_scale), dtype=torch.float64)
        semantic = SemanticEdits(embeddings=[e.expand(n, *e.shape) for e in edits], scales=scales,
                                 threshold=threshold, warmup_steps=warmup_steps)
        z_T = seed_latents(seeds, latent_shape(pipe, height, width), dtype=dtype, device=device)
        z0 = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, z_T, num_inference_steps,
                            guidance_scale if guidance_scale > 1 else 1.0, AdjustedGradient("exact"),
                            checkpoint=False, edits=semantic)
        return decode_latents(pipe.vae, z0, checkpoint=False).float().cpu()
