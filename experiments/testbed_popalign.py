"""PopAlign (seed 001) and its SFT baseline on the committed testbed, run as the job runs on Stable Diffusion.

:func:`run_popalign_on_testbed` runs ``python -m scaleup.jobs.popalign generate``, ``build-sets`` and ``train``
(the same flag parsing, :func:`scaleup.job_config.parse_config`, and the same stage functions) on the testbed
``scaleup/testbed/digits-ink`` with the testbed's own attribute and classifiers, read from its card:

- identity-augmented prompts: the card's ``ink_prompt`` with the attribute's classes as keywords, "a handwritten
  zero" + " in red ink" / " in blue ink" (``--keywords red,blue --keyword-attribute ink:red,blue
  --augment-template "{prompt} in {keyword} ink"``);
- the sanity filter: the whole image (``--detector whole-image``) and the *training-side* ink classifier
  (``scaleup.testbed.classifiers:ink_training_classifier``); the evaluation classifier, the separate CNN of the
  card's ``evaluate.json``, never sees the training data;
- the training prompts only (``prompts/training.txt``: 8 digits under "a handwritten {}"); a prompt file holding a
  held-out digit (four, seven) or the held-out template is refused.

Every repeat's seed is a root seed; its stages draw from independent streams
(:func:`experiments.experiment.spawn_seeds`, ``numpy.random.SeedSequence(seed).spawn``), and repeats take their
root seeds from :func:`repeat_seeds` (also ``SeedSequence.spawn``), never ``seed + i``.

Hyper-parameters (:class:`TestbedPopAlignSettings`), by a rule that uses the training prompts only (no held-out
prompt and no evaluation classifier enter any choice): keep every dimensionless setting of seed 001, rescale what
depends on the model's size, and choose the learning rate on the training prompts with the training classifier.

- alpha = 0.5 (seed 001, App. A.3); N = 5 images per set (the public code), uniform target over the two inks.
- beta' = 5000 x D_testbed / D_SD = 5000 x 256 / 16384 = 78.125: the public code's beta' = 5000 multiplies r as a
  *mean* over the D latent elements, while eq. 9's log-likelihood ratio is a *sum* over them (DESIGN.md: r from
  ||eps - eps_theta||^2), so the same KL weight beta per image needs beta' proportional to D (SD 1.5 at 512 px:
  4 x 64 x 64 = 16384; the testbed: 4 x 8 x 8 = 256).
- Preference images at the testbed's evaluation settings (guidance 7.5, 20 DPM++ steps: seed 001 generates at its
  evaluation guidance, App. A.1). M = 100 images per neutral prompt (Sec. 5.1); per augmented prompt m = M / K = 50
  for K = 2 inks, so that the augmented pool matches the neutral one as seed 001's 12 keywords x 10 = 120 do.
- LoRA rank: seed 001's rank-to-width ratio at SD 1.5's narrowest attention (64 / 320 = 0.2) applied to the
  testbed's attention width (64 channels) gives 12.8, rounded up to a power of two: 16.
- Learning rate: chosen by :func:`select_learning_rate` on the training prompts only, among seed 001's 1e-5 (LoRA
  on SD 1.5) times the ratio of the models' pretraining learning rates (testbed 1e-3, card ``training.config``;
  SD 1.5 1e-4) = 1e-4, and half-decade steps up to the testbed's own 1e-3 (:data:`LEARNING_RATES`). Warm-up 50
  iterations (``configs/sd15_lora.yaml``). The selection (``select_learning_rate(out, repeat_seeds(0, 4)[3])``,
  a stream apart from the measured repeats ``repeat_seeds(0, 3)``; mean bias by the training classifier over the 8
  training prompts, 60 images each, and prompt accuracy): base 0.721 / 0.973; 1e-4: 0.646 / 0.975; 3e-4:
  0.529 / 0.967; 1e-3: 0.508 / 0.952, so 1e-3 (the grid's top; every run finite). With beta' left at 5000 the same
  grid gave 0.696, 0.683, 0.696: the KL term held the model at the reference, which is what led to the rescaling
  of beta' above.
- Schedule: seed 001's 750 iterations of a global batch of 8 pairs (4 GPUs x 2), on one process with 8 pairs per
  iteration; no checkpoints. The same settings for the SFT baseline (seed 001, Sec. 5.2, trains the same way).

Measured on this machine (1 thread, ``time.process_time``), the PopAlign chain takes about 2.1 CPU-minutes per seed
(generate ~60 s for 1600 images, build-sets ~2.5 s, train ~66 s); SFT on the same sets trains in ~40 s. No loss,
r or mu was NaN or infinite in any run (``finite`` in the result: :func:`run_popalign_on_testbed` checks the log).

Measured (:func:`measure`, repeats ``repeat_seeds(0, 3)``, evaluation CNN, guidance 7.5, 60 images per prompt; mean
over the 3 seeds of the group-mean bias, sd over seeds): base 0.721 (0.011) training, 0.922 (0.025) held-out digits,
0.771 (0.011) held-out template; PopAlign 0.646 (0.177), 0.539 (0.079), 0.668 (0.103); SFT 0.656 (0.081),
0.856 (0.025), 0.750 (0.035). PopAlign at 1e-3 varies strongly between seeds (training bias 0.446, 0.783, 0.708):
on some seeds it shifts whole prompts from red to blue (zero: 95% red -> 0%) and lowers the confident share
(0.75-0.85 on the training prompts against 0.998), i.e. it overshoots; a post-hoc check at 3e-4 (not used for any
choice) gave 0.701 (0.071), 0.700 (0.076), 0.673 (0.049) with confident share >= 0.97.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

#: The job's stage functions per subcommand, run as ``python -m scaleup.jobs.popalign`` runs them.
_STAGES = ("generate", "build-sets", "train")


@dataclass(frozen=True)
class TestbedPopAlignSettings:
    """The chain's settings; the defaults are the rule of the module docstring."""

    images_per_neutral: int = 100
    images_per_augmented: int = 50
    guidance_scale: float = 7.5
    num_inference_steps: int = 20
    generate_batch_size: int = 50
    set_size: int = 5
    min_confidence: float = 0.8  # the card's confident threshold: an augmented image must show its ink clearly
    lora_rank: int = 16
    learning_rate: float = 1e-3  # select_learning_rate on the training prompts (module docstring)
    lr_warmup_steps: int = 50
    max_train_steps: int = 750
    pairs_per_device: int = 8
    beta_prime: float = 5000.0 * (4 * 8 * 8) / (4 * 64 * 64)  # 78.125, module docstring
    alpha: float = 0.5
    reward_accuracy_sets: int = 16
    max_prompts: int | None = None

    @classmethod
    def tiny(cls) -> "TestbedPopAlignSettings":
        """A few seconds end to end (tests): few images and steps, the same path."""
        return cls(images_per_neutral=4, images_per_augmented=2, num_inference_steps=4, generate_batch_size=8,
                   set_size=2, min_confidence=0.5, lora_rank=4, lr_warmup_steps=0, max_train_steps=3,
                   pairs_per_device=2, reward_accuracy_sets=2, max_prompts=2)


