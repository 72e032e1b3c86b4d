"""L_img with the user's own image embedder (aDFT ``--image-embedder``), the evaluation's same-noise similarity under
it, the testbed's stroke-shape embedder, and the aDFT job's ``--gradient exact`` / AdamW flags."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from scaleup.jobs.adft.config import AdftConfig, plan_job
from scaleup.testbed import data
from scaleup.testbed.classifiers import shape_embedder
from scaleup.testbed.paths import testbed_path as _testbed_path

ROOT = Path(__file__).resolve().parent.parent
TB = _testbed_path()
SHAPE = "scaleup.testbed.classifiers:shape_embedder"


def _testbed_config(tmp_path, **overrides) -> AdftConfig:
    base = AdftConfig(attribute="ink:red,blue", pretrained_model=str(TB),
                      classifier="scaleup.testbed.classifiers:ink_training_classifier", detector="whole-image",
                      crop_size=16, resolution=16, lambda_img={"ink": [8.0, 0.2, 0.2]}, image_embedder=SHAPE,
                      lambda_face=0.0, prompts=(str(TB / "prompts" / "training.txt"),),
                      test_prompts=(str(TB / "prompts" / "heldout-template.txt"),), batch_size=4, iterations=1,
                      learning_rate=1e-3, lora_rank=4, output_dir=str(tmp_path / "run"))
    return replace(base, **overrides)


def test_shape_embedder_is_blind_to_the_ink_and_sees_the_stroke():
    digits = data.load_digits_16()
    ink = torch.as_tensor(digits.ink[:2])  # a zero and a one
    red = data.render(ink, torch.zeros(2))
    blue = data.render(ink, torch.ones(2))
    embed = shape_embedder()
    e_red, e_blue = embed(red), embed(blue)
    # the same strokes in the other ink: the same embedding (ink_intensity is 1 - the smallest channel)
    torch.testing.assert_close(e_red, e_blue, atol=1e-5, rtol=0)
    cos_same = torch.nn.functional.cosine_similarity(e_red, e_blue, dim=1)
    cos_other = torch.nn.functional.cosine_similarity(e_red[:1], e_red[1:], dim=1)
    assert torch.all(cos_same > 0.9999) and float(cos_other) < 0.5
    # differentiable: L_img's gradient reaches the pixels
    x = red.clone().requires_grad_(True)
    (1 - torch.nn.functional.cosine_similarity(embed(x), e_red.detach().roll(1, 0), dim=1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_own_image_embedder_needs_neither_clip_nor_dinov2(tmp_path):
    plan = plan_job(_testbed_config(tmp_path))
    assert plan.image_semantics and not plan.needs_clip and not plan.needs_dinov2
    # L_img off: no embedder at all, whichever is named
    plan = plan_job(_testbed_config(tmp_path, lambda_img={"ink": [0.0, 0.0, 0.0]}))
    assert not plan.image_semantics


@pytest.mark.parametrize("spec, message", [
    ("resnet", "image_embedder 'resnet' is not known"),
    ("scaleup.testbed.classifiers:no_such_factory", "no_such_factory"),
])
def test_bad_image_embedder_is_refused_before_anything_loads(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message) as err:
        plan_job(_testbed_config(tmp_path, image_embedder=spec))
    assert str(err.value).startswith("image_embedder")


@pytest.mark.parametrize("field, value", [("adam_beta1", 1.0), ("adam_beta2", -0.1), ("adam_epsilon", 0.0),
                                          ("gradient", "approximate")])
def test_optimiser_and_gradient_settings_are_checked(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        plan_job(_testbed_config(tmp_path, **{field: value}))


def test_semantics_distance_with_own_embedder_is_one_minus_cosine():
    from scaleup.jobs.adft.step import semantics_distance

    gen = torch.Generator().manual_seed(0)
    x, o = torch.randn(5, 7, generator=gen, dtype=torch.float64), torch.randn(5, 7, generator=gen, dtype=torch.float64)
    got = semantics_distance(((SHAPE, None),), [x], [o])
    expected = 1 - (x * o).sum(1) / (x.norm(dim=1) * o.norm(dim=1))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # the paper's two embedders: eq. 7's sum of both cosine distances
    both = semantics_distance((("clip", None), ("dinov2", None)), [x, o], [o, x])
    torch.testing.assert_close(both, 2 * expected, rtol=0, atol=1e-12)


def test_adft_step_uses_the_own_embedder_and_the_exact_gradient(tmp_path):
    from accelerate import Accelerator

    from scaleup.jobs.adft.components import build_components
    from scaleup.jobs.adft.step import AdftStep

    config = _testbed_config(tmp_path, gradient="exact")
    plan = plan_job(config)
    components = build_components(config, plan, "cpu")
    assert [name for name, _ in components.semantics] == [SHAPE] and components.clip is None
    step = AdftStep(Accelerator(cpu=True), config, plan, components, ["a handwritten one"])
    assert step.adjusted_gradient(5).mode == "exact"
    adjusted = AdftStep(Accelerator(cpu=True), replace(config, gradient="adjusted"), plan, components,
                        ["a handwritten one"])
    assert adjusted.adjusted_gradient(5).mode == "adjusted"


def test_evaluation_similarity_under_own_embedder(tmp_path):
    """A LoRA whose up-projections are zero draws the original's images: similarity 1; a trained one: below 1."""
    from experiments.testbed import testbed_eval_config
    from scaleup.evaluate import run_eval, validate
    from scaleup.models import load_pipeline
    from scaleup.models.adapters import add_text_encoder_lora, save_lora

    pipe = load_pipeline(str(TB), torch_dtype=torch.float32, device="cpu")
    add_text_encoder_lora(pipe.text_encoder, rank=2)  # peft's initialisation: up-projections B = 0
    save_lora(pipe, tmp_path / "zero")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a handwritten one\n")
    common = dict(prompts=str(prompts), guidance_scale=7.5, images_per_prompt=4, num_inference_steps=6,
                  batch_size=4, seed=3, grid_images=0, compare_original=True, image_embedder=SHAPE)
    zero = run_eval(testbed_eval_config(out=tmp_path / "e0", lora=str(tmp_path / "zero"), **common), progress=False)
    assert zero["overall"]["similarity"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert zero["models"]["image_embedder"] == SHAPE and "dinov2" not in zero["models"]
    with torch.no_grad():  # a visible change of the text encoder's output projection's LoRA
        for name, p in pipe.text_encoder.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    save_lora(pipe, tmp_path / "moved")
    moved = run_eval(testbed_eval_config(out=tmp_path / "e1", lora=str(tmp_path / "moved"), **common),
                     progress=False)
    assert moved["overall"]["similarity"]["mean"] < 0.999
    with pytest.raises(ValueError, match="--compare-original"):
        validate(testbed_eval_config(out=tmp_path / "e2", **{**common, "compare_original": False}))


def test_soft_prompt_as_textual_inversion_gives_the_same_images_in_plain_diffusers(tmp_path):
    """The soft prompt's textual-inversion export, loaded with ``pipe.load_textual_inversion`` (no fairdiff code),
    draws exactly fairdiff's soft-prompted images from the same noise (and not the plain prompt's)."""
    from diffusers import StableDiffusionPipeline

    from scaleup.models import load_pipeline
    from scaleup.models.pipelines import generate
    from scaleup.models.soft_prompt import TEXTUAL_INVERSION_TOKEN, SoftPrompt

    pipe = load_pipeline(str(TB), torch_dtype=torch.float32, device="cpu")
    soft = SoftPrompt.from_text_encoder(pipe.text_encoder, 5, seed=3)
    with torch.no_grad():
        soft.embeddings.add_(torch.randn(soft.embeddings.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    path = soft.save_textual_inversion(tmp_path)
    kwargs = dict(num_inference_steps=8, guidance_scale=7.5, batch_size=2, progress=False)
    ours = generate(pipe, "a handwritten two", [1, 2], soft_prompt=soft, **kwargs)
    plain = StableDiffusionPipeline.from_pretrained(str(TB), safety_checker=None, requires_safety_checker=False)
    plain.load_textual_inversion(str(path), token=TEXTUAL_INVERSION_TOKEN)
    theirs = generate(plain, f"{TEXTUAL_INVERSION_TOKEN} a handwritten two", [1, 2], **kwargs)
    assert torch.equal(ours, theirs)
    assert (ours - generate(pipe, "a handwritten two", [1, 2], **kwargs)).abs().max() > 0.05
