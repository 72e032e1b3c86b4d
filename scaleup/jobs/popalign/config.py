"""The three stages' configurations: dataclass defaults < ``--config file.yaml`` < ``--flags``
(:func:`scaleup.job_config.parse_config`). Defaults follow seed 001 and its public code; ``configs/`` holds the
paper's SDXL recipe and smaller ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaleup.setting_ranges import Range, setting


#: The aDFT job's (and diffusers' scripts') names of the same settings, accepted here too.
OUT_ALIASES = ("--output-dir",)
MODEL_ALIASES = ("--pretrained-model",)


@dataclass
class GenerateConfig:
    """``generate``: images of the identity-neutral prompts and of their identity-augmented versions."""

    out: str = field(metadata={"aliases": OUT_ALIASES,
                               "help": "output folder (images, per-task records, generation.json)"})
    pipeline: str | None = field(default=None, metadata={
        "aliases": MODEL_ALIASES,
        "help": "pipeline folder or hub id; None: FAIRDIFF_SD15 / FAIRDIFF_SDXL or the cached default"})
    family: str | None = field(default=None, metadata={"help": "sd15 or sdxl; None: read from the folder"})
    prompts: str = field(default="popalign-occupations", metadata={"help": "shipped prompt set or prompt file"})
    max_prompts: int | None = field(default=None, metadata={"help": "use the first n prompts only"})
    keywords: tuple[str, ...] = field(default=("gender",), metadata={
        "help": "a shipped keyword set (gender, race, gender_race, age) or >= 2 comma-separated keywords"})
    keyword_attribute: str | None = field(default=None, metadata={
        "help": "filter attribute of user keywords: a built-in one or your own as name:class1,class2"})
    keyword_classes: tuple[str, ...] = field(default=(), metadata={
        "help": "class of that attribute per keyword; may be left out when the keywords are its class names"})
    augment_template: str | None = field(default=None, metadata={
        "help": "template with {keyword} and {prompt}; None: the keyword after 'a realistic photo of '"})
    images_per_neutral: int = field(default=100, metadata={"help": "M, images per neutral prompt (Sec. 5.1: 100)"})
    images_per_augmented: int = field(default=10, metadata={"help": "m, images per augmented prompt (Sec. 5.1: 10)"})
    num_inference_steps: int = field(default=25, metadata={"help": "sampler steps"})
    guidance_scale: float = field(default=6.5, metadata={"help": "classifier-free guidance (App. A.1: 6.5)"})
    height: int | None = field(default=None, metadata={"help": "pixels; None: the pipeline's native size"})
    width: int | None = field(default=None, metadata={"help": "pixels; None: the pipeline's native size"})
    batch_size: int = field(default=8, metadata={"help": "images per pipeline call"})
    torch_dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), fp32, fp16, bf16"})
    scheduler: str | None = field(default="dpm++2m", metadata={"help": "sampler; None keeps the pipeline's"})
    seed: int = field(default=0, metadata={"help": "base seed of every image's seed"})


@dataclass
class BuildSetsConfig:
    """``build-sets``: the sanity filter, then winning / losing sets, written as an imagefolder dataset."""

    generated: str = field(metadata={"help": "the generate stage's output folder"})
    out: str = field(metadata={"aliases": OUT_ALIASES,
                               "help": "dataset folder to write (PNG images, metadata.jsonl, README.md)"})
    set_size: int = field(default=5, metadata={"help": "N, images per set (the public code: 5)"})
    sets_per_prompt: int | None = field(default=None, metadata={
        "help": "set pairs per neutral prompt; None: as many disjoint sets as the images allow"})
    target: tuple[float, ...] = field(default=(), metadata={
        "help": "winning sets' distribution over the keywords, e.g. 0.8,0.2 (App. H.2); empty: uniform"})
    filter: str = field(default="apply", metadata={
        "help": "apply: drop failing images and pairs; record: only record the verdicts; off: no perception"})
    detector: str = field(default="dlib", metadata={
        "help": "dlib, haar, insightface, mtcnn, whole-image (the whole image: models without faces) or centre"})
    classifier: str = field(default="auto", metadata={
        "help": "auto, clip-zero-shot (clip), dlib-gender, dlib-age, probe:FOLDER, package.module:factory, or "
                "tiny-clip (stand-in, random weights)"})
    clip_model: str | None = field(default=None, metadata={"help": "CLIP folder for classifier=clip (FAIRDIFF_CLIP)"})
    min_confidence: float = field(default=0.5, metadata={
        "help": "an augmented image whose top class probability is below this is ambiguous"})
    require_winner_closer: bool = field(default=True, metadata={
        "help": "drop a pair unless the winning set's classes are closer to the target than the losing set's"})
    link: str = field(default="hardlink", metadata={"help": "hardlink or copy the generated PNGs"})
    seed: int = field(default=0, metadata={"help": "seed of the set draws"})


@dataclass
class TrainConfig:
    """``train``: PopAlign (eq. 9) or the SFT baseline on the preference dataset."""

    data: str = field(metadata={"help": "the build-sets dataset folder"})
    out: str = field(metadata={"aliases": OUT_ALIASES,
                               "help": "output folder (checkpoints, log.jsonl, trained weights)"})
    pipeline: str | None = field(default=None, metadata={"aliases": MODEL_ALIASES,
                                                         "help": "pipeline folder or hub id (the reference)"})
    family: str | None = field(default=None, metadata={"help": "sd15 or sdxl; None: read from the folder"})
    loss: str = field(default="popalign", metadata={"help": "popalign (eq. 9) or sft (winners only)"})
    finetune: str = field(default="full", metadata={"help": "full (U-Net; frozen copy as reference) or lora"})
    lora_rank: int = setting(64, Range.integer(1), help="LoRA rank on the U-Net attention projections")
    beta_prime: float = setting(5000.0, Range.number(0, low_open=True, note="beta' of eq. 9; 5000 in the public code"),
                                help="beta' of eq. 9 with r a mean over latent elements")
    alpha: float = setting(0.5, Range.number(0, 1, note="App. A.3: 0.5; 0.25 or 0.75"),
                           help="winners' weight in mu (App. A.3: 0.5; 0.25, 0.75)")
    resolution: int | None = setting(None, Range.integer(8), help="training size, a multiple of 8; None: the "
                                                                  "pipeline's native")
    pairs_per_device: int = setting(2, Range.integer(1), help="winner/loser pairs per process and step")
    max_train_steps: int = setting(750, Range.integer(1), help="iterations")
    # Adam moves every parameter by about the rate per step: a rate >= 1 erases the model before the first check
    learning_rate: float = setting(5e-7, Range.number(0, 1, low_open=True, high_open=True,
                                                      note="the public code: 5e-7 full, 1e-5 LoRA"),
                                   help="AdamW learning rate")
    lr_scheduler: str = field(default="constant_with_warmup", metadata={"help": "diffusers get_scheduler name"})
    lr_warmup_steps: int = setting(200, Range.integer(0), help="warm-up iterations")
    adam_beta1: float = setting(0.9, Range.number(0, 1, high_open=True))
    adam_beta2: float = setting(0.999, Range.number(0, 1, high_open=True))
    adam_weight_decay: float = setting(1e-2, Range.number(0))
    adam_epsilon: float = setting(1e-8, Range.number(0, low_open=True))
    use_8bit_adam: bool = field(default=True, metadata={"help": "bitsandbytes AdamW8bit where it imports"})
    max_grad_norm: float = setting(1.0, Range.number(0, low_open=True, note="gradients are clipped to it; 1.0 in "
                                                                           "the public code"))
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (frozen parts in that dtype)"})
    gradient_checkpointing: bool = False
    checkpoint_every: int = setting(250, Range.integer(0), help="iterations between checkpoints (0: none)")
    checkpoints_total_limit: int | None = setting(4, Range.integer(1))
    resume: str | None = field(default=None, metadata={"help": "latest or a checkpoint folder"})
    until: int | None = setting(None, Range.integer(1), help="stop after this iteration (resume later)")
    start_over: bool = field(default=False, metadata={"help": "out holds a run: move it aside (to "
                                                                "OUT.replaced-<time>) and start anew"})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | all: accelerate's "
                                                             "trackers, as diffusers' --report_to"})
    reward_accuracy_sets: int = setting(16, Range.integer(0), help="set pairs on which the implied population "
                                                                   "reward accuracy (App. E) is measured at the end")
    seed: int = setting(0, Range.integer(0, 2 ** 63, high_open=True))
