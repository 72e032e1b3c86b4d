"""Bias evaluation of a text-to-image pipeline: ``python -m scaleup.evaluate`` (or ``accelerate launch -m ...``).

For every prompt of a prompt set, generate images from per-image seeds, find the largest face, classify it for an
attribute, and write per prompt and overall (seed 000 [0124], seed 001 eq. 11 and Table 1, seed 000 Table 1):

- the bias metric of seed 000 over K = 2/4/8 groups (60/80/160 images per prompt by default) with its mean and
  spread over prompts; PopAlign's discrepancy; the share of images without a detected face;
- CLIP-T (cosine and x100), and with ``--compare-original`` CLIP-I and DINO similarity to the original model's
  image from the same noise (the adapters disabled, or the soft prompt dropped);
- ``records.csv`` (one row per image: prompt, seed, face box, class probabilities) so any metric can be recomputed,
  ``grids/`` (annotated samples per prompt) and ``results.json``.

Detector, attribute and classifier are named as in :mod:`scaleup.perception.factory`, as for the aDFT and PopAlign
jobs: ``--detector whole-image`` classifies the whole image (models whose images hold no face), ``--attribute
ink:red,blue`` is a user-defined attribute, ``--classifier package.module:factory`` a user's own classifier.

Inference-time debiasing baselines (:mod:`scaleup.evaluation.debiasing`), each image asked for a class drawn from
``--target`` (default uniform) on a stream of its own seed: ``--augment-template "{prompt}, {cls}"`` (prompt
augmentation) and ``--edit-template "{cls} person"`` (Fair Diffusion's semantic guidance, SEGA, with
``--edit-guidance-scale``, ``--edit-threshold``, ``--edit-warmup-steps``); records keep the base prompt and name the
requested class.

Runs resume prompt by prompt; ``accelerate launch`` splits the prompts over processes. Real weights need only a
path: ``--pipeline /path/to/sd15`` (or ``FAIRDIFF_SD15``) and ``--clip /path/to/clip`` (or ``FAIRDIFF_CLIP``).
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch

from scaleup.evaluation.loop import EvaluationParts, Perceived, run_evaluation
from scaleup.evaluation.protocols import images_per_prompt, interval_text, protocol_numbers, protocols_named
from scaleup.evaluation.report import write_report
from scaleup.atomic_write import atomic_write_text, check_writable_folder
from scaleup.evaluation.store import RecordStore, write_table
from scaleup.evaluation.summary import overall_summary, prompt_summary
from scaleup.job_config import ConfigError, config_to_dict, parse_config
from scaleup.prompts import load_prompt_set



@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation (every field is also a command-line flag: ``--images-per-prompt`` etc.)."""

    pipeline: Optional[str] = field(default=None, metadata={"help": "SD 1.5 / SDXL folder or id; default $FAIRDIFF_SD15"})
    family: Optional[Literal["sd15", "sdxl"]] = None
    lora: Optional[str] = field(default=None, metadata={"help": "folder of LoRA weights (diffusers format)"})
    soft_prompt: Optional[str] = field(default=None, metadata={"help": "soft_prompt.safetensors (or its folder)"})
    prompts: str = field(default="occupations-test", metadata={"help": "shipped prompt set name or a prompt file"})
    attribute: str = field(default="gender", metadata={"help": "gender | race | gender_race | age, or your own as "
                                                               "name:class1,class2 (e.g. ink:red,blue)"})
    classifier: str = field(default="clip-zero-shot",
                            metadata={"help": "clip-zero-shot | dlib-gender | dlib-age | probe:/path/to/probe | "
                                              "package.module:factory (your own classifier)"})
    content_classifier: Optional[str] = field(
        default=None, metadata={"help": "package.module:factory of a content classifier (e.g. which digit): "
                                        "records each image's content class and the prompt accuracy"})
    confident: Optional[float] = field(
        default=None, metadata={"help": "report the share of images whose top class probability is at least this "
                                        "(in (1/K, 1]): blends on the class boundary are not confident"})
    detector: str = field(default="dlib", metadata={"help": "dlib | haar | insightface | mtcnn | whole-image (the "
                                                            "whole image: models without faces) | centre"})
    clip: Optional[str] = field(default=None, metadata={"help": "CLIP folder or id; default $FAIRDIFF_CLIP / laion ViT-H-14"})
    dinov2: Optional[str] = field(default=None, metadata={"help": "DINOv2 folder or id (with --compare-original)"})
    clip_t: bool = field(default=True, metadata={"help": "compute CLIP-T (needs CLIP)"})
    compare_original: bool = field(default=False, metadata={"help": "CLIP-I and DINO against the original model"})
    image_embedder: Optional[str] = field(
        default=None, metadata={"help": "package.module:factory of your own image embedder: with --compare-original, "
                                        "its cosine to the original model's image from the same noise replaces "
                                        "DINOv2's (the analogue of CLIP-I / DINO for models without them)"})
    images_per_prompt: Optional[int] = field(default=None, metadata={
        "help": "default: the protocol's (adft: 60/80/160 for K = 2/4/8; popalign: 100; both: the larger)"})
    protocol: Literal["adft", "popalign", "both"] = field(default="adft", metadata={
        "help": "which paper's numbers to report (scaleup.evaluation.protocols): adft = seed 000's mean bias over "
                "prompts, popalign = seed 001's pooled discrepancy, both = each from the same records"})
    labelled_folder: Optional[str] = field(default=None, metadata={
        "help": "labelled images of the attribute (FairFace / CelebA / <class>/ layout): the evaluation's detector and "
                "classifier are measured on them and every number is also reported corrected for the classifier's "
                "confusion (CLEAM)"})
    labelled_layout: Literal["folder", "fairface", "celeba"] = "folder"
    labelled_labels: Optional[str] = field(default=None, metadata={"help": "labels file, if not at its usual place"})
    labelled_size: Optional[int] = field(default=None, metadata={
        "help": "pixels the labelled images are resized to; default: the generated images' size"})
    reference: Optional[str] = field(default=None, metadata={
        "help": "a finished evaluation of the reference model (e.g. the original) on the same prompts and seed: "
                "the paired difference to it, with its interval, goes into results.json and report.md"})
    bootstrap_resamples: int = field(default=1000, metadata={
        "help": "resamples of the bootstrap over prompts and images behind each number's interval (0: none)"})
    confidence: float = field(default=0.95, metadata={"help": "level of the intervals"})
    max_prompts: Optional[int] = field(default=None, metadata={"help": "evaluate only the first N prompts"})
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    guidance_scales: Optional[tuple[float, ...]] = field(default=None, metadata={
        "help": "a sweep: one evaluation per scale (OUT/cfg-<w>/, the same noise), each scale's numbers and its paired "
                "difference to the first scale in OUT/results.json (replaces --guidance-scale)"})
    height: Optional[int] = None
    width: Optional[int] = None
    batch_size: int = 8
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    device: Optional[str] = field(default=None, metadata={"help": "default: cuda when available, else cpu"})
    crop_size: int = 224
    seed: int = 0
    target: Optional[tuple[float, ...]] = field(default=None, metadata={"help": "target distribution (default uniform)"})
    augment_template: Optional[str] = field(
        default=None, metadata={"help": "prompt augmentation: each image's prompt is this template with {prompt} and "
                                        "{cls}, the class drawn for it from --target, e.g. '{prompt}, {cls}' or "
                                        "'{prompt} in {cls} ink'"})
    edit_template: Optional[str] = field(
        default=None, metadata={"help": "semantic guidance (Fair Diffusion / SEGA): one edit prompt per class, this "
                                        "template with {cls}, e.g. '{cls} person' or '{cls} ink'; each image is "
                                        "guided toward the class drawn for it from --target, away from the others"})
    class_phrases: Optional[tuple[str, ...]] = field(
        default=None, metadata={"help": "what {cls} becomes in the templates, one per class (default the class names)"})
    edit_guidance_scale: Optional[float] = field(
        default=None, metadata={"help": "SEGA's s_e (default 4, Fair Diffusion's)"})
    edit_threshold: Optional[float] = field(
        default=None, metadata={"help": "SEGA's lambda in [0, 1): the share of each latent channel left unedited "
                                        "(default 0.95, Fair Diffusion's)"})
    edit_warmup_steps: Optional[int] = field(
        default=None, metadata={"help": "steps before the edit applies (default round(0.2 x steps): Fair "
                                        "Diffusion's 10 of 50, 4 of 20)"})
    grid_images: int = 16
    out: str = "runs/sd-eval"
    restart: bool = field(default=False, metadata={"help": "discard records of an earlier run in --out"})


