"""Loading Stable Diffusion 1.5, SDXL base, CLIP and DINOv2 by model id or local folder, offline by default.

One function per family (:func:`load_sd15`, :func:`load_sdxl`, :func:`load_clip`, :func:`load_dinov2`, and
:func:`load_pipeline`, which picks SD 1.5 or SDXL from the folder). Where the weights come from, first match wins:

1. the explicit ``model`` argument: a local folder, or a Hugging Face id;
2. the family's environment variable (``FAIRDIFF_SD15``, ``FAIRDIFF_SDXL``, ``FAIRDIFF_CLIP``, ``FAIRDIFF_DINOV2``),
   which names a local folder;
3. the family's default hub ids (SD 1.5: ``runwayml/stable-diffusion-v1-5`` and its mirror
   ``stable-diffusion-v1-5/stable-diffusion-v1-5``), looked up in the local Hugging Face cache only.

Nothing is downloaded unless ``allow_download=True`` (and never while ``HF_HUB_OFFLINE=1``): an id is checked against
the cache before any library is asked to load it, so a missing model fails in milliseconds with one
:class:`~scaleup.models.errors.ModelNotFoundError` naming the ids tried, the argument and environment variable that
take a local folder, and the layout that folder must have; there is no retry against an unreachable hub.

The weights the seeds use: seed 000 [0107] (and Table 1) computes L_img and CLIP-I/DINO with
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` and "dinov2-vitb14" (the official aDFT code calls the torch.hub model
``dinov2_vitb14``); its transformers port is ``facebook/dinov2-base`` (ViT-B/14, 86M parameters), the default here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from scaleup.hub import hub_offline, hub_unreachable_reason
from scaleup.models.errors import ModelNotFoundError

DTypeLike = torch.dtype | str | None
DeviceLike = torch.device | str | None
Family = Literal["sd15", "sdxl", "clip", "dinov2"]

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelFamily:
    """Where one family of models comes from and what a local copy of it looks like."""

    name: str
    env_var: str
    hub_ids: tuple[str, ...]
    marker: str  # the file whose presence in the cache / folder says "this model is here"
    layout: str  # the folder layout expected, as the error message states it
    kind: Literal["pipeline", "transformers"]


FAMILIES: dict[str, ModelFamily] = {
    "sd15": ModelFamily(
        "Stable Diffusion 1.5", "FAIRDIFF_SD15",
        ("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"), "model_index.json",
        "a diffusers pipeline folder with model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/",
        "pipeline"),
    "sdxl": ModelFamily(
        "Stable Diffusion XL base 1.0", "FAIRDIFF_SDXL", ("stabilityai/stable-diffusion-xl-base-1.0",),
        "model_index.json",
        "a diffusers pipeline folder with model_index.json, unet/, vae/, text_encoder/, text_encoder_2/, "
        "tokenizer/, tokenizer_2/, scheduler/", "pipeline"),
    "clip": ModelFamily(
        "CLIP (transformers CLIPModel)", "FAIRDIFF_CLIP", ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K",), "config.json",
        "a transformers CLIPModel folder with config.json, model.safetensors (or pytorch_model.bin), "
        "preprocessor_config.json and the tokenizer files (tokenizer.json or vocab.json + merges.txt)",
        "transformers"),
    "dinov2": ModelFamily(
        "DINOv2 (transformers Dinov2Model)", "FAIRDIFF_DINOV2", ("facebook/dinov2-base",), "config.json",
        "a transformers Dinov2Model folder with config.json, model.safetensors (or pytorch_model.bin) and "
        "preprocessor_config.json", "transformers"),
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location: a local folder, or a hub id present in the cache (or allowed to download)."""

    family: str
    location: str
    is_local: bool
    origin: Literal["argument", "environment", "default"]


def resolve_dtype(torch_dtype: DTypeLike) -> torch.dtype:
    """``None`` -> float32; a ``torch.dtype`` as is; 'fp16'/'float16'/'half', 'bf16'/'bfloat16', 'fp32'/'float32'."""
    if torch_dtype is None:
        return torch.float32
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if isinstance(torch_dtype, str) and torch_dtype.lower() in _DTYPES:
        return _DTYPES[torch_dtype.lower()]
    raise ValueError(f"torch_dtype must be a torch.dtype or one of {sorted(_DTYPES)}; got {torch_dtype!r}")