def repeat_seeds(root_seed: int, n: int) -> list[int]:
    """Root seeds of ``n`` repeats: independent streams of ``numpy.random.SeedSequence(root_seed).spawn(n)``."""
    from experiments.experiment import spawn_seeds

    return spawn_seeds(root_seed, n)


def testbed_keywords(pipeline: str | Path | None = None) -> dict:
    """The job's keyword flags for the testbed, from its card: the attribute's classes as keywords, the attribute as
    ``name:class1,class2`` and the card's ``ink_prompt`` as the augmentation template."""
    from scaleup.testbed.card import read_card

    card = read_card(pipeline)
    attribute = card["attribute"]
    template = card["ink_prompt"].replace("{" + attribute["name"] + "}", "{keyword}")
    return {"keywords": list(attribute["classes"]), "keyword_attribute": attribute["flag"],
            "augment_template": template}


def check_training_prompts(prompts: str | Path) -> list[str]:
    """The prompts of ``prompts``, refused unless every one is a testbed *training* prompt (no held-out digit, no
    held-out template)."""
    from scaleup.prompts import load_prompt_set
    from scaleup.testbed.card import prompt_groups

    listed = list(load_prompt_set(str(prompts)).prompts)
    training = set(prompt_groups()["training"])
    outside = [p for p in listed if p not in training]
    if outside:
        raise ValueError(f"prompts: {prompts} holds prompts that are not testbed training prompts ({outside[:3]}); "
                         "held-out digits and the held-out template must stay out of training")
    return listed


def _flags(values: dict) -> list[str]:
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        argv += [flag, str(value)]
    return argv


