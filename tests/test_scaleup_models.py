"""scaleup.models: loading (offline errors), tiny and full-size builders, LoRA / soft prompts, seeded generation.

Tiny random models are built once per session, saved with save_pretrained and loaded back through the real loaders
under HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from scaleup.models.errors import ModelNotFoundError, ModelUnavailableError
from scaleup.models.loading import (
    FAMILIES,
    load_clip,
    load_dinov2,
    load_pipeline,
    load_sd15,
    load_sdxl,
    resolve_dtype,
    resolve_model_source,
)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1, no FAIRDIFF_* variables, and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in FAMILIES.values():
        monkeypatch.delenv(spec.env_var, raising=False)
    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    return cache


# ---------------------------------------------------------------------------------------------------------------
# 1. loading: resolution order and the one clear error


@pytest.mark.parametrize("loader, family", [(load_sd15, "sd15"), (load_sdxl, "sdxl"), (load_clip, "clip"),
                                            (load_dinov2, "dinov2")])
def test_missing_default_model_is_one_clear_error(offline, loader, family):
    spec = FAMILIES[family]
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        loader(cache_dir=offline)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert all(repr(i) in message for i in spec.hub_ids)  # every id tried, SD 1.5's mirror included
    assert spec.env_var in message and "`model` argument" in message and spec.layout in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelUnavailableError)


def test_nonexistent_id_fails_in_seconds_even_with_allow_download_when_offline(offline):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-model'.*HF_HUB_OFFLINE.*FAIRDIFF_SD15"):
        load_sd15("no-such-org/no-such-model", allow_download=True, cache_dir=offline)
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-dino'.*FAIRDIFF_DINOV2.*preprocessor_config"):
        load_dinov2("no-such-org/no-such-dino", allow_download=True, cache_dir=offline)
    assert time.perf_counter() - start < 2.0


def test_bad_local_folders_name_what_is_missing(offline, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match=r"not a folder.*model_index.json, unet/, vae/"):
        load_sd15(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"has no model_index.json"):
        load_sd15(empty)
    (empty / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                        "unet": ["diffusers", "UNet2DConditionModel"],
                                                        "safety_checker": [None, None]}))
    with pytest.raises(ModelNotFoundError, match=r"lacks unet/"):
        load_sd15(empty)
    monkeypatch.setenv("FAIRDIFF_CLIP", str(tmp_path / "no-clip"))
    with pytest.raises(ModelNotFoundError, match=r"environment variable FAIRDIFF_CLIP names .*no-clip"):
        load_clip()


def test_resolve_dtype_and_bad_arguments():
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("fp16") is torch.float16 and resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="torch_dtype must be"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="family must be one of"):
        resolve_model_source("sd3")
    with pytest.raises(ValueError, match="family must be 'sd15' or 'sdxl'"):
        load_pipeline("x", family="sd3")


# ---------------------------------------------------------------------------------------------------------------
# 3. tiny random models, saved and loaded back through the loaders


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    from scaleup.models.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"), seed=0)


def _fake_hub_cache(cache, repo_id: str, folder) -> None:
    """The Hugging Face cache layout (models--org--name/refs/main -> snapshots/<commit>/...) holding ``folder``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_tokenizer_is_a_real_clip_bpe(tmp_path):
    from scaleup.models.tiny import tiny_bpe_vocab, tiny_clip_tokenizer

    vocab, merges = tiny_bpe_vocab()
    tok = tiny_clip_tokenizer(tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file() and merges
    ids = tok("A photo of the face of a doctor, a person", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and max(ids) == tok.eos_token_id == len(vocab) - 1
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of the face of a doctor , a person"
    assert tok.tokenize("man") == ["man</w>"] and ("ma", "n</w>") in merges  # merges apply
    assert len(tok("zqxj")["input_ids"]) == 2 + 4  # unseen words fall back to bytes, never to <unk>


def test_tiny_builders_are_seeded_bit_identical_and_leave_the_global_rng_alone():
    from scaleup.models.tiny import tiny_clip_text_model, tiny_dinov2, tiny_unet, tiny_vae

    state = torch.random.get_rng_state()
    for build in (tiny_unet, tiny_vae, tiny_clip_text_model, lambda s: tiny_dinov2(s)[0]):
        assert _same_state(build(0), build(0))
        assert not _same_state(build(0), build(1))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_tiny_models_load_back_through_the_loaders_offline(offline, tiny_folders, monkeypatch):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPModel, Dinov2Model

    from scaleup.models.tiny import component_seeds, tiny_clip_text_model, tiny_unet

    pipe = load_sd15(tiny_folders["sd15"])
    assert type(pipe) is StableDiffusionPipeline and type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++" and pipe.scheduler.config.solver_order == 2
    _, text_seed, unet_seed = component_seeds(0, 3)
    assert _same_state(pipe.unet, tiny_unet(unet_seed)) and _same_state(pipe.text_encoder, tiny_clip_text_model(text_seed))
    xl = load_pipeline(tiny_folders["sdxl"], torch_dtype="bf16", scheduler="ddim")
    assert type(xl) is StableDiffusionXLPipeline and xl.unet.dtype == torch.bfloat16
    assert type(xl.scheduler).__name__ == "DDIMScheduler"
    clip, processor = load_clip(tiny_folders["clip"], torch_dtype=torch.float16)
    assert type(clip) is CLIPModel and clip.dtype == torch.float16 and not clip.training
    assert not any(p.requires_grad for p in clip.parameters()) and processor.tokenizer.model_max_length == 77
    dino, dino_processor = load_dinov2(tiny_folders["dinov2"])
    pixels = dino_processor(images=torch.rand(2, 3, 40, 48), return_tensors="pt", do_rescale=False).pixel_values
    assert type(dino) is Dinov2Model and pixels.shape == (2, 3, 32, 32) and dino(pixels).pooler_output.shape == (2, 32)
    monkeypatch.setenv("FAIRDIFF_SD15", str(tiny_folders["sd15"]))  # the environment variable, below the argument
    assert _same_state(load_sd15().unet, pipe.unet)
    with pytest.raises(ModelNotFoundError, match="no-such-org"):
        load_sd15("no-such-org/x")  # an explicit argument wins over the variable


def test_hub_ids_load_from_the_cache_and_sd15_falls_back_to_its_mirror(offline, tiny_folders):
    _fake_hub_cache(offline, "stable-diffusion-v1-5/stable-diffusion-v1-5", tiny_folders["sd15"])
    _fake_hub_cache(offline, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", tiny_folders["clip"])
    source = resolve_model_source("sd15", None, cache_dir=offline)
    assert (source.location, source.is_local, source.origin) == ("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                                                 False, "default")
    default = load_sd15(cache_dir=offline)
    by_old_id = load_sd15("runwayml/stable-diffusion-v1-5", cache_dir=offline)
    assert _same_state(default.unet, by_old_id.unet)
    clip, _ = load_clip(cache_dir=offline)
    assert clip.config.projection_dim == 16


def test_tiny_generation_is_fast(offline, tiny_folders):
    from scaleup.models.pipelines import generate

    for folder in (tiny_folders["sd15"], tiny_folders["sdxl"]):
        pipe = load_pipeline(folder)
        generate(pipe, "a photo", [0], num_inference_steps=2, height=32, width=32, progress=False)  # warm-up
        start = time.perf_counter()
        images = generate(pipe, "a photo", [1, 2], num_inference_steps=2, height=32, width=32, progress=False)
        assert time.perf_counter() - start < 1.0
        assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# 2. LoRA (peft, diffusers format) and soft prompts


def _probe_outputs(pipe) -> list[torch.Tensor]:
    """Text-encoder hidden states (both encoders for SDXL) and one U-Net noise prediction on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    ids = pipe.tokenizer(["a photo of the face of a doctor"], padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    sample = torch.randn(1, 4, 16, 16, generator=g)
    context = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=g)
    extra = {}
    if getattr(pipe, "text_encoder_2", None) is not None:
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=g),
                                      "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}
    with torch.no_grad():
        out = [pipe.text_encoder(ids)[0], pipe.unet(sample, torch.tensor([500]), context, **extra).sample]
        if getattr(pipe, "text_encoder_2", None) is not None:
            out.append(pipe.text_encoder_2(ids)[0])
    return out


@pytest.fixture(params=["installed", "transformers-integration"])
def lora_path(request, monkeypatch):
    """'installed': whatever this environment's transformers accepts (peft directly if it refuses the installed
    peft); 'transformers-integration': transformers' own add_adapter / load_adapter, i.e. pipe.load_lora_weights
    for every part, with transformers' minimum-peft gate lowered to the installed version."""
    if request.param == "transformers-integration":
        from importlib.metadata import version

        import transformers.integrations.peft as transformers_peft

        monkeypatch.setattr(transformers_peft, "MIN_PEFT_VERSION", version("peft"))
    return request.param


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_lora_save_load_round_trip_and_disabling_is_exact(offline, tiny_folders, tmp_path, family, lora_path):
    from scaleup.models.adapters import adapters_disabled, add_lora, load_lora, lora_parameters, save_lora

    pipe = load_pipeline(tiny_folders[family])
    base = _probe_outputs(pipe)
    params = add_lora(pipe, text_encoder_rank=4, unet_rank=3, alpha=6.0)  # alpha != rank: the scale must travel
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
    for module in [pipe.unet, *encoders]:  # only the adapters are trainable
        trainable = {id(p) for p in module.parameters() if p.requires_grad}
        assert trainable == {id(p) for p in lora_parameters(module)} and trainable
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # fresh LoRA has B = 0; perturb every A and B so the adapters change the outputs
        for p in params:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    tuned = _probe_outputs(pipe)
    assert all(not torch.allclose(a, b) for a, b in zip(base, tuned))
    with adapters_disabled(pipe.unet, *encoders):
        disabled = _probe_outputs(pipe)
    assert all(torch.equal(a, b) for a, b in zip(base, disabled))
    assert all(p.requires_grad for p in params) and all(torch.equal(a, b) for a, b in zip(tuned, _probe_outputs(pipe)))

    save_lora(pipe, tmp_path / "lora")
    fresh = load_pipeline(tiny_folders[family])
    load_lora(fresh, tmp_path / "lora")
    assert all(torch.equal(a, b) for a, b in zip(tuned, _probe_outputs(fresh)))
    fresh.disable_lora()  # diffusers' own switch reproduces the base model too
    assert all(torch.equal(a, b) for a, b in zip(base, _probe_outputs(fresh)))


def test_unet_lora_loads_with_plain_diffusers(offline, tiny_folders, tmp_path):
    from scaleup.models.adapters import add_unet_lora, save_lora

    pipe = load_sd15(tiny_folders["sd15"])
    with torch.no_grad():
        for p in add_unet_lora(pipe.unet, 2):
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    save_lora(pipe, tmp_path / "unet-lora")
    fresh = load_sd15(tiny_folders["sd15"])
    fresh.load_lora_weights(str(tmp_path / "unet-lora"))  # the public diffusers call, no wrapper
    assert torch.equal(_probe_outputs(pipe)[1], _probe_outputs(fresh)[1])


def test_lora_bad_input(offline, tiny_folders, tmp_path):
    from scaleup.models.adapters import add_lora, load_lora, save_lora

    pipe = load_sd15(tiny_folders["sd15"])
    with pytest.raises(ValueError, match="no LoRA adapter named 'default'"):
        save_lora(pipe, tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="pytorch_lora_weights.safetensors"):
        load_lora(pipe, tmp_path / "missing")
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        add_lora(pipe, text_encoder_rank=0)
    with pytest.raises(ValueError, match="at least one of"):
        add_lora(pipe, text_encoder_rank=None)


def test_soft_prompt_equals_the_same_tokens_written_in_the_prompt(offline, tiny_folders):
    """A soft prompt holding the input embeddings of the tokens of "young woman" is exactly the prompt prefix
    "young woman": same hidden states, same images (an independent computation through the plain pipeline)."""
    from scaleup.models.pipelines import generate
    from scaleup.models.soft_prompt import SoftPrompt, encode_with_soft_prompt

    pipe = load_sd15(tiny_folders["sd15"])
    tok, encoder = pipe.tokenizer, pipe.text_encoder
    words = tok("young woman").input_ids[1:-1]
    soft = SoftPrompt.from_token_ids(encoder, words)
    prompts = ["a photo of the face of a doctor", "a nurse"]
    with torch.no_grad():
        hidden = encode_with_soft_prompt(encoder, tok, prompts, soft)
        plain_ids = tok(["young woman " + p for p in prompts], padding="max_length", max_length=77,
                        return_tensors="pt").input_ids
        assert torch.equal(hidden, encoder(plain_ids)[0])
        assert torch.equal(encode_with_soft_prompt(encoder, tok, prompts, None),
                           pipe.encode_prompt(prompts, "cpu", 1, False)[0])
    kwargs = dict(num_inference_steps=2, height=32, width=32, progress=False)
    with_soft = generate(pipe, prompts, [3, 4], soft_prompt=soft, **kwargs)
    assert torch.equal(with_soft, generate(pipe, ["young woman " + p for p in prompts], [3, 4], **kwargs))
    assert not torch.allclose(with_soft, generate(pipe, prompts, [3, 4], **kwargs))


def test_soft_prompt_round_trip_and_gradient(offline, tiny_folders, tmp_path):
    from safetensors import safe_open

    from scaleup.models.soft_prompt import SOFT_PROMPT_FILE, SoftPrompt, encode_with_soft_prompt

    pipe = load_sd15(tiny_folders["sd15"])
    pipe.text_encoder.requires_grad_(False)
    soft = SoftPrompt.from_text_encoder(pipe.text_encoder, 5, seed=3)  # seed 000 Table 1: five soft tokens
    assert soft.num_tokens == 5 and soft.hidden_size == 32
    with torch.no_grad():
        soft.embeddings.add_(torch.randn(soft.embeddings.shape, generator=torch.Generator().manual_seed(0)))
    path = soft.save(tmp_path / "soft")
    assert path == tmp_path / "soft" / SOFT_PROMPT_FILE
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["num_tokens"] == "5" and f.metadata()["position"] == "prefix"
    loaded = SoftPrompt.load(tmp_path / "soft")
    assert torch.equal(loaded.embeddings, soft.embeddings)
    prompts = ["a photo of a pilot"]
    with torch.no_grad():
        assert torch.equal(encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, prompts, soft),
                           encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, prompts, loaded))
    encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, prompts, loaded).square().sum().backward()
    assert loaded.embeddings.grad is not None and loaded.embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in pipe.text_encoder.parameters())
    # the hook is gone afterwards: plain encoding is unchanged
    assert not pipe.text_encoder.get_input_embeddings()._forward_hooks
    with pytest.raises(ModelNotFoundError, match=SOFT_PROMPT_FILE):
        SoftPrompt.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="num_tokens must be a positive integer"):
        SoftPrompt.from_text_encoder(pipe.text_encoder, 0)
    with pytest.raises(ValueError, match="width 8"):
        encode_with_soft_prompt(pipe.text_encoder, pipe.tokenizer, prompts, SoftPrompt(torch.zeros(2, 8)))


