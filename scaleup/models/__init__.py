"""Models of the scale-up: loading by id or local folder (offline), tiny and full-size random-init builders, LoRA and
soft-prompt adapters (peft), and the seeded batched generation shared by the evaluation and training jobs.

Names are imported lazily (PEP 562), so ``scaleup.models.errors`` stays importable without diffusers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "adapters": ("LORA_WEIGHT_NAME", "TEXT_ENCODER_TARGETS", "UNET_TARGETS", "adapters_disabled", "add_lora",
                 "add_text_encoder_lora", "add_unet_lora", "load_lora", "lora_config", "lora_parameters", "save_lora",
                 "transformers_peft_usable"),
    "errors": ("ModelNotFoundError", "ModelUnavailableError"),
    "full_size": ("count_parameters", "full_size_sd15_pipeline", "full_size_sdxl_pipeline"),
    "loading": ("FAMILIES", "ModelFamily", "ModelSource", "load_clip", "load_dinov2", "load_pipeline", "load_sd15",
                "load_sdxl", "pipeline_family", "resolve_dtype", "resolve_model_source"),
    "pipelines": ("default_size", "generate", "generate_batches", "latent_shape", "seed_latents",
                  "seeded_generators"),
    "schedulers": ("SCHEDULERS", "make_scheduler", "set_scheduler"),
    "soft_prompt": ("SOFT_PROMPT_FILE", "SoftPrompt", "encode_with_soft_prompt", "soft_prompt_input_ids"),
    "tiny": ("save_tiny_models", "tiny_clip_model", "tiny_clip_text_model", "tiny_clip_tokenizer", "tiny_dinov2",
             "tiny_scheduler", "tiny_sd_pipeline", "tiny_sdxl_pipeline", "tiny_unet", "tiny_vae"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