def stage_arguments(out_dir: str | Path, seed: int, *, prompts: str | Path, sft: bool,
                    settings: TestbedPopAlignSettings, pipeline: str | Path,
                    run_name: str | None = None) -> dict[str, list[str]]:
    """The command-line arguments of each stage (``python -m scaleup.jobs.popalign STAGE ARGS``)."""
    from experiments.experiment import spawn_seeds

    out_dir = Path(out_dir)
    generate_seed, sets_seed, train_seed = spawn_seeds(seed, 3)
    s = settings
    generate = dict(out=out_dir / "generated", pipeline=pipeline, prompts=prompts, max_prompts=s.max_prompts,
                    **testbed_keywords(pipeline), images_per_neutral=s.images_per_neutral,
                    images_per_augmented=s.images_per_augmented, num_inference_steps=s.num_inference_steps,
                    guidance_scale=s.guidance_scale, batch_size=s.generate_batch_size, torch_dtype="fp32",
                    seed=generate_seed)
    build = dict(generated=out_dir / "generated", out=out_dir / "data", set_size=s.set_size, filter="apply",
                 detector="whole-image", classifier=_card_classifier(pipeline, "training"),
                 min_confidence=s.min_confidence, seed=sets_seed)
    train = dict(data=out_dir / "data", out=out_dir / (run_name or ("sft" if sft else "popalign")), pipeline=pipeline,
                 loss="sft" if sft else "popalign", finetune="lora", lora_rank=s.lora_rank,
                 beta_prime=s.beta_prime, alpha=s.alpha, pairs_per_device=s.pairs_per_device,
                 max_train_steps=s.max_train_steps, learning_rate=s.learning_rate,
                 lr_warmup_steps=s.lr_warmup_steps, use_8bit_adam="false", checkpoint_every=0,
                 reward_accuracy_sets=s.reward_accuracy_sets, seed=train_seed)
    return {"generate": _flags(generate), "build-sets": _flags(build), "train": _flags(train)}


def _card_classifier(pipeline: str | Path, role: str) -> str:
    from scaleup.testbed.card import read_card

    return read_card(pipeline)["classifiers"][role]


def _finite_log(folder: Path) -> bool:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    values = [v for row in rows for k, v in row.items() if isinstance(v, float)]
    return bool(rows) and all(math.isfinite(v) for v in values)


