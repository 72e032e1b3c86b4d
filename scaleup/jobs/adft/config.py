"""Settings of the aDFT job (seed 000, [0104]-[0135]) and their check before anything is loaded or computed.

:class:`AdftConfig` holds every setting; each field is also a command-line flag (``--batch-size 24``) and a config
file key, the flags winning over the file (:func:`scaleup.job_config.parse_config`). Fields left ``None`` take the
preset's value. :func:`plan_job` checks the whole configuration, resolves the preset and returns a :class:`JobPlan`,
or raises one ``ValueError`` (or :class:`~scaleup.models.errors.ModelNotFoundError` for a missing model) naming the
setting, what was wrong and what is expected, before any model is read.

Presets (``--preset``):

=================  ==============================================================================================
``gender``         seed 000 [0121]: gender, lambda_face = 1, lambda_img = 8, 0.2 x 8, 0.2 x 0.2 x 8, N = 24, C = 0.8
``race``           [0121]-[0122]: race (4 classes of [0120]), lambda_face = 0.1, lambda_img = 6, 0.6x, 0.3x, N = 32
``gender-race``    [0123]: gender and race jointly, lambda_face = 0.1, N = 32, C = 0.6
``age``            [0132]: gender and race as [0123], plus age 75 % young / 25 % old within every gender x race group
                   (the seed states no hyper-parameters for this run: [0123]'s are used, age weighted as gender)
``multi-concept``  [0134]: [0123] on four prompt families at once: occupations, sports, occupations with style and
                   context (the shipped LAION-Aesthetics-style list), personal descriptors
=================  ==============================================================================================

``--attribute`` debiases another attribute with the preset's other hyper-parameters: a built-in one, or your own as
``name:class1,class2`` (``--attribute ink:red,blue --lambda-img '{"ink": [8, 0.2, 0.2]}' --targets '{"ink": [0.5,
0.5]}' --classifier mypackage.ink:make_classifier --detector whole-image``). Detectors, attributes and classifiers are
named as in :mod:`scaleup.perception.factory`, as in the evaluation and PopAlign jobs. CLIP and DINOv2 are required
only where used: DINOv2 for L_img (a non-zero lambda_img), CLIP for L_img, a CLIP-based classifier, or L_face without
``--face-embedding-model``. ``--image-embedder package.module:factory`` puts your own embedder in L_img instead of
CLIP + DINOv2 (L_img = 1 - cos of its embeddings: the testbed uses ``scaleup.testbed.classifiers:shape_embedder``, the
colour-blind stroke shape), and then neither model is needed for it. ``--gradient exact`` backpropagates through the
whole sampler chain (eq. 9) instead of Algorithm A.1's adjusted gradient; ``--adam-beta1/2/epsilon`` as in
diffusers' training scripts.

All train with AdamW at 5e-5 ([0121]) through DPM-Solver++(2M), CFG 7.5, about 20 steps ([0119]-[0120]); the
first three presets are :data:`theory.adft_loss.PRESETS`, the formulas' own record of [0121]-[0123].
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from theory.adft_loss import PRESETS as PAPER_PRESETS
from theory.adft_loss import AdftPreset, AttributeSetting, ImageWeights
from theory.sampler_gradient import COEFFICIENTS
from theory.validation import check_distribution, check_threshold

from scaleup.setting_ranges import Range, check_ranges, setting

ADAPTERS = ("text-encoder-lora", "unet-lora", "both-lora", "soft-prompt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: diffusers.optimization.get_scheduler names that need no further arguments
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass(frozen=True)
class JobPreset:
    """A preset of the job: the paper's hyper-parameters (:class:`theory.adft_loss.AdftPreset`) plus what the job
    needs besides them: non-uniform and conditional targets, prompt families, the attribute evaluated."""

    paper: AdftPreset
    prompts: tuple[str, ...] = ("occupations-train",)
    test_prompts: tuple[str, ...] = ("occupations-test",)
    targets: tuple[tuple[str, tuple[float, ...]], ...] = ()
    conditional: tuple[tuple[str, tuple[str, ...]], ...] = ()
    eval_attribute: str = "gender"


_GENDER_RACE = PAPER_PRESETS["gender-race"]
_AGE = AdftPreset(
    "age", "[0132] ([0123]'s hyper-parameters; the seed gives none for this run)",
    _GENDER_RACE.attributes + (AttributeSetting("age", 2, ImageWeights.from_factors(8.0, 0.2, 0.2)),),
    lambda_face=_GENDER_RACE.lambda_face, batch_size=_GENDER_RACE.batch_size, threshold=_GENDER_RACE.threshold,
    iterations=_GENDER_RACE.iterations, learning_rate=_GENDER_RACE.learning_rate, external_faces="FairFace",
    classifier_data="FairFace")
_MULTI = AdftPreset(
    "multi-concept", "[0134]-[0135] ([0123]'s hyper-parameters)", _GENDER_RACE.attributes,
    lambda_face=_GENDER_RACE.lambda_face, batch_size=_GENDER_RACE.batch_size, threshold=_GENDER_RACE.threshold,
    iterations=_GENDER_RACE.iterations, learning_rate=_GENDER_RACE.learning_rate, external_faces="FairFace",
    classifier_data="FairFace")

#: The job's presets by name (module docstring).
PRESETS: dict[str, JobPreset] = {
    "gender": JobPreset(PAPER_PRESETS["gender"], eval_attribute="gender"),
    "race": JobPreset(PAPER_PRESETS["race"], eval_attribute="race"),
    "gender-race": JobPreset(_GENDER_RACE, eval_attribute="gender_race"),
    "age": JobPreset(_AGE, targets=(("age", (0.75, 0.25)),), conditional=(("age", ("gender", "race")),),
                     eval_attribute="age"),
    "multi-concept": JobPreset(_MULTI, prompts=("occupations-train", "sports-train", "laion-aesthetics",
                                                "personal-descriptors"),
                               test_prompts=("occupations-test", "sports-test"), eval_attribute="gender_race"),
}


@dataclass(frozen=True)
class AdftConfig:
    """Every setting of the aDFT job; ``None`` takes the preset's value (seed 000 [0121]-[0123], [0132], [0134])."""

    preset: str = field(default="gender", metadata={"help": "gender | race | gender-race | age | multi-concept"})
    attribute: Optional[str] = field(
        default=None, metadata={"help": "debias this attribute instead of the preset's: a built-in name or your own "
                                        "as name:class1,class2 (e.g. ink:red,blue; give its lambda_img); the preset "
                                        "keeps N, C, lambda_face, iterations and learning rate"})
    # models
    pretrained_model: Optional[str] = field(default=None, metadata={"help": "SD 1.5 folder or id; default "
                                                                            "$FAIRDIFF_SD15"})
    clip_model: Optional[str] = field(default=None, metadata={"help": "CLIP folder or id for L_img (and the "
                                                                      "zero-shot classifier); default $FAIRDIFF_CLIP"})
    dinov2_model: Optional[str] = field(default=None, metadata={"help": "DINOv2 folder or id; default "
                                                                        "$FAIRDIFF_DINOV2"})
    face_embedding_model: Optional[str] = field(
        default=None, metadata={"help": "folder of a transformers CLIP or DINOv2 model embedding faces for L_face; "
                                        "default: the CLIP image tower"})
    external_faces: Optional[str] = field(default=None, metadata={"help": "folder of real face images (D_F of "
                                                                          "[0108]); needed when lambda_face > 0"})
    max_external_faces: int = setting(10_000, Range.integer(1))
    # what is finetuned (seed 000 Table 1)
    adapter: Literal["text-encoder-lora", "unet-lora", "both-lora", "soft-prompt"] = "text-encoder-lora"
    lora_rank: int = setting(50, Range.integer(1))
    unet_lora_rank: Optional[int] = setting(None, Range.integer(1), help="default: lora_rank")
    soft_prompt_tokens: int = setting(5, Range.integer(1))
    # faces and classifiers
    detector: str = field(
        default="dlib", metadata={"help": "dlib | haar | insightface | mtcnn | whole-image (the whole image: models "
                                          "without faces) | centre (central square: tiny random models, benchmarks)"})
    face_expand: Optional[float] = setting(None, Range.number(-1, low_open=True))
    crop_size: int = setting(224, Range.integer(1))
    classifier: str = field(default="clip-zero-shot", metadata={"help": "training classifier of every attribute: "
                                                                        "clip-zero-shot | dlib-gender | dlib-age | "
                                                                        "probe:/path | package.module:factory"})
    classifiers: dict[str, str] = field(default_factory=dict, metadata={"help": "per-attribute classifier, JSON"})
    # the objective
    targets: dict[str, list[float]] = field(default_factory=dict, metadata={"help": "per-attribute target "
                                                                                    "distribution, JSON"})
    conditional: Optional[dict[str, list[str]]] = field(
        default=None, metadata={"help": "attribute -> conditioning attributes, JSON (age within gender x race)"})
    threshold: Optional[float] = None
    lambda_face: Optional[float] = setting(None, Range.number(0))
    lambda_img: dict[str, list[float]] = field(
        default_factory=dict, metadata={"help": "attribute -> [lambda_img_1, factor_2, factor_3], JSON"})
    image_embedder: str = field(
        default="clip+dinov2", metadata={"help": "L_img's embedders: clip+dinov2 (seed 000 eq. 7) or your own as "
                                                 "package.module:factory (L_img = 1 - cos of its embeddings)"})
    agreement_needs_confidence: bool = False
    dal_method: Literal["auto", "exact", "binary", "mc"] = "auto"
    dal_mc_samples: int = setting(1_000, Range.integer(1))
    # data
    prompts: Optional[tuple[str, ...]] = field(default=None, metadata={"help": "prompt sets (names or files)"})
    test_prompts: Optional[tuple[str, ...]] = None
    batch_size: Optional[int] = setting(None, Range.integer(1), help="N images per iteration, all processes")
    sub_batch_size: int = setting(8, Range.integer(1), help="images differentiated at once (memory)")
    # the sampler (seed 000 [0119]-[0120], Algorithm A.1)
    num_inference_steps: int = setting(20, Range.integer(1))
    random_inference_steps: bool = field(default=False, metadata={"help": "draw the steps per iteration from "
                                                                          "inference_steps_range"})
    inference_steps_range: tuple[int, ...] = setting((19, 23), Range.integer(1), help="low, high")
    guidance_scale: float = setting(7.5, Range.number(1))
    coefficients: Literal["algorithm_a1", "sampler"] = "algorithm_a1"
    gradient: Literal["adjusted", "exact"] = field(
        default="adjusted", metadata={"help": "adjusted (Algorithm A.1: z_i detached before the U-Net, eps_i's "
                                              "gradient scaled by C_i) or exact (through the whole chain, eq. 9)"})
    resolution: Optional[int] = setting(None, Range.integer(8), help="pixels, a multiple of 8; default: the "
                                                                        "U-Net's native size")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    loss_scale: Optional[float] = setting(None, Range.number(0, low_open=True),
                                          help="static loss scale; default 1024 for fp16, else 1")
    gradient_checkpointing: bool = True
    # optimisation
    iterations: Optional[int] = setting(None, Range.integer(1))
    # Adam moves every parameter by about the rate per step: a rate >= 1 erases the model
    learning_rate: Optional[float] = setting(None, Range.number(0, 1, low_open=True, high_open=True,
                                                               note="seed 000 uses 1e-5 to 5e-3"))
    weight_decay: float = setting(1e-2, Range.number(0))
    adam_beta1: float = setting(0.9, Range.number(0, 1, high_open=True), help="AdamW's beta1 (diffusers' --adam_beta1)")
    adam_beta2: float = setting(0.999, Range.number(0, 1, high_open=True),
                                help="AdamW's beta2 (diffusers' --adam_beta2)")
    adam_epsilon: float = setting(1e-8, Range.number(0, 1, low_open=True, high_open=True),
                                  help="AdamW's epsilon (diffusers' --adam_epsilon)")
    lr_scheduler: str = field(default="constant", metadata={"help": ", ".join(LR_SCHEDULERS)})
    lr_warmup_steps: int = setting(0, Range.integer(0))
    max_grad_norm: Optional[float] = setting(None, Range.number(0, low_open=True))
    ema: bool = False
    ema_decay: float = setting(0.996, Range.number(0, 1, low_open=True, high_open=True))
    # checkpoints, logs, evaluation
    output_dir: str = "runs/adft"
    checkpoint_every: int = setting(200, Range.integer(0), help="0: no checkpoints")
    checkpoints_total_limit: Optional[int] = setting(3, Range.integer(1))
    resume: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    until: Optional[int] = setting(None, Range.integer(1), help="stop after this iteration (resume later)")
    start_over: bool = field(default=False, metadata={"help": "the output folder holds a run: move it aside (to "
                                                                "OUTPUT_DIR.replaced-<time>) and start anew"})
    evaluate_checkpoints: bool = field(default=False, metadata={"help": "evaluate held-out bias at every checkpoint "
                                                                        "and keep the best"})
    eval_attribute: Optional[str] = field(default=None, metadata={"help": "default: the preset's, or --attribute"})
    eval_classifier: str = field(default="clip-zero-shot", metadata={"help": "checked and used with "
                                                                             "--evaluate-checkpoints"})
    eval_detector: Optional[str] = field(default=None, metadata={"help": "default: the training detector"})
    eval_images_per_prompt: Optional[int] = setting(None, Range.integer(1))
    eval_max_prompts: Optional[int] = setting(None, Range.integer(1))
    eval_batch_size: int = setting(8, Range.integer(1))
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | all: accelerate's "
                                                                 "trackers, as diffusers' --report_to"})
    progress: bool = True
    seed: int = setting(0, Range.integer(0, 2 ** 63, high_open=True))