# ---------------------------------------------------------------------------------------------------------------
# 4. full-size architectures with random weights (meta device only here)


def test_full_size_architectures_have_the_published_parameter_counts():
    """SD 1.5: U-Net 859,520,964, VAE 83,653,863, CLIP text 123,060,480 (forums.fast.ai/t/101515, counted on the
    loaded checkpoint); SDXL base: U-Net 2.567B (paper Table 1 "2.6B"; 5.14 GB in fp16 = 2.57e9 half floats),
    text encoders 123.06M + 694.66M = the paper's 817M."""
    from scaleup.models.full_size import count_parameters, full_size_sd15_pipeline, full_size_sdxl_pipeline

    sd = full_size_sd15_pipeline(device="meta")
    assert (count_parameters(sd.unet), count_parameters(sd.vae), count_parameters(sd.text_encoder)) == (
        859_520_964, 83_653_863, 123_060_480)
    assert all(p.is_meta for p in sd.unet.parameters()) and sd.vae_scale_factor == 8
    xl = full_size_sdxl_pipeline(device="meta", torch_dtype="fp16")
    assert round(count_parameters(xl.unet) / 1e9, 2) == 2.57 and xl.unet.dtype == torch.float16
    assert 817e6 <= count_parameters(xl.text_encoder) + count_parameters(xl.text_encoder_2) < 818e6
    assert count_parameters(xl.vae) == 83_653_863 and xl.unet.config.cross_attention_dim == 2048