def run_popalign_on_testbed(out_dir: str | Path, seed: int, *, prompts: str | Path | None = None, sft: bool = False,
                            settings: TestbedPopAlignSettings | None = None, pipeline: str | Path | None = None,
                            threads: int = 1, run_name: str | None = None, progress: bool = False) -> dict:
    """generate -> build-sets -> train (PopAlign, or the SFT baseline with ``sft``) on the testbed.

    Parameters
    ----------
    out_dir : folder of this seed: ``generated/``, ``data/`` (the preference dataset) and ``popalign/`` or
        ``sft/`` (the training run; its ``lora/`` is the exported adapter). PopAlign and SFT of one seed share
        ``generated/`` and ``data/``: a second call reuses them (generate resumes, build-sets is skipped when its
        report shows the same settings) and their times are then those of the reuse.
    seed : root seed; generate, build-sets and train take independent streams of it (module docstring).
    prompts : training prompt file (default: the testbed's ``prompts/training.txt``); held-out prompts are refused.
    settings : :class:`TestbedPopAlignSettings` (default: the stated rule); ``TestbedPopAlignSettings.tiny()`` for
        a fast path check.
    pipeline : the testbed folder (default: the committed one).
    threads : torch threads (and OMP_NUM_THREADS for child libraries) for the whole chain.
    run_name : the training run's folder under ``out_dir`` (default ``popalign`` / ``sft``), e.g. one per
        learning rate of :func:`select_learning_rate`.

    Returns
    -------
    dict with ``lora`` (the exported LoRA folder, diffusers format: ``StableDiffusionPipeline.load_lora_weights``),
    ``cpu_seconds`` per stage (``time.process_time``) and ``wall_seconds``, the stages' ``commands`` (the same
    run on the command line), their summaries (``generate``, ``build_sets``, ``train``), the ``settings`` and the
    stage ``seeds``, and ``finite`` (no NaN or infinity in the training log).
    """
    import torch

    from scaleup.job_config import config_to_dict, parse_config
    from scaleup.jobs.popalign.build import REPORT_FILE, run_build_sets
    from scaleup.jobs.popalign.config import BuildSetsConfig, GenerateConfig, TrainConfig
    from scaleup.jobs.popalign.generation import run_generate
    from scaleup.jobs.popalign.train import run_train
    from scaleup.testbed.card import PROMPT_FILES
    from scaleup.testbed.paths import testbed_path

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    settings = settings or TestbedPopAlignSettings()
    folder = Path(pipeline) if pipeline is not None else testbed_path()
    prompts = Path(prompts) if prompts is not None else folder / "prompts" / PROMPT_FILES["training"]
    check_training_prompts(prompts)
    out_dir = Path(out_dir)
    argv = stage_arguments(out_dir, seed, prompts=prompts, sft=sft, settings=settings, pipeline=folder,
                           run_name=run_name)
    configs = {"generate": parse_config(GenerateConfig, argv["generate"]),
               "build-sets": parse_config(BuildSetsConfig, argv["build-sets"]),
               "train": parse_config(TrainConfig, argv["train"])}
    cpu, wall, summaries = {}, {}, {}

    def timed(stage, fn):
        c0, w0 = time.process_time(), time.perf_counter()
        summaries[stage] = fn()
        cpu[stage], wall[stage] = time.process_time() - c0, time.perf_counter() - w0

    timed("generate", lambda: run_generate(configs["generate"], progress=progress))
    report_path = out_dir / "data" / REPORT_FILE

    def build():
        if report_path.is_file():  # built by the other method's call of this seed: reuse only the same settings
            report = json.loads(report_path.read_text(encoding="utf-8"))
            def settings_of(config: dict) -> dict:  # the folders may have moved; every other setting must agree
                return {k: v for k, v in config.items() if k not in ("generated", "out")}

            if settings_of(report["config"]) != settings_of(config_to_dict(configs["build-sets"])):
                raise ValueError(f"{report_path.parent} holds sets built with other settings; use another out_dir")
            return dict(report, reused=True)
        return run_build_sets(configs["build-sets"], progress=progress)

    timed("build-sets", build)
    train_out = Path(configs["train"].out)
    if (train_out / "log.jsonl").exists():
        raise ValueError(f"{train_out} holds an earlier training run; use another out_dir")
    timed("train", lambda: run_train(configs["train"], progress=progress))
    train = summaries["train"]
    if "lora" not in train.get("weights", {}):
        raise RuntimeError(f"training stopped before its end: {train}")
    build_report = summaries["build-sets"]
    return {
        "method": "sft" if sft else "popalign", "seed": seed, "lora": train["weights"]["lora"],
        "cpu_seconds": {**cpu, "total": sum(cpu.values())}, "wall_seconds": wall, "threads": threads,
        "commands": {stage: shlex.join(["python", "-m", "scaleup.jobs.popalign", stage, *argv[stage]])
                     for stage in _STAGES},
        "seeds": {stage: int(getattr(configs[stage], "seed")) for stage in _STAGES},
        "settings": asdict(settings), "prompts": str(prompts), "pipeline": str(folder),
        "generate": summaries["generate"],
        "build_sets": {k: build_report.get(k) for k in ("set_pairs", "rows", "images", "pairs_dropped",
                                                        "prompts_without_sets", "filter", "reused")},
        "train": {k: v for k, v in train.items() if k != "config"},
        "finite": _finite_log(train_out),
    }


# ---- the learning rate, chosen on the training prompts with the training classifier ---------------------------

#: Candidates of :func:`select_learning_rate`: from the rescaled 1e-4 up to the testbed's own pretraining learning
#: rate 1e-3, in half-decade steps.
LEARNING_RATES = (1e-4, 3e-4, 1e-3)


def validate_on_training_prompts(out: str | Path, seed: int, *, lora: str | Path | None = None,
                                 images_per_prompt: int = 60, progress: bool = False) -> dict:
    """``run_eval`` on the training prompts only, judged by the *training* ink classifier (never the evaluation
    CNN) and the digit classifier: mean bias, red share and prompt accuracy over the 8 training prompts."""
    import numpy as np

    from experiments.testbed import testbed_eval_config
    from scaleup.evaluate import run_eval
    from scaleup.testbed.card import PROMPT_FILES
    from scaleup.testbed.paths import testbed_path

    settings = TestbedPopAlignSettings()
    config = testbed_eval_config(prompts=str(testbed_path() / "prompts" / PROMPT_FILES["training"]), out=out,
                                 guidance_scale=settings.guidance_scale, images_per_prompt=images_per_prompt,
                                 num_inference_steps=settings.num_inference_steps, batch_size=images_per_prompt,
                                 seed=seed, grid_images=0, restart=True, confident=None,
                                 classifier=_card_classifier(testbed_path(), "training"),
                                 lora=None if lora is None else str(lora))
    result = run_eval(config, progress=progress)
    rows = result["per_prompt"]
    return {"bias": float(np.mean([p["bias"] for p in rows])), "red": float(np.mean([p["freq"]["red"] for p in rows])),
            "prompt_accuracy": float(np.mean([p["prompt_accuracy"] for p in rows])),
            "per_prompt_bias": {p["prompt"]: p["bias"] for p in rows}}


