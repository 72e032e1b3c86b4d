"""LoRA adapters on the text encoder(s) and U-Net through peft, saved and loaded in diffusers' LoRA format.

Seed 000 finetunes LoRA of rank 50 on the text encoder by default ([0120]), and compares LoRA on the U-Net, on both,
and 5 soft prompt tokens (Table 1, [0129]; soft prompts are in :mod:`scaleup.models.soft_prompt`); PopAlign (seed
001) trains LoRA on the U-Net. The adapters are created as diffusers' own training scripts create them
(train_text_to_image_lora.py, train_dreambooth_lora.py): ``peft.LoraConfig`` with Gaussian init (B = 0, so a fresh
adapter leaves the model unchanged) on the attention projections, added with the models' ``add_adapter``; saved with
the pipeline class's ``save_lora_weights`` from ``get_peft_model_state_dict`` -> ``convert_state_dict_to_diffusers``
with the adapter configs as metadata (diffusers' ``_collate_lora_metadata``), so that any diffusers user loads them
with ``pipe.load_lora_weights(folder)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from scaleup.models.errors import ModelNotFoundError

TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP text attention projections
UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")  # diffusers Attention projections (self and cross)
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' file name for save/load_lora_weights
_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def lora_config(rank: int, *, alpha: float | None = None, target_modules: Sequence[str], dropout: float = 0.0):
    """A ``peft.LoraConfig`` of rank ``rank`` with lora_alpha = ``alpha`` (default: the rank, i.e. scale 1)."""
    from peft import LoraConfig

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer; got {rank!r}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be positive; got {alpha!r}")
    return LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, init_lora_weights="gaussian",
                      target_modules=list(target_modules), lora_dropout=dropout)


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA parameters (``lora_A`` / ``lora_B``) of ``module``, in a fixed order."""
    return [p for name, p in module.named_parameters() if "lora_" in name]


def transformers_peft_usable() -> bool:
    """Whether transformers' own peft integration (``add_adapter`` / ``load_adapter``) accepts the installed peft.

    transformers 5.24 requires peft >= 0.22, which is not released where this was written (peft 0.21.2), and then
    refuses every adapter call on its models, ``pipe.load_lora_weights`` on a text encoder included. The text
    encoders' LoRA then goes through peft directly (:func:`_inject_text_encoder_lora`), which is what transformers'
    integration does itself; the U-Net always goes through diffusers.
    """
    from importlib.metadata import version

    from packaging.version import Version

    try:
        from transformers.integrations.peft import MIN_PEFT_VERSION
    except ImportError:
        return True
    return Version(version("peft")) >= Version(MIN_PEFT_VERSION)


