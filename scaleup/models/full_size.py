"""Full-size Stable Diffusion 1.5 and SDXL base architectures with random weights, for speed and memory benchmarks.

The configurations are those of the published checkpoints' config.json / model_index.json
(runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0), written in code so that no download
is needed. Parameter counts (checked by the tests on the ``meta`` device):

- SD 1.5: U-Net 859,520,964, VAE 83,653,863, CLIP ViT-L/14 text encoder 123,060,480 (the counts reported for the
  loaded checkpoint in "Stable Diffusion Parameter Budget Allocation", forums.fast.ai/t/101515);
- SDXL base: U-Net 2,567,463,684 ("2.6B", SDXL paper Table 1; 5.14 GB in fp16), text encoders 123,060,480 and
  694,659,840 (OpenCLIP ViT-bigG/14 text tower with projection; together the paper's 817M).

The tokenizer is the tiny BPE tokenizer of :mod:`scaleup.models.tiny` with CLIP's 77-token context: token ids only
index the embedding table, so speed and memory are those of the real model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scaleup.models.tiny import component_seeds
from scaleup.models.loading import DeviceLike, DTypeLike, resolve_dtype

_SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

SD15_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, center_input_sample=False)

SD15_VAE_CONFIG = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215)

# openai/clip-vit-large-patch14's text tower as SD 1.5 ships it (legacy special-token ids as in its config.json)
SD15_TEXT_ENCODER_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1)

SD15_SCHEDULER_CONFIG = dict(**_SD_BETAS, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                             clip_sample=False)  # PNDMScheduler's published config

SDXL_UNET_CONFIG = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1)

SDXL_VAE_CONFIG = dict(SD15_VAE_CONFIG, sample_size=1024, scaling_factor=0.13025, force_upcast=True)

SDXL_TEXT_ENCODER_CONFIG = SD15_TEXT_ENCODER_CONFIG

# OpenCLIP ViT-bigG/14's text tower (CLIPTextModelWithProjection in the published text_encoder_2/config.json)
SDXL_TEXT_ENCODER_2_CONFIG = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1280,
    bos_token_id=0, eos_token_id=2, pad_token_id=1)

SDXL_SCHEDULER_CONFIG = dict(**_SD_BETAS, steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
                             use_karras_sigmas=False, prediction_type="epsilon")  # EulerDiscreteScheduler's


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())


def _build(device: DeviceLike, dtype: torch.dtype, seed: int, make):
    # Built directly on the target device (meta: no memory at all); seeded without touching the global RNG.
    device = torch.device(device if device is not None else "cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(seed)
        with torch.device(device):
            module = make()
    return (module if dtype == torch.float32 else module.to(dtype=dtype)).eval()


def _text_encoder(config: dict, *, with_projection: bool, device, dtype, seed):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return _build(device, dtype, seed, lambda: cls(CLIPTextConfig(**config)))


def _full_tokenizer(folder: str | Path | None):
    from scaleup.models.tiny import tiny_clip_tokenizer

    return tiny_clip_tokenizer(folder)


def full_size_sd15_pipeline(*, device: DeviceLike = "meta", torch_dtype: DTypeLike = None, seed: int = 0,
                            scheduler: str = "dpm++2m", tokenizer_folder: str | Path | None = None):
    """A ``StableDiffusionPipeline`` with SD 1.5's exact architecture and random weights (no safety checker).

    ``device="meta"`` allocates nothing (architecture and parameter counts only); ``"cuda"`` with
    ``torch_dtype="fp16"`` builds it on the GPU for benchmarks (about 2 GB).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from scaleup.models.schedulers import make_scheduler

    dtype = resolve_dtype(torch_dtype)
    vae_seed, text_seed, unet_seed = component_seeds(seed, 3)
    return StableDiffusionPipeline(
        vae=_build(device, dtype, vae_seed, lambda: AutoencoderKL(**SD15_VAE_CONFIG)),
        text_encoder=_text_encoder(SD15_TEXT_ENCODER_CONFIG, with_projection=False, device=device, dtype=dtype,
                                   seed=text_seed),
        tokenizer=_full_tokenizer(tokenizer_folder),
        unet=_build(device, dtype, unet_seed, lambda: UNet2DConditionModel(**SD15_UNET_CONFIG)),
        scheduler=make_scheduler(scheduler, PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def full_size_sdxl_pipeline(*, device: DeviceLike = "meta", torch_dtype: DTypeLike = None, seed: int = 0,
                            scheduler: str = "dpm++2m", tokenizer_folder: str | Path | None = None):
    """A ``StableDiffusionXLPipeline`` with SDXL base 1.0's exact architecture and random weights (about 7 GB fp16)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from scaleup.models.schedulers import make_scheduler

    dtype = resolve_dtype(torch_dtype)
    tokenizer = _full_tokenizer(tokenizer_folder)
    vae_seed, text_seed, text_2_seed, unet_seed = component_seeds(seed, 4)
    return StableDiffusionXLPipeline(
        vae=_build(device, dtype, vae_seed, lambda: AutoencoderKL(**SDXL_VAE_CONFIG)),
        text_encoder=_text_encoder(SDXL_TEXT_ENCODER_CONFIG, with_projection=False, device=device, dtype=dtype,
                                   seed=text_seed),
        text_encoder_2=_text_encoder(SDXL_TEXT_ENCODER_2_CONFIG, with_projection=True, device=device, dtype=dtype,
                                     seed=text_2_seed),
        tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=_build(device, dtype, unet_seed, lambda: UNet2DConditionModel(**SDXL_UNET_CONFIG)),
        scheduler=make_scheduler(scheduler, EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG).config))