# ---------------------------------------------------------------------------------------------------------------
# 5. seeded, batched generation


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_an_image_depends_only_on_its_seed(offline, tiny_folders, family):
    from scaleup.models.pipelines import default_size, generate

    pipe = load_pipeline(tiny_folders[family])
    assert default_size(pipe) == 32
    kwargs = dict(num_inference_steps=3, guidance_scale=7.5, progress=False)
    prompts = ["a photo of the face of a doctor", "a nurse", "a pilot"]
    together = generate(pipe, prompts, [5, 6, 7], batch_size=3, **kwargs)
    assert together.shape == (3, 3, 32, 32) and together.dtype == torch.float32
    assert 0 <= together.min() and together.max() <= 1
    one_by_one = generate(pipe, prompts, [5, 6, 7], batch_size=1, **kwargs)
    reordered = generate(pipe, prompts[::-1], [7, 6, 5], batch_size=2, **kwargs)
    torch.testing.assert_close(one_by_one, together, rtol=0, atol=1e-5)
    torch.testing.assert_close(reordered.flip(0), together, rtol=0, atol=1e-5)
    assert torch.equal(generate(pipe, prompts, [5, 6, 7], batch_size=3, **kwargs), together)  # reproducible
    assert not torch.allclose(generate(pipe, prompts, [5, 6, 8], batch_size=3, **kwargs)[2], together[2])