def _looks_like_path(text: str) -> bool:
    # A hub id is "name" or "org/name"; anything else (absolute, relative with ./, ~, several slashes) is a path.
    return (text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1 or Path(text).exists())


def _how_to_supply(spec: ModelFamily) -> str:
    return (f"Pass a local folder as the `model` argument or set the environment variable {spec.env_var}=/path/to/"
            f"folder. Expected layout: {spec.layout} (e.g. `hf download {spec.hub_ids[-1]} --local-dir DIR` on a "
            "machine that reaches the hub). Hub ids load from the local Hugging Face cache only unless "
            "allow_download=True.")


def _check_folder(spec: ModelFamily, folder: Path, origin: str) -> None:
    """Refuse a folder without the family's layout, naming what is missing (before any library reads it)."""
    where = {"argument": "the `model` argument", "environment": f"the environment variable {spec.env_var}"}[origin]
    if not folder.is_dir():
        raise ModelNotFoundError(f"{spec.name}: {where} names {str(folder)!r}, which is not a folder on this machine. "
                                 + _how_to_supply(spec))
    if not (folder / spec.marker).is_file():
        raise ModelNotFoundError(f"{spec.name}: {str(folder)!r} (from {where}) has no {spec.marker}. "
                                 + _how_to_supply(spec))
    if spec.kind == "pipeline":
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        optional = {"safety_checker", "feature_extractor", "image_encoder"}
        components = [name for name, value in index.items() if not name.startswith("_") and name not in optional
                      and isinstance(value, list) and value[0] is not None]
        missing = [name + "/" for name in components if not (folder / name).is_dir()]
    else:
        missing = [] if any((folder / f).is_file() for f in _WEIGHT_FILES) else ["model.safetensors"]
        # transformers 5 writes the processor as processor_config.json; the hub repositories have the older name
        if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
            missing.append("preprocessor_config.json")
    if missing:
        raise ModelNotFoundError(f"{spec.name}: {str(folder)!r} (from {where}) lacks {', '.join(missing)}. "
                                 + _how_to_supply(spec))


def _in_cache(repo_id: str, filename: str, cache_dir: str | os.PathLike | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir), str)
    except ValueError:  # not a valid repo id at all
        return False