@dataclass(frozen=True)
class AttributePlan:
    """One debiased attribute: classes, target distribution, lambda_img, conditioning attributes, classifier."""

    name: str
    class_names: tuple[str, ...]
    target: tuple[float, ...]
    weights: ImageWeights
    conditional_on: tuple[str, ...]
    classifier: str

    @property
    def attribute(self):
        """The :class:`~scaleup.perception.attributes.Attribute` itself: the built-in one of this name, else the
        user-defined one with these classes."""
        from scaleup.perception.attributes import ATTRIBUTES, Attribute

        return ATTRIBUTES.get(self.name) or Attribute(self.name, self.class_names)


@dataclass(frozen=True)
class JobPlan:
    """The configuration resolved against its preset and checked (:func:`plan_job`)."""

    preset: str
    paragraph: str
    attributes: tuple[AttributePlan, ...]
    prompts: tuple[str, ...]
    test_prompts: tuple[str, ...]
    batch_size: int
    threshold: float
    lambda_face: float
    iterations: int
    learning_rate: float
    loss_scale: float
    eval_attribute: str
    """The evaluated attribute as a setting (a built-in name or ``name:class1,class2``)."""
    eval_detector: str
    needs_clip: bool = True
    """CLIP is needed: for L_img (a non-zero lambda_img), a classifier built on it, or L_face without its own
    face-embedding model."""
    needs_dinov2: bool = True
    """DINOv2 is needed: for L_img only."""
    image_semantics: bool = True
    """L_img is on (a non-zero lambda_img): its embedders (``image_embedder``) are built."""

    @property
    def image_weights(self) -> tuple[ImageWeights, ...]:
        return tuple(a.weights for a in self.attributes)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)