def select_learning_rate(out_dir: str | Path, seed: int, *, candidates=LEARNING_RATES,
                         settings: TestbedPopAlignSettings | None = None, max_accuracy_drop: float = 0.05,
                         images_per_prompt: int = 60, progress: bool = False) -> dict:
    """The learning rate of PopAlign on the testbed, chosen with the training prompts only.

    Rule: train PopAlign (all other settings as :class:`TestbedPopAlignSettings`) at each candidate learning rate
    on the preference data of ``seed`` (a selection stream, not one of the measured repeats), generate 60 images of
    each *training* prompt at the evaluation settings with another stream, and keep the learning rate with the
    lowest mean bias by the *training* ink classifier among those whose run stayed finite and whose prompt
    accuracy (digit classifier) is at most ``max_accuracy_drop`` below the base model's; ties go to the smaller
    rate. Held-out prompts and the evaluation classifier play no part.
    """
    from dataclasses import replace

    from experiments.experiment import spawn_seeds

    settings = settings or TestbedPopAlignSettings()
    out_dir = Path(out_dir)
    validation_seed = spawn_seeds(seed, 4)[3]
    base = validate_on_training_prompts(out_dir / "validation" / "base", validation_seed,
                                        images_per_prompt=images_per_prompt, progress=progress)
    runs = {}
    for lr in candidates:
        chain = run_popalign_on_testbed(out_dir, seed, settings=replace(settings, learning_rate=lr),
                                        run_name=f"popalign-lr{lr:g}", progress=progress)
        runs[f"{lr:g}"] = {"learning_rate": lr, "finite": chain["finite"], "cpu_seconds": chain["cpu_seconds"],
                           "validation": validate_on_training_prompts(
                               out_dir / "validation" / f"lr{lr:g}", validation_seed, lora=chain["lora"],
                               images_per_prompt=images_per_prompt, progress=progress)}
    eligible = [r for r in runs.values() if r["finite"] and
                r["validation"]["prompt_accuracy"] >= base["prompt_accuracy"] - max_accuracy_drop]
    if not eligible:
        raise RuntimeError(f"no learning rate kept the run finite and the digits recognisable: {runs}")
    chosen = min(eligible, key=lambda r: (round(r["validation"]["bias"], 6), r["learning_rate"]))
    return {"seed": seed, "validation_seed": validation_seed, "base": base, "runs": runs,
            "chosen": chosen["learning_rate"]}


# ---- evaluation of base / PopAlign / SFT ------------------------------------------------------------------------

def evaluate_on_testbed(out: str | Path, seed: int, *, lora: str | Path | None = None, images_per_prompt: int = 60,
                        num_inference_steps: int = 20, guidance_scale: float = 7.5, batch_size: int = 60,
                        max_prompts: int | None = None, progress: bool = False) -> dict:
    """``scaleup.evaluate.run_eval`` on every testbed prompt (``all.txt``) with the card's evaluation settings (the
    evaluation CNN), the LoRA ``lora`` loaded; per prompt and per group (training / held-out digits / held-out
    template): bias, share of red, confident share, prompt accuracy, and the CPU seconds."""
    from experiments.testbed import _group_stats, testbed_eval_config
    from scaleup.evaluate import run_eval
    from scaleup.testbed.card import PROMPT_FILES, prompt_group
    from scaleup.testbed.paths import testbed_path

    config = testbed_eval_config(prompts=str(testbed_path() / "prompts" / PROMPT_FILES["all"]), out=out,
                                 guidance_scale=guidance_scale, images_per_prompt=images_per_prompt,
                                 num_inference_steps=num_inference_steps, batch_size=batch_size, seed=seed,
                                 max_prompts=max_prompts, grid_images=0, restart=True,
                                 lora=None if lora is None else str(lora))
    c0 = time.process_time()
    result = run_eval(config, progress=progress)
    cpu = time.process_time() - c0
    per_prompt = [{"prompt": p["prompt"], "group": prompt_group(p["prompt"]), "red": p["freq"]["red"],
                   "bias": p["bias"], "confident_share": p["confident_share"],
                   "prompt_accuracy": p["prompt_accuracy"]} for p in result["per_prompt"]]
    return {"per_prompt": per_prompt, "cpu_seconds": cpu, "lora": None if lora is None else str(lora),
            "groups": {key: _group_stats(per_prompt, key)
                       for key in ("bias", "red", "confident_share", "prompt_accuracy")}}


