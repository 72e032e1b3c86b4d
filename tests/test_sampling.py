"""The differentiable SD chain of scaleup.sampling reproduces StableDiffusionPipeline's images, and its adjusted
gradient reaches a text-encoder LoRA."""

from __future__ import annotations

import pytest
import torch

from scaleup.models.adapters import add_lora
from scaleup.models.tiny import tiny_sd_pipeline
from scaleup.sampling import decode_latents, sample_latents
from theory.sampler_gradient import AdjustedGradient, scheduler_stepper, unrolled_coefficients


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=0)


def _embeddings(pipe, prompts):
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_chain_without_gradient_equals_the_pipeline(pipe, guidance):
    n_steps = 4
    z_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cond, uncond = _embeddings(pipe, ["a photo of a nurse"] * 2), _embeddings(pipe, [""] * 2)
        reference = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=z_T.clone(),
                         num_inference_steps=n_steps, guidance_scale=guidance, output_type="pt").images
        z0 = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, z_T, n_steps, guidance,
                            AdjustedGradient("exact"), checkpoint=False)
        images = decode_latents(pipe.vae, z0)
    torch.testing.assert_close(images, reference, rtol=1e-5, atol=1e-5)


def test_adjusted_gradient_reaches_the_text_encoder_lora_and_checkpointing_keeps_it(pipe):
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    params = add_lora(pipe, text_encoder_rank=4)
    for p in params:  # LoRA B starts at zero; make the adapter do something
        torch.nn.init.normal_(p, std=0.05)
    n_steps = 3
    a = -unrolled_coefficients(scheduler_stepper(pipe.scheduler, n_steps), n_steps)[0]
    z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))

    def grads(checkpoint):
        for p in params:
            p.grad = None
        cond, uncond = _embeddings(pipe, ["a photo of a judge"]), _embeddings(pipe, [""])
        z0 = sample_latents(pipe.unet, pipe.scheduler, cond, uncond, z_T, n_steps, 7.5,
                            AdjustedGradient("adjusted", a), checkpoint=checkpoint)
        decode_latents(pipe.vae, z0, checkpoint=checkpoint).mean().backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    plain = grads(False)
    assert plain.abs().sum() > 0
    torch.testing.assert_close(grads(True), plain, rtol=1e-4, atol=1e-7)
    frozen = [p for n, p in pipe.unet.named_parameters()] + list(pipe.vae.parameters())
    assert all(p.grad is None for p in frozen)
