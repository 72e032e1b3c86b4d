"""What an aDFT iteration needs, built once: the pipeline with its adapter, the face detector, the training
classifiers, the CLIP and DINOv2 embedders of L_img, the face embedder of L_face and the external real faces
(seed 000 [0107]-[0109], [0120]-[0123]; Table 1 for the adapters).

Everything is loaded through :mod:`scaleup.models` (by folder, ``FAIRDIFF_*`` variable or cached hub id) and
:mod:`scaleup.perception`; the frozen models are cast to the job's weight dtype, the trained parameters stay in
float32. One model serves both the finetuned and the original images: the original images o_i come from the same
modules with the adapters disabled (:func:`scaleup.models.adapters.adapters_disabled`) or without the soft prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scaleup.jobs.adft.config import AdftConfig, JobPlan, external_face_files

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Components:
    """The models of one run (see the module docstring) and a record of what was used."""

    pipe: Any
    trainable: list[torch.nn.Parameter]
    named_trainable: list[tuple[str, torch.nn.Parameter]]
    soft_prompt: Any
    adapted: list[torch.nn.Module]
    """Modules holding LoRA layers (disabled for the original images)."""
    detector: Any
    classifiers: dict[str, torch.nn.Module]
    clip: torch.nn.Module | None
    """CLIP embedder; None when the run does not need it (:attr:`JobPlan.needs_clip`)."""
    dino: torch.nn.Module | None
    """DINOv2 embedder; None when L_img has weight 0 (:attr:`JobPlan.needs_dinov2`)."""
    semantics: tuple[tuple[str, Any], ...]
    """L_img's embedders by name: (("clip", CLIP), ("dinov2", DINOv2)) as eq. 7 states it, or the user's own
    (``--image-embedder``); empty when L_img has weight 0."""
    face_embedder: torch.nn.Module | None
    """Embeds faces for L_face; None when lambda_face = 0 and no face-embedding model is given."""
    external_faces: torch.Tensor | None
    """(|D_F|, D) unit embeddings of the external real faces, or None when lambda_face = 0."""
    device: torch.device
    weight_dtype: torch.dtype
    used: dict = field(default_factory=dict)

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """Every model whose weights must not change (all but the adapter), by name."""
        modules = {"unet": self.pipe.unet, "vae": self.pipe.vae, "text_encoder": self.pipe.text_encoder,
                   "clip": self.clip, "dino": self.dino, "face_embedder": self.face_embedder}
        modules.update({f"image_embedder_{k}": v for k, v in self.semantics})
        modules.update({f"classifier_{k}": v for k, v in self.classifiers.items()})
        return {k: v for k, v in modules.items() if isinstance(v, torch.nn.Module)}


def _name_or_path(model) -> str | None:
    return getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)


def add_adapter(config: AdftConfig, pipe, device: torch.device):
    """The adapter of ``config.adapter`` on ``pipe`` (seed 000 Table 1): named trained parameters, the soft prompt
    (or None) and the modules holding LoRA layers."""
    from scaleup.models.adapters import add_lora
    from scaleup.models.soft_prompt import SoftPrompt

    if config.adapter == "soft-prompt":
        soft_prompt = SoftPrompt.from_text_encoder(pipe.text_encoder, config.soft_prompt_tokens, seed=config.seed)
        soft_prompt = soft_prompt.to(device=device, dtype=torch.float32)
        return [("soft_prompt.embeddings", soft_prompt.embeddings)], soft_prompt, []
    te_rank = config.lora_rank if config.adapter in ("text-encoder-lora", "both-lora") else None
    unet_rank = (config.unet_lora_rank or config.lora_rank) if config.adapter in ("unet-lora", "both-lora") else None
    # peft draws the Gaussian init of A from the global RNG: seed it, so the run depends on config.seed only
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        add_lora(pipe, text_encoder_rank=te_rank, unet_rank=unet_rank, trainable_dtype=torch.float32)
    named, adapted = [], []
    for prefix, module in (("text_encoder", pipe.text_encoder), ("unet", pipe.unet)):
        params = [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if "lora_" in n]
        if params:
            named += params
            adapted.append(module)
    return named, None, adapted


def _face_embedder(config: AdftConfig, clip_embedder, device: torch.device, dtype: torch.dtype):
    from scaleup.perception import ClipEmbedder, Dinov2Embedder

    if config.face_embedding_model is None:
        if clip_embedder is None:  # not loaded: lambda_face = 0 and nothing else needs CLIP
            return None, None
        return clip_embedder, f"CLIP image tower of {_name_or_path(clip_embedder.model)} (no face-embedding model " \
                              "given; seed 000 [0108] uses SFNet-20)"
    import json

    from scaleup.models import load_clip, load_dinov2

    folder = Path(config.face_embedding_model).expanduser()
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type == "clip":
        model, processor = load_clip(str(folder), torch_dtype=dtype, device=device)
        return ClipEmbedder(model, processor), f"CLIP image tower of {folder}"
    if model_type == "dinov2":
        model, processor = load_dinov2(str(folder), torch_dtype=dtype, device=device)
        return Dinov2Embedder(model, processor), f"DINOv2 of {folder}"
    raise ValueError(f"face_embedding_model: {str(folder)!r} is a {model_type!r} model; expected a transformers "
                     "CLIPModel or Dinov2Model folder")


def embed_external_faces(folder: str, embedder, *, size: int, limit: int, device: torch.device,
                         batch_size: int = 64) -> torch.Tensor:
    """(|D_F|, D) float32 unit embeddings of the first ``limit`` images of ``folder`` (seed 000 [0108], D_F),
    each resized to ``size`` x ``size`` (shorter side, centre crop) as the generated face crops are."""
    from scaleup.perception.labelled_faces import load_image_batch

    paths = external_face_files(folder)[:limit]
    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            rows.append(embedder(load_image_batch(paths[start:start + batch_size], size).to(device)).float())
    return torch.cat(rows)


def build_components(config: AdftConfig, plan: JobPlan, device: torch.device | str) -> Components:
    """Load and assemble every model of the run on ``device`` (see the module docstring)."""
    from scaleup.models import load_clip, load_dinov2, load_sd15
    from scaleup.perception import ClipEmbedder, Dinov2Embedder
    from scaleup.perception.factory import CLIP_DINOV2, make_classifier, make_detector, make_image_embedder

    device = torch.device(device)
    dtype = WEIGHT_DTYPES[config.mixed_precision]
    pipe = load_sd15(config.pretrained_model, torch_dtype=dtype, device=device, scheduler="dpm++2m")
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    named, soft_prompt, adapted = add_adapter(config, pipe, device)
    clip = clip_model = dino = dino_model = None
    if plan.needs_clip:
        clip_model, clip_processor = load_clip(config.clip_model, torch_dtype=dtype, device=device)
        clip = ClipEmbedder(clip_model, clip_processor)
    if plan.needs_dinov2:
        dino_model, dino_processor = load_dinov2(config.dinov2_model, torch_dtype=dtype, device=device)
        dino = Dinov2Embedder(dino_model, dino_processor)
    semantics: tuple[tuple[str, Any], ...] = ()
    if plan.image_semantics:
        semantics = ((("clip", clip), ("dinov2", dino)) if config.image_embedder == CLIP_DINOV2
                     else ((config.image_embedder, make_image_embedder(config.image_embedder, device=device)),))
    face_embedder, face_embedder_name = _face_embedder(config, clip, device, dtype)
    classifiers = {}
    for attribute in plan.attributes:
        classifier = make_classifier(attribute.classifier, attribute.attribute, clip_embedder=clip, device=device)
        classifiers[attribute.name] = classifier.requires_grad_(False) if hasattr(classifier, "requires_grad_") \
            else classifier
    external = None
    if plan.lambda_face > 0:
        external = embed_external_faces(config.external_faces, face_embedder, size=config.crop_size,
                                        limit=config.max_external_faces, device=device)
    from scaleup.models.loading import resolve_model_source

    used = {"pretrained_model": resolve_model_source("sd15", config.pretrained_model).location,
            "clip": _name_or_path(clip_model), "dinov2": _name_or_path(dino_model),
            "image_embedders": [name for name, _ in semantics],
            "face_embedder": face_embedder_name, "external_faces": config.external_faces,
            "n_external_faces": 0 if external is None else int(external.shape[0]),
            "classifiers": {a.name: f"{a.classifier} ({type(classifiers[a.name]).__name__})"
                            for a in plan.attributes},
            "detector": config.detector, "adapter": config.adapter, "weight_dtype": str(dtype).replace("torch.", ""),
            "trainable_parameters": int(sum(p.numel() for _, p in named))}
    return Components(pipe=pipe, trainable=[p for _, p in named], named_trainable=named, soft_prompt=soft_prompt,
                      adapted=adapted, detector=make_detector(config.detector), classifiers=classifiers, clip=clip,
                      dino=dino, semantics=semantics, face_embedder=face_embedder, external_faces=external, device=device,
                      weight_dtype=dtype, used=used)