def test_generate_draws_what_diffusers_draws_from_one_generator_per_image(offline, tiny_folders):
    from scaleup.models.pipelines import generate

    pipe = load_sd15(tiny_folders["sd15"])
    seeds = [11, 12]
    ours = generate(pipe, "a photo of a chef", seeds, num_inference_steps=4, height=32, width=32, progress=False)
    plain = pipe("a photo of a chef", num_inference_steps=4, height=32, width=32, output_type="pt",
                 num_images_per_prompt=2, generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    # the same computation up to float32 rounding (the pipeline and generate may order a few reductions differently)
    torch.testing.assert_close(ours, plain, rtol=0, atol=1e-6)


def test_generate_in_bf16_shares_the_float32_noise(offline, tiny_folders, capsys):
    from scaleup.models.pipelines import generate, generate_batches, seed_latents

    pipe = load_sd15(tiny_folders["sd15"])
    half = load_sd15(tiny_folders["sd15"], torch_dtype="bf16")
    assert torch.equal(seed_latents([3], (4, 16, 16), dtype=torch.bfloat16),
                       seed_latents([3], (4, 16, 16)).to(torch.bfloat16))
    a = generate(pipe, "a nurse", [3, 4], num_inference_steps=2, desc="fp32")
    b = generate(half, "a nurse", [3, 4], num_inference_steps=2, desc="bf16")
    assert b.dtype == torch.float32 and (a - b).abs().mean() < 0.05  # the same images up to bf16 rounding
    assert "bf16" in capsys.readouterr().err  # the progress bar
    batches = list(generate_batches(pipe, "a nurse", [1, 2, 3], batch_size=2, num_inference_steps=2,
                                    progress=False))
    assert [idx for idx, _ in batches] == [[0, 1], [2]] and batches[1][1].shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts=["a", "b"], seeds=[1]), "same length"),
    (dict(seeds=[-1]), r"seeds must be integers in \[0, 2\*\*63\)"),
    (dict(seeds=[1.5]), "seeds must be integers"),
    (dict(seeds=[]), "seeds must not be empty"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(num_inference_steps=0), "num_inference_steps must be a positive integer"),
    (dict(height=30), "height must be a multiple of 8"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
    (dict(prompts=[1]), "prompts must be a string or a sequence of strings"),
])
def test_generate_rejects_bad_input_before_any_compute(offline, tiny_folders, kwargs, match):
    from scaleup.models.pipelines import generate

    pipe = load_sd15(tiny_folders["sd15"])
    call = dict(prompts="a photo", seeds=[1], progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(pipe, call.pop("prompts"), call.pop("seeds"), **call)


def test_generate_batches_validates_at_the_call(offline, tiny_folders):
    from scaleup.models.pipelines import generate_batches

    with pytest.raises(ValueError, match="batch_size"):
        generate_batches(load_sd15(tiny_folders["sd15"]), "a photo", [1], batch_size=-1)  # no next() needed