def _fail(setting: str, problem: str, expected: str) -> ValueError:
    return ValueError(f"{setting}: {problem}; expected {expected}")


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"got {value!r}", f"an integer >= {minimum}")
    return value


def _finite(name: str, value, *, minimum: float = 0.0, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        raise _fail(name, f"got {value!r}", f"a finite number {'>' if strict else '>='} {minimum}")
    return float(value)


def _checked(setting: str, check, *args):
    """``check(*args)`` (a check of :mod:`scaleup.perception.factory`) with its ValueError prefixed by the setting."""
    try:
        return check(*args)
    except ValueError as err:
        raise ValueError(f"{setting}: {err}") from None


def external_face_files(folder: str | os.PathLike) -> list[Path]:
    """The image files (png, jpg, jpeg, bmp, webp) directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).expanduser().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _check_models(config: AdftConfig, *, needs_clip: bool, needs_dinov2: bool) -> None:
    from scaleup.models.loading import pipeline_family, resolve_model_source

    resolve_model_source("sd15", config.pretrained_model)
    folder = None if config.pretrained_model is None else Path(config.pretrained_model).expanduser()
    if folder is not None and (folder / "model_index.json").is_file() and pipeline_family(folder) == "sdxl":
        # read from model_index.json, before diffusers fails inside with a TypeError
        raise _fail("pretrained_model", f"{str(folder)!r} is an SDXL pipeline",
                    "an SD 1.5-architecture pipeline (the aDFT job finetunes SD 1.5's text encoder, U-Net or a soft "
                    "prompt, seed 000; PopAlign's job trains SDXL)")
    if needs_clip:
        resolve_model_source("clip", config.clip_model)
    if needs_dinov2:
        resolve_model_source("dinov2", config.dinov2_model)
    if config.face_embedding_model is not None:
        folder = Path(config.face_embedding_model).expanduser()
        if not (folder / "config.json").is_file():
            from scaleup.models.errors import ModelNotFoundError

            raise ModelNotFoundError(f"face_embedding_model: {str(folder)!r} holds no config.json; expected the "
                                     "folder of a transformers CLIPModel or Dinov2Model (save_pretrained layout)")


def _attribute_plans(config: AdftConfig, preset: JobPreset) -> tuple[AttributePlan, ...]:
    """The debiased attributes: the preset's, or ``--attribute``; each with its target (uniform by default, [0120]),
    lambda_img ([0121]), conditioning and training classifier, checked against its classes."""
    from scaleup.perception.attributes import ATTRIBUTES
    from scaleup.perception.factory import check_classifier_spec, resolve_attribute

    paper = preset.paper
    preset_weights = {a.name: a.weights for a in paper.attributes}
    if config.attribute is None:
        debiased = [ATTRIBUTES[a.name] for a in paper.attributes]
        preset_targets, preset_conditional, source = dict(preset.targets), dict(preset.conditional), \
            f"preset {config.preset!r}"
    else:
        # the attribute replaces the preset's attributes, targets and conditioning; the preset's lambda_img is kept
        # only for an attribute the preset itself debiases (a user's attribute never takes gender's)
        debiased = [_checked("attribute", resolve_attribute, config.attribute)]
        preset_targets, preset_conditional, source = {}, {}, f"attribute {config.attribute!r}"
    names = tuple(a.name for a in debiased)

    for key, label in ((config.classifiers, "classifiers"), (config.targets, "targets"),
                       (config.lambda_img, "lambda_img"), (config.conditional or {}, "conditional")):
        unknown = sorted(set(key) - set(names))
        if unknown:
            raise _fail(label, f"attribute(s) {', '.join(unknown)} are not debiased by {source}",
                        f"keys among {', '.join(names)}")
    targets = preset_targets | {k: tuple(v) for k, v in config.targets.items()}
    conditional = preset_conditional if config.conditional is None else {
        k: tuple(v) for k, v in config.conditional.items()}
    attributes = []
    for attr in debiased:
        name, k = attr.name, attr.num_classes
        target = targets.get(name, (1.0 / k,) * k)  # uniform by default ([0120])
        try:
            target = tuple(float(v) for v in check_distribution(target, k, name=f"targets[{name!r}]"))
        except ValueError as err:
            raise ValueError(f"{err} (the classes of {name} are {list(attr.class_names)})") from None
        weights = preset_weights.get(name)
        if name in config.lambda_img:
            values = config.lambda_img[name]
            if not (isinstance(values, (list, tuple)) and len(values) == 3):
                raise _fail(f"lambda_img[{name!r}]", f"got {values!r}",
                            "[lambda_img_1, factor_2, factor_3] as in [0121]: [8, 0.2, 0.2]")
            weights = ImageWeights.from_factors(*(_finite(f"lambda_img[{name!r}]", v) for v in values))
        if weights is None:
            raise _fail(f"lambda_img[{name!r}]", f"not given, and preset {config.preset!r} does not debias {name!r}",
                        "[lambda_img_1, factor_2, factor_3] for it, e.g. [8, 0.2, 0.2] as [0121] for gender, or "
                        "[0, 0, 0] for no L_img")
        on = conditional.get(name, ())
        bad = [c for c in on if c not in names or c == name]
        if bad:
            raise _fail(f"conditional[{name!r}]", f"cannot condition on {bad}",
                        f"other debiased attributes among {[n for n in names if n != name]}")
        spec = config.classifiers.get(name, config.classifier)
        _checked(f"classifiers[{name!r}]" if name in config.classifiers else "classifier", check_classifier_spec,
                 spec, attr)
        attributes.append(AttributePlan(name, attr.class_names, target, weights, on, spec))
    return tuple(attributes)


def plan_job(config: AdftConfig, *, num_processes: int = 1, check_models: bool = True) -> JobPlan:
    """Check ``config`` and resolve it against its preset; nothing is loaded or computed.

    Raises
    ------
    ValueError
        One message naming the setting, what was wrong and what is expected (unknown preset, a target that is not
        a distribution over the attribute's classes, a threshold outside [0, 1], N smaller than an attribute's
        number of classes or not divisible by the number of processes, ...).
    ModelNotFoundError
        When a model is not on this machine (``check_models``).
    """
    from scaleup.perception.factory import (CLIP_DINOV2, check_classifier_spec, check_detector_name,
                                            check_image_embedder_spec, classifier_needs_clip, resolve_attribute)
    from scaleup.prompts import load_prompt_set

    check_ranges(config)  # every numeric setting against the range declared on its field
    if config.preset not in PRESETS:
        raise _fail("preset", f"unknown preset {config.preset!r}", f"one of {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    paper = preset.paper
    if config.adapter not in ADAPTERS:
        raise _fail("adapter", f"unknown adapter {config.adapter!r}", f"one of {', '.join(ADAPTERS)}")
    _checked("detector", check_detector_name, config.detector)
    eval_detector = config.eval_detector or config.detector
    _checked("eval_detector", check_detector_name, eval_detector)
    attributes = _attribute_plans(config, preset)

    threshold = check_threshold(paper.threshold if config.threshold is None else config.threshold)
    n = paper.batch_size if config.batch_size is None else config.batch_size
    for a in attributes:
        if n < len(a.class_names):
            raise _fail("batch_size", f"N = {n} is smaller than the {len(a.class_names)} classes of {a.name}",
                        f"N >= {max(len(b.class_names) for b in attributes)} (seed 000 uses 24 and 32)")
    _positive_int("num_processes", num_processes)
    if n % num_processes:
        raise _fail("batch_size", f"N = {n} does not split evenly over {num_processes} processes",
                    f"a multiple of {num_processes}")
    lambda_face = float(paper.lambda_face if config.lambda_face is None else config.lambda_face)
    iterations = paper.iterations if config.iterations is None else config.iterations
    learning_rate = float(paper.learning_rate if config.learning_rate is None else config.learning_rate)
    if config.lr_scheduler not in LR_SCHEDULERS:
        raise _fail("lr_scheduler", f"unknown schedule {config.lr_scheduler!r}", f"one of {', '.join(LR_SCHEDULERS)}")
    if config.dal_method not in ("auto", "exact", "binary", "mc"):
        raise _fail("dal_method", f"got {config.dal_method!r}", "auto, exact, binary or mc")
    lo_hi = tuple(config.inference_steps_range)
    if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
        raise _fail("inference_steps_range", f"got {lo_hi!r}", "two integers 1 <= low <= high (the official code: "
                                                               "19, 23)")
    if config.coefficients not in COEFFICIENTS:
        raise _fail("coefficients", f"got {config.coefficients!r}", f"one of {', '.join(COEFFICIENTS)}")
    if config.gradient not in ("adjusted", "exact"):
        raise _fail("gradient", f"got {config.gradient!r}", "adjusted (Algorithm A.1) or exact (eq. 9)")
    if config.resolution is not None and config.resolution % 8:
        raise _fail("resolution", f"{config.resolution} is not a multiple of 8", "a multiple of 8 (512 for SD 1.5)")
    if config.mixed_precision not in ("no", "fp16", "bf16"):
        raise _fail("mixed_precision", f"got {config.mixed_precision!r}", "no, fp16 or bf16")
    loss_scale = config.loss_scale if config.loss_scale is not None else (
        1024.0 if config.mixed_precision == "fp16" else 1.0)
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise _fail("output_dir", f"{out} is a file", "a folder for checkpoints, logs and weights")
    if config.resume not in (None, "", "none", "latest"):
        from scaleup.training.checkpoints import resolve_resume

        resolve_resume(out, config.resume)

    if lambda_face > 0:
        if config.external_faces is None:
            raise _fail("external_faces", "not given but lambda_face > 0",
                        "a folder of real face images (CelebA / FairFace crops, [0108]) or lambda_face = 0")
        folder = Path(config.external_faces).expanduser()
        if not folder.is_dir() or not external_face_files(folder):
            raise _fail("external_faces", f"{str(folder)!r} is not a folder holding images",
                        f"a folder of face images ({', '.join(IMAGE_SUFFIXES)})")

    prompts = preset.prompts if config.prompts is None else tuple(config.prompts)
    test_prompts = preset.test_prompts if config.test_prompts is None else tuple(config.test_prompts)
    if not prompts:
        raise _fail("prompts", "no prompt set given", "one or more prompt set names or files")
    for name in prompts + test_prompts:
        load_prompt_set(name)  # a missing, empty or non-UTF-8 file fails here with its own message

    eval_attribute = config.eval_attribute or config.attribute or preset.eval_attribute
    eval_attr = _checked("eval_attribute", resolve_attribute, eval_attribute)
    if config.evaluate_checkpoints:  # the evaluation classifier is built only then
        _checked("eval_classifier", check_classifier_spec, config.eval_classifier, eval_attr)
    from scaleup.training.trackers import check_report_to

    check_report_to(config.report_to)
    # L_img is the only user of DINOv2, and of CLIP besides CLIP-based classifiers and L_face's default embedder:
    # a run whose lambda_img are all 0 needs neither model for it
    image_semantics = any(max(a.weights.agree, a.weights.outside_face, a.weights.face) > 0 for a in attributes)
    _checked("image_embedder", check_image_embedder_spec, config.image_embedder)
    clip_dinov2 = image_semantics and config.image_embedder == CLIP_DINOV2
    needs_clip = (clip_dinov2 or any(classifier_needs_clip(a.classifier) for a in attributes)
                  or (lambda_face > 0 and config.face_embedding_model is None)
                  or (config.evaluate_checkpoints and classifier_needs_clip(config.eval_classifier)))
    if check_models:
        _check_models(config, needs_clip=needs_clip, needs_dinov2=clip_dinov2)
    return JobPlan(preset=config.preset, paragraph=paper.paragraph, attributes=tuple(attributes), prompts=prompts,
                   test_prompts=test_prompts, batch_size=n, threshold=threshold, lambda_face=lambda_face,
                   iterations=iterations, learning_rate=learning_rate, loss_scale=float(loss_scale),
                   eval_attribute=eval_attribute, eval_detector=eval_detector, needs_clip=needs_clip,
                   needs_dinov2=clip_dinov2, image_semantics=image_semantics)