def resolve_model_source(family: Family, model: str | os.PathLike | None = None, *,
                         allow_download: bool = False, cache_dir: str | os.PathLike | None = None) -> ModelSource:
    """Where ``family``'s weights come from: explicit ``model`` > environment variable > default hub ids (cache).

    An id of the family's mirror group (SD 1.5: runwayml and stable-diffusion-v1-5) tries the whole group in the
    cache, the given id first. Raises :class:`ModelNotFoundError` (module docstring) when nothing is found.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}; got {family!r}")
    spec = FAMILIES[family]
    if model is not None:
        text = os.fspath(model)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"model must be a non-empty id or folder path; got {model!r}")
        if _looks_like_path(text):
            folder = Path(text).expanduser()
            _check_folder(spec, folder, "argument")
            return ModelSource(family, str(folder), True, "argument")
        candidates = (text,) + tuple(i for i in spec.hub_ids if i != text) if text in spec.hub_ids else (text,)
        origin = "argument"
    elif os.environ.get(spec.env_var, "").strip():
        folder = Path(os.environ[spec.env_var].strip()).expanduser()
        _check_folder(spec, folder, "environment")
        return ModelSource(family, str(folder), True, "environment")
    else:
        candidates, origin = spec.hub_ids, "default"
    for repo_id in candidates:
        if _in_cache(repo_id, spec.marker, cache_dir):
            return ModelSource(family, repo_id, False, origin)
    if allow_download and not hub_offline():
        unreachable = hub_unreachable_reason()
        if unreachable is None:
            return ModelSource(family, candidates[0], False, origin)
        raise ModelNotFoundError(f"{spec.name}: {candidates[0]!r} is not in the local Hugging Face cache and "
                                 f"allow_download=True, but the hub is unreachable ({unreachable}). "
                                 + _how_to_supply(spec))
    tried = " or ".join(repr(c) for c in candidates)
    why = "HF_HUB_OFFLINE is set" if allow_download else "offline by default: allow_download=False"
    unset = f"; {spec.env_var} is not set" if origin == "default" else ""
    raise ModelNotFoundError(f"{spec.name} is not on this machine: {tried} is not in the local Hugging Face cache "
                             f"({why}){unset}. " + _how_to_supply(spec))


def _load_error(spec: ModelFamily, source: ModelSource, err: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{spec.name}: loading {source.location!r} failed ({type(err).__name__}: {err}). A folder or cache entry "
        "that fails here is usually incomplete (e.g. holds another variant's weights only). " + _how_to_supply(spec))


def _dtype_kwarg(library: Literal["transformers", "diffusers"]) -> str:
    # from_pretrained's torch_dtype became dtype (transformers 4.56, diffusers 0.42); the old name warns in both.
    from importlib.metadata import version

    from packaging.version import Version

    renamed_in = {"transformers": "4.56", "diffusers": "0.42"}[library]
    return "dtype" if Version(version(library)) >= Version(renamed_in) else "torch_dtype"


def _load_diffusers_pipeline(family: Family, model, *, torch_dtype: DTypeLike, device: DeviceLike,
                             scheduler: str | None, allow_download: bool, variant: str | None,
                             cache_dir: str | os.PathLike | None):
    dtype = resolve_dtype(torch_dtype)
    spec = FAMILIES[family]
    # resolved before diffusers is imported: a missing model fails in milliseconds, not after a 3 s import
    source = resolve_model_source(family, model, allow_download=allow_download, cache_dir=cache_dir)
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from scaleup.models.schedulers import set_scheduler

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    # The NSFW checker is not loaded: it blacks out flagged images, which the face detector would then count as
    # faceless, silently biasing the metrics; the aDFT and PopAlign codes generate without it too.
    extra = {"safety_checker": None, "requires_safety_checker": False} if family == "sd15" else {}
    try:
        pipe = cls.from_pretrained(source.location, variant=variant, cache_dir=cache_dir,
                                   local_files_only=source.is_local or not allow_download or hub_offline(),
                                   **{_dtype_kwarg("diffusers"): dtype}, **extra)
    except Exception as err:  # OSError, ValueError, hub / httpx errors: all mean "not loadable here"
        raise _load_error(spec, source, err) from err
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    if device is not None:
        pipe.to(device)
    return pipe


def load_sd15(model: str | os.PathLike | None = None, *, torch_dtype: DTypeLike = None, device: DeviceLike = None,
              scheduler: str | None = "dpm++2m", allow_download: bool = False, variant: str | None = None,
              cache_dir: str | os.PathLike | None = None):
    """A diffusers ``StableDiffusionPipeline`` for SD 1.5 (or any SD 1.x/2.x pipeline folder), NSFW checker off.

    Parameters
    ----------
    model : local pipeline folder or hub id; None: ``$FAIRDIFF_SD15``, then runwayml/stable-diffusion-v1-5 and
        stable-diffusion-v1-5/stable-diffusion-v1-5 from the cache.
    torch_dtype : float32 (None), float16 / 'fp16' or bfloat16 / 'bf16'.
    device : where to move the pipeline (None: stays on the CPU).
    scheduler : :data:`scaleup.models.schedulers.SCHEDULERS` key; default DPM-Solver++(2M), the sampler of seed 000
        [0120]; None keeps the pipeline's own (PNDM for SD 1.5).
    allow_download : fetch from the hub when not cached (ignored under HF_HUB_OFFLINE=1).
    variant : e.g. 'fp16' for the half-precision weight files of the hub repository.
    cache_dir : the Hugging Face cache to look in (None: the default, ``$HF_HUB_CACHE``).
    """
    return _load_diffusers_pipeline("sd15", model, torch_dtype=torch_dtype, device=device, scheduler=scheduler,
                                    allow_download=allow_download, variant=variant, cache_dir=cache_dir)


def load_sdxl(model: str | os.PathLike | None = None, *, torch_dtype: DTypeLike = None, device: DeviceLike = None,
              scheduler: str | None = "dpm++2m", allow_download: bool = False, variant: str | None = None,
              cache_dir: str | os.PathLike | None = None):
    """A diffusers ``StableDiffusionXLPipeline`` (two text encoders, added text/time conditioning).

    As :func:`load_sd15`, with ``$FAIRDIFF_SDXL`` and stabilityai/stable-diffusion-xl-base-1.0; scheduler None keeps
    SDXL's own (Euler).
    """
    return _load_diffusers_pipeline("sdxl", model, torch_dtype=torch_dtype, device=device, scheduler=scheduler,
                                    allow_download=allow_download, variant=variant, cache_dir=cache_dir)


def pipeline_family(model: str | os.PathLike) -> Literal["sd15", "sdxl"]:
    """'sdxl' for a folder whose model_index.json names an SDXL pipeline or an SDXL hub id, else 'sd15'."""
    text = os.fspath(model)
    index = Path(text).expanduser() / "model_index.json"
    if index.is_file():
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
        return "sdxl" if "XL" in name else "sd15"
    return "sdxl" if "xl" in text.lower() else "sd15"


def load_pipeline(model: str | os.PathLike | None = None, *, family: Literal["sd15", "sdxl"] | None = None,
                  torch_dtype: DTypeLike = None, device: DeviceLike = None, scheduler: str | None = "dpm++2m",
                  allow_download: bool = False, variant: str | None = None,
                  cache_dir: str | os.PathLike | None = None):
    """:func:`load_sd15` or :func:`load_sdxl`, chosen by ``family`` or else from the folder / id (default SD 1.5)."""
    if family is None:
        family = pipeline_family(model) if model is not None else "sd15"
    if family not in ("sd15", "sdxl"):
        raise ValueError(f"family must be 'sd15' or 'sdxl'; got {family!r}")
    return _load_diffusers_pipeline(family, model, torch_dtype=torch_dtype, device=device, scheduler=scheduler,
                                    allow_download=allow_download, variant=variant, cache_dir=cache_dir)


def _load_transformers(family: Family, model, classes: tuple[str, str], *, torch_dtype: DTypeLike,
                       device: DeviceLike, allow_download: bool, cache_dir: str | os.PathLike | None):
    dtype = resolve_dtype(torch_dtype)
    spec = FAMILIES[family]
    source = resolve_model_source(family, model, allow_download=allow_download, cache_dir=cache_dir)
    import transformers  # after resolving, as in _load_diffusers_pipeline

    model_cls, processor_cls = (getattr(transformers, name) for name in classes)
    local_only = source.is_local or not allow_download or hub_offline()
    try:
        net = model_cls.from_pretrained(source.location, local_files_only=local_only, cache_dir=cache_dir,
                                        **{_dtype_kwarg("transformers"): dtype})
        processor = processor_cls.from_pretrained(source.location, local_files_only=local_only, cache_dir=cache_dir)
    except Exception as err:  # OSError, ValueError, hub / httpx errors: all mean "not loadable here"
        raise _load_error(spec, source, err) from err
    net.eval().requires_grad_(False)
    if device is not None:
        net.to(device)
    return net, processor


def load_clip(model: str | os.PathLike | None = None, *, torch_dtype: DTypeLike = None, device: DeviceLike = None,
              allow_download: bool = False, cache_dir: str | os.PathLike | None = None):
    """A transformers ``CLIPModel`` (text and vision towers, projections) and its ``CLIPProcessor``, frozen, eval.

    Default laion/CLIP-ViT-H-14-laion2B-s32B-b79K (seed 000 [0107]; its hub repository has HF-format weights, which
    the aDFT code loads with transformers too); ``$FAIRDIFF_CLIP`` names a local folder.
    """
    return _load_transformers("clip", model, ("CLIPModel", "CLIPProcessor"), torch_dtype=torch_dtype, device=device,
                              allow_download=allow_download, cache_dir=cache_dir)


def load_dinov2(model: str | os.PathLike | None = None, *, torch_dtype: DTypeLike = None, device: DeviceLike = None,
                allow_download: bool = False, cache_dir: str | os.PathLike | None = None):
    """A transformers ``Dinov2Model`` and its image processor (``BitImageProcessor``), frozen, eval.

    Default facebook/dinov2-base, the transformers port of the ``dinov2_vitb14`` of seed 000 [0107] and the aDFT
    code; its ``pooler_output`` is the layer-normed CLS token, which is what the torch.hub model returns.
    ``$FAIRDIFF_DINOV2`` names a local folder.
    """
    return _load_transformers("dinov2", model, ("Dinov2Model", "AutoImageProcessor"), torch_dtype=torch_dtype,
                              device=device, allow_download=allow_download, cache_dir=cache_dir)