def _inject_text_encoder_lora(text_encoder: torch.nn.Module, config, adapter_name: str) -> None:
    """peft's ``inject_adapter_in_model`` plus the two attributes transformers' ``add_adapter`` records with it."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, text_encoder, adapter_name=adapter_name)
    if not getattr(text_encoder, "_hf_peft_config_loaded", False) or getattr(text_encoder, "peft_config", None) is None:
        text_encoder.peft_config = {}
    text_encoder.peft_config[adapter_name] = config  # read by get_peft_model_state_dict and diffusers' helpers
    text_encoder._hf_peft_config_loaded = True


def _add_lora(module: torch.nn.Module, rank: int, alpha: float | None, target_modules: Sequence[str],
              adapter_name: str, trainable_dtype: torch.dtype | None) -> list[torch.nn.Parameter]:
    module.requires_grad_(False)  # the base stays frozen; only the adapter below is trained
    config = lora_config(rank, alpha=alpha, target_modules=target_modules)
    is_transformers = type(module).__module__.startswith("transformers.")
    if is_transformers and not transformers_peft_usable():
        _inject_text_encoder_lora(module, config, adapter_name)
    else:
        module.add_adapter(config, adapter_name=adapter_name)
    params = lora_parameters(module)
    for p in params:
        if trainable_dtype is not None:
            # half-precision bases keep float32 adapters (diffusers' cast_training_params does the same)
            p.data = p.data.to(trainable_dtype)
        p.requires_grad_(True)
    return params


def add_text_encoder_lora(text_encoder: torch.nn.Module, rank: int = 50, *, alpha: float | None = None,
                          target_modules: Sequence[str] = TEXT_ENCODER_TARGETS, adapter_name: str = "default",
                          trainable_dtype: torch.dtype | None = torch.float32) -> list[torch.nn.Parameter]:
    """Add a trainable LoRA to a transformers CLIP text encoder (seed 000 [0120]: rank 50); freeze the rest.

    Returns the new parameters (``requires_grad=True``, in ``trainable_dtype``; None keeps the model's dtype).
    """
    return _add_lora(text_encoder, rank, alpha, target_modules, adapter_name, trainable_dtype)


def add_unet_lora(unet: torch.nn.Module, rank: int = 50, *, alpha: float | None = None,
                  target_modules: Sequence[str] = UNET_TARGETS, adapter_name: str = "default",
                  trainable_dtype: torch.dtype | None = torch.float32) -> list[torch.nn.Parameter]:
    """Add a trainable LoRA to a diffusers ``UNet2DConditionModel``'s attention projections; freeze the rest."""
    return _add_lora(unet, rank, alpha, target_modules, adapter_name, trainable_dtype)


def add_lora(pipe, *, text_encoder_rank: int | None = 50, unet_rank: int | None = None, alpha: float | None = None,
             adapter_name: str = "default",
             trainable_dtype: torch.dtype | None = torch.float32) -> list[torch.nn.Parameter]:
    """LoRA on the pipeline's text encoder(s) (both for SDXL) and/or U-Net; a rank of None leaves that part out.

    The default is seed 000's: rank 50 on the text encoder, the U-Net untouched. Returns all new parameters.
    """
    if text_encoder_rank is None and unet_rank is None:
        raise ValueError("at least one of text_encoder_rank and unet_rank must be given")
    params = []
    if text_encoder_rank is not None:
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                params += add_text_encoder_lora(getattr(pipe, name), text_encoder_rank, alpha=alpha,
                                                adapter_name=adapter_name, trainable_dtype=trainable_dtype)
    if unet_rank is not None:
        params += add_unet_lora(pipe.unet, unet_rank, alpha=alpha, adapter_name=adapter_name,
                                trainable_dtype=trainable_dtype)
    return params


def _has_adapter(module, adapter_name: str) -> bool:
    return module is not None and adapter_name in (getattr(module, "peft_config", None) or {})


def save_lora(pipe, folder: str | os.PathLike, *, adapter_name: str = "default", is_main_process: bool = True,
              weight_name: str = LORA_WEIGHT_NAME) -> Path:
    """Save every LoRA named ``adapter_name`` of the pipeline's U-Net / text encoders, loadable by diffusers.

    Writes ``folder/pytorch_lora_weights.safetensors`` with the adapters' configs (rank, alpha, targets) as metadata,
    through ``type(pipe).save_lora_weights``; ``pipe.load_lora_weights(folder)`` (or :func:`load_lora`) restores it.
    Under accelerate, pass the unwrapped pipeline and ``is_main_process=accelerator.is_main_process``.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers, metadata = {}, {}
    for name in _COMPONENTS:
        module = getattr(pipe, name, None)
        if _has_adapter(module, adapter_name):
            state = get_peft_model_state_dict(module, adapter_name=adapter_name)
            layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(state)
            metadata[f"{name}_lora_adapter_metadata"] = module.peft_config[adapter_name].to_dict()
    if not layers:
        raise ValueError(f"the pipeline has no LoRA adapter named {adapter_name!r} on {', '.join(_COMPONENTS)}; "
                         "add one with add_lora / add_text_encoder_lora / add_unet_lora first")
    folder = Path(folder)
    type(pipe).save_lora_weights(folder, **layers, **metadata, is_main_process=is_main_process,
                                 weight_name=weight_name, safe_serialization=True)
    return folder


def load_lora(pipe, folder: str | os.PathLike, *, adapter_name: str | None = None,
              weight_name: str = LORA_WEIGHT_NAME):
    """``pipe.load_lora_weights(folder)`` with a clear error when the checkpoint is missing; returns ``pipe``.

    Where transformers' peft integration refuses the installed peft (:func:`transformers_peft_usable`), the same
    file is read with diffusers' ``lora_state_dict``, the U-Net part loaded with diffusers' ``load_lora_into_unet``
    and the text-encoder parts injected with peft, as diffusers would (same keys, same LoraConfig from the file's
    metadata, same adapter name).
    """
    folder = Path(folder).expanduser()
    if not (folder / weight_name).is_file():
        raise ModelNotFoundError(f"LoRA checkpoint: {str(folder / weight_name)!r} does not exist. Expected a folder "
                                 f"written by save_lora / diffusers' save_lora_weights, holding {weight_name}.")
    if transformers_peft_usable():
        pipe.load_lora_weights(str(folder), weight_name=weight_name, adapter_name=adapter_name)
        return pipe
    from diffusers.utils.peft_utils import get_adapter_name

    state, alphas, metadata = pipe.lora_state_dict(str(folder), weight_name=weight_name, return_lora_metadata=True)
    adapter_name = adapter_name or get_adapter_name(pipe.unet)
    if any(k.startswith("unet.") for k in state):
        pipe.load_lora_into_unet(state, network_alphas=alphas, unet=pipe.unet, adapter_name=adapter_name,
                                 metadata=metadata, _pipeline=pipe)
    for prefix in ("text_encoder", "text_encoder_2"):
        if getattr(pipe, prefix, None) is not None and any(k.startswith(prefix + ".") for k in state):
            _load_text_encoder_lora(getattr(pipe, prefix), prefix, state, alphas, metadata, adapter_name)
    return pipe


def _load_text_encoder_lora(text_encoder, prefix: str, state: dict, alphas: dict | None, metadata: dict | None,
                            adapter_name: str) -> None:
    """The text-encoder half of diffusers' ``load_lora_weights``, with peft in place of transformers' integration."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft import LoraConfig, set_peft_model_state_dict

    part = {k.removeprefix(prefix + "."): v for k, v in state.items() if k.startswith(prefix + ".")}
    if not hasattr(text_encoder, "text_model"):  # transformers 5 dropped CLIPTextModel's text_model level
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
    meta = {k.removeprefix(prefix + "."): v for k, v in (metadata or {}).items() if k.startswith(prefix + ".")}
    if meta:
        config = LoraConfig(**meta)
    else:  # checkpoints without metadata: rank from the weights, alpha from network_alphas, as diffusers infers
        ranks = {k: v.shape[1] for k, v in part.items() if "lora_B" in k and v.ndim > 1}
        alphas = {k.removeprefix(prefix + "."): v for k, v in (alphas or {}).items() if k.startswith(prefix + ".")}
        config = LoraConfig(**get_peft_kwargs(ranks, network_alpha_dict=alphas or None, peft_state_dict=part,
                                              is_unet=False))
    _inject_text_encoder_lora(text_encoder, config, adapter_name)
    set_peft_model_state_dict(text_encoder, part, adapter_name=adapter_name)
    text_encoder.to(device=text_encoder.device, dtype=text_encoder.dtype)


def _tuner_layers(modules: Sequence[torch.nn.Module]) -> Iterator:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in modules:
        if module is None:
            continue
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer):
                yield sub


@contextmanager
def adapters_disabled(*modules: torch.nn.Module):
    """Run ``modules`` (U-Net, text encoders) as their base models: every LoRA layer bypassed, then restored.

    With adapters disabled a peft layer returns its base layer's output unchanged, so the model equals the
    pretrained one exactly; seed 000's original images o_i come from it without a second model in memory.
    The adapters' enabled state and ``requires_grad`` flags are restored on exit (peft's toggle alters them).
    """
    layers = list(_tuner_layers(modules))
    was_disabled = [layer.disable_adapters for layer in layers]
    grads = [(p, p.requires_grad) for m in modules if m is not None for p in m.parameters()]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, disabled in zip(layers, was_disabled):
            layer.enable_adapters(not disabled)
        for p, flag in grads:
            p.requires_grad_(flag)