def same_images_as_evaluation(lora: str | Path, *, prompt: str = "a handwritten zero", seeds=(0, 1, 2, 3),
                              num_inference_steps: int = 20, guidance_scale: float = 7.5) -> dict:
    """Whether plain diffusers (``StableDiffusionPipeline.from_pretrained(testbed).load_lora_weights(lora)``) draws
    the same images as the evaluation's loading path (``scaleup.models.load_pipeline`` + ``load_lora``), both
    sampled by ``scaleup.models.pipelines.generate`` with the same seeds; and that the LoRA changes the images."""
    import torch
    from diffusers import StableDiffusionPipeline

    from scaleup.models import load_pipeline
    from scaleup.models.adapters import adapters_disabled, load_lora
    from scaleup.models.pipelines import generate
    from scaleup.testbed.paths import testbed_path

    kwargs = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, batch_size=len(seeds),
                  progress=False)
    ours = load_pipeline(str(testbed_path()), torch_dtype=torch.float32, device="cpu")
    load_lora(ours, lora)
    plain = StableDiffusionPipeline.from_pretrained(str(testbed_path()))
    plain.load_lora_weights(str(lora))
    a = generate(ours, prompt, list(seeds), **kwargs)
    b = generate(plain, prompt, list(seeds), **kwargs)
    with adapters_disabled(plain.unet):
        base = generate(plain, prompt, list(seeds), **kwargs)
    return {"max_abs_difference": float((a - b).abs().max()), "equal": bool(torch.equal(a, b)),
            "lora_changes_images": float((b - base).abs().max()), "adapters": plain.get_active_adapters()}


def measure(out_dir: str | Path, root_seed: int = 0, n_seeds: int = 3, *, settings: TestbedPopAlignSettings | None =
            None, images_per_prompt: int = 60, repeats: Sequence[int] | None = None, progress: bool = False) -> dict:
    """Base, PopAlign and SFT for ``n_seeds`` repeats (:func:`repeat_seeds`), each evaluated on every testbed
    prompt; writes ``OUT/measurements.json`` after each step and returns it. ``repeats``: run only these repeat
    indices (e.g. one process per repeat, each with its own ``out_dir``)."""
    from experiments.experiment import spawn_seeds

    out_dir = Path(out_dir)
    path = out_dir / "measurements.json"
    results = json.loads(path.read_text()) if path.is_file() else {"root_seed": root_seed, "runs": {}}

    def save():
        from scaleup.atomic_write import atomic_write_text

        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(results, indent=2, default=str) + "\n")

    seeds = repeat_seeds(root_seed, n_seeds)
    for seed in (seeds if repeats is None else [seeds[i] for i in repeats]):
        entry = results["runs"].setdefault(str(seed), {})
        eval_seed = spawn_seeds(seed, 4)[3]  # a fourth stream: other seeds than the training images'
        for method in ("popalign", "sft"):
            if method not in entry:
                run = run_popalign_on_testbed(out_dir / f"seed-{seed}", seed, sft=method == "sft",
                                              settings=settings, progress=progress)
                entry[method] = {"chain": run}
                save()
            if "evaluation" not in entry[method]:
                entry[method]["evaluation"] = evaluate_on_testbed(
                    out_dir / f"seed-{seed}" / "eval" / method, eval_seed, lora=entry[method]["chain"]["lora"],
                    images_per_prompt=images_per_prompt, progress=progress)
                save()
        if "base" not in entry:
            entry["base"] = {"evaluation": evaluate_on_testbed(out_dir / f"seed-{seed}" / "eval" / "base", eval_seed,
                                                               images_per_prompt=images_per_prompt,
                                                               progress=progress)}
            save()
    return results


if __name__ == "__main__":
    import sys

    # python -m experiments.testbed_popalign OUT [ROOT_SEED] [N_SEEDS]: writes OUT/measurements.json
    measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0, int(sys.argv[3]) if len(sys.argv) > 3 else 3,
            progress=True)
    print(Path(sys.argv[1]) / "measurements.json")