def validate(config: EvalConfig) -> tuple[EvalConfig, tuple[str, ...]]:
    """Every check that needs no model, before any compute; returns the config with defaults filled in."""
    from theory.validation import check_distribution

    from scaleup.perception.factory import (check_classifier_spec, check_content_classifier_spec, check_detector_name,
                                            resolve_attribute)

    from scaleup.processes import check_device

    attribute = resolve_attribute(config.attribute)
    names = attribute.class_names
    if config.device is not None:
        check_device(config.device)
    n = config.images_per_prompt if config.images_per_prompt is not None else \
        images_per_prompt(config.protocol, len(names))
    protocols_named(config.protocol)  # an unknown protocol (from Python) fails here
    if isinstance(config.bootstrap_resamples, bool) or not isinstance(config.bootstrap_resamples, int) or \
            config.bootstrap_resamples < 0:
        raise ValueError(f"bootstrap_resamples must be an integer >= 0 (0: no intervals); got "
                         f"{config.bootstrap_resamples!r}")
    if not 0.0 < config.confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {config.confidence!r}")
    if config.labelled_folder is not None:  # a missing folder or a class it lacks fails here, before any load
        from scaleup.perception.labelled_faces import read_labelled_images

        read_labelled_images(config.labelled_folder, config.labelled_layout, attribute,
                             labels=config.labelled_labels)
    if config.guidance_scales is not None:
        from scaleup.evaluation.guidance_sweep import check_guidance_scales

        check_guidance_scales(config.guidance_scales)
    if config.reference is not None and not (Path(config.reference) / "results.json").is_file():
        raise ValueError(f"reference {config.reference} holds no finished evaluation (no results.json); evaluate the "
                         "reference model there first, with the same prompts and seed")
    if config.labelled_size is not None and (isinstance(config.labelled_size, bool) or
                                             not isinstance(config.labelled_size, int) or config.labelled_size < 8):
        raise ValueError(f"labelled_size must be an integer >= 8; got {config.labelled_size!r}")
    for key, value in (("images_per_prompt", n), ("num_inference_steps", config.num_inference_steps),
                       ("batch_size", config.batch_size), ("crop_size", config.crop_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1; got {value!r}")
    if config.max_prompts is not None and config.max_prompts < 1:
        raise ValueError(f"max_prompts must be >= 1 when given; got {config.max_prompts}")
    if not config.guidance_scale >= 0 or not np.isfinite(config.guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number >= 0; got {config.guidance_scale}")
    if config.seed < 0 or config.seed >= 2**63:
        raise ValueError(f"seed must be in [0, 2^63); got {config.seed}")
    check_detector_name(config.detector)
    check_classifier_spec(config.classifier, attribute)
    if config.content_classifier is not None:
        check_content_classifier_spec(config.content_classifier)
    if config.image_embedder is not None:
        from scaleup.perception.factory import check_image_embedder_spec

        if not config.compare_original:
            raise ValueError("image_embedder is used with --compare-original only (the similarity to the original "
                             "model's image); pass --compare-original true or leave --image-embedder out")
        check_image_embedder_spec(config.image_embedder)
    if config.confident is not None and not (1 / len(names) < config.confident <= 1):
        raise ValueError(f"confident must lie in (1/K, 1] = ({1 / len(names):.3g}, 1] for the {len(names)} classes "
                         f"of {attribute.name}; got {config.confident}")
    if config.target is not None:
        check_distribution(config.target, len(names), name="target")
    config = _check_debiasing(config, names)
    load_prompt_set(config.prompts)  # an empty, missing or non-UTF-8 prompt file fails here
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder for the evaluation's results")
    return replace(config, images_per_prompt=n), names


def _check_debiasing(config: EvalConfig, names: Sequence[str]) -> EvalConfig:
    """Checks of the debiasing options (scaleup.evaluation.debiasing); fills SEGA's defaults when it is on."""
    from scaleup.evaluation.debiasing import (FAIR_DIFFUSION_EDIT_SCALE, FAIR_DIFFUSION_THRESHOLD, check_template,
                                              default_warmup_steps)

    if config.augment_template is not None:
        check_template("augment_template", config.augment_template, ("prompt", "cls"), "{prompt}, {cls}")
    sega_options = ("edit_guidance_scale", "edit_threshold", "edit_warmup_steps")
    if config.edit_template is None:
        given = [k for k in sega_options if getattr(config, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set semantic guidance, which needs --edit-template (e.g. "
                             "'{cls} person'); got none")
    else:
        check_template("edit_template", config.edit_template, ("cls",), "{cls} person")
        if config.soft_prompt is not None:
            raise ValueError("edit_template (semantic guidance) cannot be combined with soft_prompt")
        if config.family == "sdxl":
            raise ValueError("edit_template (semantic guidance) supports SD 1.x/2.x pipelines only, not family sdxl")
        scale = FAIR_DIFFUSION_EDIT_SCALE if config.edit_guidance_scale is None else config.edit_guidance_scale
        threshold = FAIR_DIFFUSION_THRESHOLD if config.edit_threshold is None else config.edit_threshold
        warmup = (default_warmup_steps(config.num_inference_steps) if config.edit_warmup_steps is None
                  else config.edit_warmup_steps)
        if not (np.isfinite(scale) and scale >= 0):
            raise ValueError(f"edit_guidance_scale (SEGA's s_e) must be a finite number >= 0; got {scale}")
        if not 0 <= threshold < 1:
            raise ValueError(f"edit_threshold (SEGA's lambda) must lie in [0, 1); got {threshold}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < config.num_inference_steps:
            raise ValueError(f"edit_warmup_steps must be an integer in [0, num_inference_steps) = [0, "
                             f"{config.num_inference_steps}); got {warmup!r}")
        config = replace(config, edit_guidance_scale=float(scale), edit_threshold=float(threshold),
                         edit_warmup_steps=warmup)
    if config.class_phrases is not None:
        if config.augment_template is None and config.edit_template is None:
            raise ValueError("class_phrases fill {cls} of --augment-template or --edit-template; neither is given")
        phrases = config.class_phrases
        if len(phrases) != len(names) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise ValueError(f"class_phrases must give one non-empty phrase per class ({', '.join(names)}); got "
                             f"{list(phrases)}")
    return config


def _device(config: EvalConfig, state=None) -> torch.device:
    if state is not None:
        return state.device
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def perceive_faces(images: torch.Tensor, detector, classifier, *, crop_size: int = 224,
                   device: torch.device | str = "cpu") -> Perceived:
    """The largest face of each image (detector box, or None), and the classifier's probabilities of its crop."""
    from scaleup.perception import classify_largest_faces

    with torch.no_grad():
        logits, faces = classify_largest_faces(images.to(device), detector, classifier, crop_size=crop_size)
    found = faces.found.cpu().numpy().astype(bool)
    boxes = [faces.detections[i].tolist() if found[i] else None for i in range(len(found))]
    return Perceived(has_face=found, boxes=boxes, probs=torch.softmax(logits.double(), dim=1).cpu().numpy())


def _requests(config: EvalConfig, names: Sequence[str]):
    """seed -> the class index asked of that image, or None when no debiasing option asks for classes."""
    from scaleup.evaluation.debiasing import requested_class

    if config.augment_template is None and config.edit_template is None:
        return None
    target = config.target if config.target is not None else [1.0 / len(names)] * len(names)
    return lambda seed: requested_class(seed, target)


def debiasing_note(config: EvalConfig, names: Sequence[str]) -> dict:
    """What results.json records of the debiasing options (the method, its templates and settings)."""
    method = " + ".join(m for m, on in (("prompt augmentation", config.augment_template is not None),
                                        ("semantic guidance", config.edit_template is not None)) if on)
    note = {"method": method, "class_phrases": list(config.class_phrases or names),
            "requested_from": "target" if config.target is not None else "uniform"}
    if config.augment_template is not None:
        note["augment_template"] = config.augment_template
    if config.edit_template is not None:
        note.update(edit_template=config.edit_template, edit_guidance_scale=config.edit_guidance_scale,
                    edit_threshold=config.edit_threshold, edit_warmup_steps=config.edit_warmup_steps,
                    edit_momentum="none (SEGA eqs. 6-7 not implemented)")
    return note


def build_parts(config: EvalConfig, names: Sequence[str], *, pipe=None, device: torch.device | None = None,
                ) -> tuple[EvaluationParts, dict]:
    """Load (or take) the pipeline and build detector, classifier and embedders; returns the parts and a note of
    what was used (recorded in ``results.json``)."""
    from scaleup.evaluation.debiasing import fill, generate_with_semantic_guidance
    from scaleup.models import load_clip, load_dinov2, load_pipeline
    from scaleup.models.adapters import adapters_disabled, load_lora
    from scaleup.models.pipelines import generate
    from scaleup.models.soft_prompt import SoftPrompt
    from scaleup.perception import ClipEmbedder, Dinov2Embedder
    from scaleup.perception.factory import classifier_needs_clip, make_classifier, make_detector

    device = device or _device(config)
    finetuned_in_memory = pipe is not None
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # fp16 convolutions are not implemented on every CPU build
    used: dict = {"device": str(device), "dtype": str(dtype).replace("torch.", "")}
    if pipe is None:
        pipe = load_pipeline(config.pipeline, family=config.family, torch_dtype=dtype, device=device)
        if config.lora is not None:
            load_lora(pipe, config.lora)
    used["image_size"] = config.height or int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    soft_prompt = (SoftPrompt.load(config.soft_prompt, device=device, dtype=pipe.text_encoder.dtype)
                   if config.soft_prompt else None)
    # CLIP is loaded only for a classifier built on it or for CLIP-T
    needs_clip = classifier_needs_clip(config.classifier) or config.clip_t
    clip_embedder = None
    if needs_clip:
        clip_model, clip_processor = load_clip(config.clip, device=device)
        clip_embedder = ClipEmbedder(clip_model, clip_processor)
        used["clip"] = getattr(clip_model, "name_or_path", None)
    classifier = make_classifier(config.classifier, config.attribute, clip_embedder=clip_embedder, device=device)
    detector = make_detector(config.detector)
    used.update(classifier=config.classifier, classifier_class=type(classifier).__name__, detector=config.detector)

    request = _requests(config, names)
    phrases = list(config.class_phrases or names)

    def _sample(prompt: str, seeds: Sequence[int], soft) -> torch.Tensor:
        if request is None:  # the plain path: the pipeline itself
            return generate(pipe, prompt, seeds, soft_prompt=soft, num_inference_steps=config.num_inference_steps,
                            guidance_scale=config.guidance_scale, height=config.height, width=config.width,
                            batch_size=len(seeds), progress=False)
        classes = [request(s) for s in seeds]
        prompts = [prompt if config.augment_template is None else fill(config.augment_template, phrases[c], prompt)
                   for c in classes]
        if config.edit_template is None:
            return generate(pipe, prompts, seeds, soft_prompt=soft, num_inference_steps=config.num_inference_steps,
                            guidance_scale=config.guidance_scale, height=config.height, width=config.width,
                            batch_size=len(seeds), progress=False)
        return generate_with_semantic_guidance(
            pipe, prompts, seeds, classes, [fill(config.edit_template, p) for p in phrases],
            edit_scale=config.edit_guidance_scale, threshold=config.edit_threshold,
            warmup_steps=config.edit_warmup_steps, num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale, height=config.height, width=config.width)

    def _generate(prompt: str, seeds: Sequence[int], original: bool = False) -> torch.Tensor:
        if not original:
            return _sample(prompt, seeds, soft_prompt)
        modules = [m for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None),
                               getattr(pipe, "unet", None)) if m is not None]
        with adapters_disabled(*modules):
            return _sample(prompt, seeds, None)

    def _perceive(images: torch.Tensor) -> Perceived:
        return perceive_faces(images, detector, classifier, crop_size=config.crop_size, device=device)

    parts = EvaluationParts(generate=_generate, perceive=_perceive, class_names=names, request=request)
    if config.content_classifier is not None:
        from scaleup.perception.factory import make_content_classifier

        content = make_content_classifier(config.content_classifier, device=device)
        parts.classify_content = lambda images: [content.class_names[i]
                                                 for i in content(images.to(device)).argmax(dim=1).tolist()]
        used["content_classifier"] = config.content_classifier
    if clip_embedder is not None and config.clip_t:
        parts.embed_images = lambda images: clip_embedder(images.to(device))
        parts.embed_texts = clip_embedder.embed_texts
    if config.compare_original:
        if config.lora is None and config.soft_prompt is None and not finetuned_in_memory:
            raise ValueError("--compare-original needs a finetuned model (--lora or --soft-prompt) to compare with")
        parts.generate_original = lambda prompt, seeds: _generate(prompt, seeds, original=True)
    if config.compare_original and config.image_embedder is not None:
        from scaleup.perception.factory import make_image_embedder

        embedder = make_image_embedder(config.image_embedder, device=device)
        parts.embed_images_similarity = lambda images: embedder(images.to(device))
        used["image_embedder"] = config.image_embedder
    elif config.compare_original:
        dino_model, dino_processor = load_dinov2(config.dinov2, device=device)
        dino = Dinov2Embedder(dino_model, dino_processor)
        parts.embed_images_dino = lambda images: dino(images.to(device))
        used["dinov2"] = getattr(dino_model, "name_or_path", None)
    return parts, used


def _versions() -> dict:
    found = {}
    for name in ("fairdiff", "torch", "diffusers", "transformers", "peft", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def run_eval(config: EvalConfig, *, pipe=None, parts: EvaluationParts | None = None, progress: bool = True) -> dict:
    """Run (or resume) the evaluation described by ``config``; returns the dictionary written to results.json.

    ``pipe`` evaluates an already-loaded (e.g. finetuned, in-memory) pipeline instead of ``config.pipeline``;
    ``parts`` replaces every model (tests, custom classifiers).
    """
    from scaleup.processes import process_state

    if config.guidance_scales is not None:
        from scaleup.evaluation.guidance_sweep import run_guidance_sweep

        validate(config)
        return run_guidance_sweep(config, lambda sub: run_eval(sub, pipe=pipe, parts=parts, progress=progress))
    config, names = validate(config)
    prompts = list(load_prompt_set(config.prompts).prompts)[:config.max_prompts]
    out = check_writable_folder(config.out, option="--out")  # read-only or a file in the way: before any load
    state = process_state()
    # what changes only the summary (protocol, intervals) or where the work runs does not bind the records
    settings = {k: v for k, v in config_to_dict(config).items()
                if k not in ("out", "restart", "batch_size", "device", "protocol", "bootstrap_resamples", "confidence",
                             "labelled_folder", "labelled_layout", "labelled_labels", "labelled_size",
                             "reference")}
    started = time.perf_counter()
    store = RecordStore(out, settings, restart=config.restart and state.is_main_process) \
        if state.is_main_process else None
    state.wait_for_everyone()
    if store is None:
        store = RecordStore(out, settings)
    used: dict = {"parts": "given"}
    if parts is None:
        parts, used = build_parts(config, names, pipe=pipe, device=_device(config, state if state.num_processes > 1
                                                                                    else None))
    with state.split_between_processes(list(range(len(prompts)))) as mine:
        run_evaluation(parts, prompts, store, n_images=config.images_per_prompt, base_seed=config.seed,
                       batch_size=config.batch_size, indices=mine, grid_dir=out / "grids",
                       grid_images=config.grid_images, progress=progress and state.is_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    per_prompt_records = [store.load(i, prompt) for i, prompt in enumerate(prompts)]
    records = [r for rs in per_prompt_records for r in rs]
    per_prompt = [prompt_summary(rs, names, config.target, confident=config.confident) for rs in per_prompt_records]
    write_table(out / "records.csv", records, names)
    results = {
        "job": "scaleup.evaluate", "config": config_to_dict(config), "seed": config.seed, "class_names": list(names),
        "models": used,
        "overall": overall_summary(per_prompt, records, names, config.target, confident=config.confident),
        "per_prompt": per_prompt,
        "protocols": {p.name: protocol_numbers(per_prompt_records, p, names, config.target,
                                               n_resamples=config.bootstrap_resamples, level=config.confidence,
                                               seed=config.seed)
                      for p in protocols_named(config.protocol)},
        "classifier_error": (_classifier_error(config, parts, names, per_prompt_records, used)
                             if config.labelled_folder is not None else None),
        "versions": _versions(), "processes": state.num_processes,
        "debiasing": (debiasing_note(config, names)
                      if config.augment_template is not None or config.edit_template is not None else None),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_this_run": round(time.perf_counter() - started, 3),
    }
    if config.reference is not None:
        from scaleup.evaluation.compare import compare_loaded
        from scaleup.evaluation.store import read_evaluation

        # this evaluation as read back from results.json would be (JSON types: lists, not tuples)
        this = json.loads(json.dumps(results, allow_nan=False))
        results["comparison"] = compare_loaded(config.reference, read_evaluation(config.reference), out,
                                               (this, per_prompt_records), protocol=config.protocol,
                                               n_resamples=max(config.bootstrap_resamples, 1),
                                               level=config.confidence)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    write_report(out, results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from scaleup.models.errors import ModelUnavailableError

    try:
        config = parse_config(EvalConfig, argv, prog="python -m scaleup.evaluate", description=__doc__)
        results = run_eval(config)
    except (ConfigError, ValueError, ModelUnavailableError, FileNotFoundError) as err:
        print(f"scaleup.evaluate: error: {err}", file=sys.stderr)
        return 2
    if results:
        if "guidance_scales" in results:
            from scaleup.evaluation.guidance_sweep import sweep_lines

            print(sweep_lines(results), file=sys.stderr)
        else:
            print(summary_lines(results), file=sys.stderr)
    return 0


def summary_lines(results: dict) -> str:
    """What the job prints: one line per prompt (class shares, bias, and the optional numbers), then the overall."""
    names = results["class_names"]
    lines = []
    for p in results["per_prompt"]:
        if p["freq"] is None:
            lines.append(f"  {p['prompt']}: no face found in any of its {p['n_images']} images")
            continue
        shares = ", ".join(f"{name} {p['freq'][name]:.2f}" for name in names)
        extra = "".join(f", {label} {p[key]:.2f}" for key, label in (("confident_share", "confident"),
                                                                      ("prompt_accuracy", "prompt accuracy"),
                                                                      ("no_face_share", "no face"))
                        if p.get(key) is not None and (key != "no_face_share" or p[key] > 0))
        lines.append(f"  {p['prompt']}: {shares}; bias {p['bias']:.3f}{extra}")
    overall = results["overall"]
    if overall["bias"] is None:
        tail = "no face found in any image, so no bias can be measured (try another --detector)"
    else:
        tail = f"mean bias {overall['bias']['mean']:.3f} +- {overall['bias']['sd']:.3f} over prompts"
    lines += [protocol_line(p) for p in (results.get("protocols") or {}).values()]
    comparison = results.get("comparison")
    if comparison:
        from scaleup.evaluation.compare import difference_line

        lines.append(f"  against the reference {comparison['a']} (same prompts and noise):")
        lines += [difference_line(name, d) for name, d in comparison["differences"].items()]
    error = results.get("classifier_error")
    if error:
        accuracy = ", ".join(f"{k} {v:.3f}" for k, v in error["accuracy_per_class"].items())
        lines.append(f"  classifier on {error['n_labelled']} labelled images: accuracy {accuracy}")
        for name, entry in error["protocols"].items():
            interval = entry["interval"]
            shown = f" {interval_text(interval)}" if interval else ""
            lines.append(f"  protocol {name}, corrected for the classifier (CLEAM, {entry['on']}): {entry['raw']:.3f} "
                         f"raw -> {entry['corrected']:.3f}{shown}")
    lines.append(f"scaleup.evaluate: {overall['n_prompts']} prompts, {tail}; no-face share "
                 f"{overall['pooled']['no_face_share']:.3f}; wrote {Path(results['config']['out']) / 'results.json'}")
    return "\n".join(lines)


def _classifier_error(config: EvalConfig, parts: EvaluationParts, names, per_prompt_records, used: dict) -> dict:
    """The classifier measured on the labelled folder and each protocol's number corrected for it (CLEAM)."""
    from scaleup.evaluation.classifier_error import corrected_protocol_numbers, labelled_predictions
    from scaleup.perception.labelled_faces import read_labelled_images

    from scaleup.perception.factory import resolve_attribute

    data = read_labelled_images(config.labelled_folder, config.labelled_layout, resolve_attribute(config.attribute),
                                labels=config.labelled_labels)
    size = config.labelled_size or used.get("image_size") or config.height or 512
    labelled = labelled_predictions(parts.perceive, data.paths, data.labels, size=size)
    result = corrected_protocol_numbers(per_prompt_records, labelled, protocols_named(config.protocol), names,
                                        config.target, n_resamples=config.bootstrap_resamples,
                                        level=config.confidence, seed=config.seed)
    return {"folder": str(config.labelled_folder), "layout": config.labelled_layout, "image_size": size, **result}


def protocol_line(numbers: dict) -> str:
    """One protocol's number, its interval and what it is comparable to."""
    name = {"adft": "mean bias over prompts", "popalign": "pooled discrepancy"}[numbers["protocol"]]
    if numbers["value"] is None:
        return f"  protocol {numbers['protocol']}: no face found, no {name}"
    interval = numbers.get("interval")
    shown = f", {100 * interval['level']:g} % interval {interval_text(interval)}" if interval else ""
    short = " (fewer images than the protocol's)" if numbers["short_of_protocol"] else ""
    return (f"  protocol {numbers['protocol']}: {name} {numbers['value']:.3f}{shown} on "
            f"{numbers['images_per_prompt']} images per prompt{short}; comparable to {numbers['comparable_to']}")


if __name__ == "__main__":
    sys.exit(main())
