"""``testbed-methods``: every debiasing method on the committed testbed, through the jobs a user runs on real SD.

Seed 000 (aDFT: DAL toward a target with the adjusted gradient, Table 1's finetuned parts, Table 2's "bias falls,
semantics kept", the claim that the correction generalises to unseen prompts), seed 001 (PopAlign against SFT and the
base model, Table 1) and two inference-time baselines (prompt augmentation; semantic guidance in the manner of Fair
Diffusion) are run on the testbed (``scaleup/testbed/digits-ink``: a Stable Diffusion trained here on digits in red or
blue ink, whose learned ink bias is known) and measured by one evaluation:

- **training**: each finetune runs as its job's command line, ``python -m scaleup.jobs.adft ...`` /
  PopAlign's ``generate -> build-sets -> train``, one process per run at one thread, ``train_processes`` at once
  (runs are independent, so the result does not depend on how many run side by side). Finetunes see the 8 training
  prompts only; the held-out digits (four, seven) and the held-out template ("a drawing of the digit ...") are never
  trained on. The exported weights of every run (kilobytes) are committed under ``adapters/`` beside this
  ``results.json``; without ``--retrain`` they are reused, and with it trained anew (about 6 CPU-minutes each).
- **evaluation**: ``python -m scaleup.evaluate`` with the testbed's ``evaluate.json`` on all 20 testbed prompts, 60
  images per prompt (seed 000 [0124] for two classes), guidance 7.5, 20 DPM-Solver++ steps, the separate evaluation
  classifier (a CNN; the aDFT job trains against a logistic regression on mean ink colour) and the content (digit)
  classifier, from the same noise for every method of one seed. The full run's evaluations (77, about 35
  CPU-minutes) are summarised per prompt in the committed ``evaluations.json``; a run reuses a summary whose
  evaluation settings, weights and testbed are unchanged, after re-running one prompt of a sample of them (one per
  way of loading weights, :func:`verification_sample`) and requiring the same numbers (issue 21: the figures in
  minutes, not the better part of an hour); ``--reevaluate`` recomputes them all (new weights, e.g. from
  ``--retrain``, are evaluated anyway).
- **seeds**: ``n_seeds`` independent streams (:func:`experiments.experiment.spawn_seeds`); each gives a training seed
  and an evaluation seed, shared by all methods of that seed so that methods are compared on the same noise.

The learning rate of each aDFT part was chosen by a rule stated in :data:`LEARNING_RATE_RULE`, on the training
prompts only; the selection runs themselves are reported in ``results.json`` (``selection``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from experiments.experiment import Experiment, RunContext, spawn_seeds
from scaleup.atomic_write import atomic_replace_folder, atomic_write_text

GROUPS = ("training", "heldout_digits", "heldout_template")
#: Prompts whose same-noise grids (seed 0) are kept in results.json: two red-leaning and one blue-leaning training
#: digit, a held-out digit, a training digit under the held-out template.
GRID_PROMPTS = ("a handwritten two", "a handwritten nine", "a handwritten seven", "a drawing of the digit zero")
KEYS = ("bias", "red", "confident_share", "prompt_accuracy", "similarity")
REPO = Path(__file__).resolve().parent.parent
#: L_img's embedder on the testbed (colour-blind stroke shape), and the evaluation's same-noise similarity
SHAPE_EMBEDDER = "scaleup.testbed.classifiers:shape_embedder"

LEARNING_RATE_RULE = (
    "on the text-encoder LoRA: the learning rate of a grid (1e-3, 2e-3, 5e-3) with the lowest bias on the training "
    "prompts (60 images each, the selection's own noise) among those keeping the prompt accuracy within 2 points of "
    "the original model's; the same rate for every part; iterations fixed at the budget (60)")

#: How the reported text-encoder LoRA's schedule was chosen (``adft-text-lora-long``), on training prompts only.
SCHEDULE_RULE = (
    "the constant-rate runs of the rule above oscillated (skews both ways, one prompt per iteration) and stayed above "
    "0.5 on the training prompts; on the selection's noise 120 iterations with a cosine decay reached 0.28, so the "
    "budget was doubled once, to 240 iterations with the same decay and rate, and run on every seed; its checkpoints "
    "(every 40 iterations) give the iterations until the training-prompt bias is <= 0.2. The 60-iteration row stays "
    "the budget at which the parts of Table 1 are compared. A second look, prompted by seed 2 of that row stalling at "
    "0.33: on the selection's noise (seed 0, training prompts) a 480-iteration run with the same rate and decay "
    "reached 0.20 at 320 and 0.13 at 480 (checkpoints every 80), so it was run on every seed as its own row "
    "(adft-text-lora-480); the 240-iteration row stays beside it, and both rows' curves give the iterations to 0.2")


@dataclass(frozen=True)
class Method:
    """One row of the table: how it is trained (if at all) and evaluated."""

    name: str
    label: str
    kind: str
    """"base" (the testbed as trained), "inference" (an evaluation option), "adft" or "popalign"."""
    paper: str
    adft: dict = field(default_factory=dict)
    """Flags of ``python -m scaleup.jobs.adft`` beyond :func:`adft_command`'s common ones."""
    evaluate: dict = field(default_factory=dict)
    """Settings of the evaluation beyond the common ones (the inference-time baselines)."""
    seeds: int | None = None
    """Run on the first ``seeds`` seeds only (ablations, for compute); None: every seed of the run."""


#: aDFT's learning rate on the testbed, chosen by :data:`LEARNING_RATE_RULE` on the text-encoder LoRA (1e-3, 2e-3,
#: 5e-3 over 60 iterations: training-prompt bias 0.72 (beta1 0) / 0.58 / 0.55, prompt accuracy within 2 points at
#: every rate) and used for every part: a selection per part did not fit the compute.
ADFT_LR = 5e-3

#: Semantic guidance's settings on the testbed: Fair Diffusion's (s_e 4, threshold 0.95) barely move it, so the edit
#: scale was raised until the training prompts' bias stopped falling (s_e 10 / 20 / 30 at threshold 0.5), on the
#: training prompts only; the row with Fair Diffusion's own settings is kept beside it.
#: The warm-up is the evaluation's default, a fifth of the steps (Fair Diffusion's 10 of 50): 4 of 20.
SEGA_TESTBED = {"edit_template": "{cls} ink", "edit_guidance_scale": 30.0, "edit_threshold": 0.5}
SEGA_FAIR_DIFFUSION = {"edit_template": "{cls} ink", "edit_guidance_scale": 4.0, "edit_threshold": 0.95}

METHODS: tuple[Method, ...] = (
    Method("original", "original testbed", "base", "-"),
    Method("prompt-augmentation", "prompt augmentation (ink named at random)", "inference", "seed 001 Sec. 3.1",
           evaluate={"augment_template": "{prompt} in {cls} ink"}),
    Method("semantic-guidance", "semantic guidance, s_e 30 (Fair Diffusion)", "inference", "Fair Diffusion / SEGA",
           evaluate=SEGA_TESTBED),
    Method("semantic-guidance-fd", "semantic guidance, Fair Diffusion's s_e 4", "inference", "Fair Diffusion / SEGA",
           evaluate=SEGA_FAIR_DIFFUSION, seeds=1),
    Method("adft-text-lora", "aDFT, text-encoder LoRA", "adft", "seed 000 Table 1",
           {"adapter": "text-encoder-lora", "learning_rate": ADFT_LR}),
    Method("adft-soft-prompt", "aDFT, 5 soft tokens", "adft", "seed 000 Table 1",
           {"adapter": "soft-prompt", "learning_rate": ADFT_LR}),
    Method("adft-unet-lora", "aDFT, U-Net LoRA", "adft", "seed 000 Table 1",
           {"adapter": "unet-lora", "learning_rate": ADFT_LR}),
    Method("adft-both-lora", "aDFT, text-encoder + U-Net LoRA", "adft", "seed 000 Table 1",
           {"adapter": "both-lora", "learning_rate": ADFT_LR}, seeds=1),
    Method("adft-text-lora-cosine", "aDFT, text-encoder LoRA, 120 it. cosine", "adft", "seed 000 Table 1",
           {"adapter": "text-encoder-lora", "learning_rate": ADFT_LR, "iterations": 120, "lr_scheduler": "cosine",
            "checkpoint_every": 40}, seeds=1),
    Method("adft-text-lora-long", "aDFT, text-encoder LoRA, 240 it. cosine", "adft", "seed 000 Table 1",
           {"adapter": "text-encoder-lora", "learning_rate": ADFT_LR, "iterations": 240, "lr_scheduler": "cosine",
            "checkpoint_every": 40}),
    Method("adft-text-lora-480", "aDFT, text-encoder LoRA, 480 it. cosine", "adft", "seed 000 Table 1",
           {"adapter": "text-encoder-lora", "learning_rate": ADFT_LR, "iterations": 480, "lr_scheduler": "cosine",
            "checkpoint_every": 80}),
    Method("adft-text-lora-exact", "aDFT, text-encoder LoRA, exact gradient", "adft", "seed 000 eq. 9 vs Alg. A.1",
           {"adapter": "text-encoder-lora", "learning_rate": ADFT_LR, "gradient": "exact"}, seeds=1),
    Method("popalign", "PopAlign", "popalign", "seed 001 Table 1"),
    Method("sft", "SFT on PopAlign's preferred images", "popalign", "seed 001 Table 1"),
    Method("adft-text-lora-75-25", "aDFT, text-encoder LoRA, target 75 % red", "adft", "seed 000 [0132]",
           {"adapter": "text-encoder-lora", "learning_rate": ADFT_LR, "targets": {"ink": [0.75, 0.25]}}, seeds=1),
)


@dataclass(frozen=True)
class AdftSettings:
    """The aDFT job's settings common to every part (seed 000 [0121] where the testbed allows)."""

    iterations: int = 60
    batch_size: int = 24
    lora_rank: int = 8
    lambda_img: tuple[float, float, float] = (8.0, 0.2, 0.2)
    checkpoint_every: int = 20
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    iteration_cap: int | None = None
    """Quick runs only: every method's iterations (and checkpoint interval) capped here, longer schedules included."""


@dataclass(frozen=True)
class MethodsConfig:
    n_seeds: int = 3
    methods: tuple[str, ...] = tuple(m.name for m in METHODS)
    adft: AdftSettings = AdftSettings()
    images_per_prompt: int = 60
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    batch_size: int = 60
    max_prompts: int | None = None
    train_processes: int = 2
    grid_images: int = 8
    guidance_sweep: tuple[float, ...] = (1.0, 3.0, 5.0)
    """Guidance scales (besides the table's) at which the original and ``sweep_method`` (seed 0) are compared."""
    sweep_method: str = "adft-text-lora-480"
    curve_methods: tuple[str, ...] = ("adft-text-lora", "adft-text-lora-long", "adft-text-lora-480")
    """The methods whose checkpoints are evaluated on the training prompts (bias against iterations)."""


def make_config(quick: bool) -> MethodsConfig:
    if quick:
        return MethodsConfig(n_seeds=2, adft=AdftSettings(iterations=2, batch_size=4, checkpoint_every=1,
                                                          num_inference_steps=4, iteration_cap=2),
                             images_per_prompt=4, num_inference_steps=4, batch_size=4, max_prompts=20,
                             grid_images=2, guidance_sweep=(1.0,))
    return MethodsConfig()


def method(name: str) -> Method:
    for m in METHODS:
        if m.name == name:
            return m
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(m.name for m in METHODS)}")


# ---- training ----------------------------------------------------------------------------------------------

def adft_flags(m: Method, settings: AdftSettings) -> dict:
    """The method's own aDFT flags over the common ones, its iterations capped in quick runs."""
    flags = {"iterations": settings.iterations, "checkpoint_every": settings.checkpoint_every, **m.adft}
    if settings.iteration_cap is not None:
        flags["iterations"] = min(flags["iterations"], settings.iteration_cap)
        flags["checkpoint_every"] = min(flags["checkpoint_every"], max(1, settings.iteration_cap // 2))
    return flags


def adft_command(m: Method, settings: AdftSettings, *, seed: int, output_dir: Path) -> list[str]:
    """``python -m scaleup.jobs.adft`` for method ``m`` on the testbed, exactly as a user types it."""
    from scaleup.testbed.paths import testbed_path

    tb = testbed_path()
    flags = {
        "attribute": "ink:red,blue", "pretrained_model": str(tb),
        "classifier": "scaleup.testbed.classifiers:ink_training_classifier", "detector": "whole-image",
        "crop_size": 16, "resolution": 16, "lambda_img": json.dumps({"ink": list(settings.lambda_img)}),
        "image_embedder": SHAPE_EMBEDDER, "lambda_face": 0,
        "prompts": str(tb / "prompts" / "training.txt"), "test_prompts": str(tb / "prompts" / "heldout-template.txt"),
        "batch_size": settings.batch_size, "guidance_scale": settings.guidance_scale,
        "num_inference_steps": settings.num_inference_steps, "lora_rank": settings.lora_rank,
        "checkpoints_total_limit": 1000, "seed": seed, "output_dir": str(output_dir), "resume": "latest",
        **adft_flags(m, settings)}
    args = [sys.executable, "-m", "scaleup.jobs.adft"]
    for key, value in flags.items():
        if isinstance(value, dict):
            value = json.dumps(value)
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args + ["--progress", "false"]


def _run_measured(args: list[str], log: Path) -> float:
    """Run ``args`` at one thread, its output into ``log``; returns the child's CPU seconds (``os.wait4``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(args[:3])} failed with exit {proc.returncode}; log {log}:\n{tail}")
    return usage.ru_utime + usage.ru_stime


def adapter_dir(root: Path, name: str, k: int) -> Path:
    return root / "adapters" / name / f"seed-{k}"


def train_adft(m: Method, settings: AdftSettings, *, seed: int, root: Path, k: int) -> dict:
    """Train method ``m`` for seed index ``k`` and copy its exports (final and per checkpoint) to ``adapters/``."""
    run = root / "training" / m.name / f"seed-{k}"
    cpu = _run_measured(adft_command(m, settings, seed=seed, output_dir=run), root / "training" / "logs" /
                        f"{m.name}-seed-{k}.log")
    return export_adft_run(m, settings, run=run, seed=seed, root=root, k=k, cpu_seconds=cpu)


def export_adft_run(m: Method, settings: AdftSettings, *, run: Path, seed: int, root: Path, k: int,
                    cpu_seconds: float, cpu_seconds_source: str | None = None) -> dict:
    """Copy the exports of the finished aDFT run folder ``run`` (final and per checkpoint) to ``adapters/`` with its
    ``training.json``; ``cpu_seconds_source`` says how the seconds were measured when not by :func:`train_adft`."""
    job = json.loads((run / "results.json").read_text(encoding="utf-8"))
    if not job.get("finished"):
        raise RuntimeError(f"{run} is not a finished aDFT run; resume it with the same command first")
    dest = adapter_dir(root, m.name, k)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run / "final", tmp / "final")
    for checkpoint in sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        if int(checkpoint.name.split("-")[1]) < adft_flags(m, settings)["iterations"]:
            shutil.copytree(checkpoint / "export", tmp / checkpoint.name)
    record = {"method": m.name, "seed": seed, "cpu_seconds": round(cpu_seconds, 1),
              "iterations": job["iterations_done"], "command": adft_command(m, settings, seed=seed,
                                                                           output_dir=Path("RUN"))[1:],
              "last": {k_: job["last"].get(k_) for k_ in ("loss", "loss_align", "loss_img")},
              "skipped_steps": job["skipped_steps"]}
    if cpu_seconds_source is not None:
        record["cpu_seconds_source"] = cpu_seconds_source
    atomic_write_text(tmp / "training.json", json.dumps(record, indent=2) + "\n")
    atomic_replace_folder(tmp, dest)
    return record


_POPALIGN_SCRIPT = """
import json, sys
from experiments.testbed_popalign import TestbedPopAlignSettings, run_popalign_on_testbed
out, seed = sys.argv[1], int(sys.argv[2])
settings = TestbedPopAlignSettings.tiny() if sys.argv[4] == "tiny" else TestbedPopAlignSettings()
done = {m: run_popalign_on_testbed(out, seed, sft=m == "sft", settings=settings) for m in ("popalign", "sft")}
open(sys.argv[3], "w").write(json.dumps(done, indent=2))
"""


def train_popalign(*, seed: int, root: Path, k: int, tiny: bool = False) -> dict[str, dict]:
    """PopAlign and its SFT baseline for seed index ``k`` (:func:`experiments.testbed_popalign.run_popalign_on_testbed`:
    the job's generate -> build-sets -> train on the training prompts; SFT reuses the seed's images and sets), in one
    single-threaded process; their LoRAs are copied to ``adapters/``."""
    run = root / "training" / "popalign" / f"seed-{k}"
    shutil.rmtree(run, ignore_errors=True)  # generation resumes, but a training run is never mixed with an old one
    run.mkdir(parents=True)
    summary_path = run / "summary.json"
    cpu = _run_measured([sys.executable, "-c", _POPALIGN_SCRIPT, str(run), str(seed), str(summary_path),
                         "tiny" if tiny else "full"],
                        root / "training" / "logs" / f"popalign-seed-{k}.log")
    done = json.loads(summary_path.read_text(encoding="utf-8"))
    records = {}
    for name, result in done.items():
        if not result["finite"]:
            raise RuntimeError(f"{name} seed {k}: the training log holds non-finite values; nothing was kept")
        dest = adapter_dir(root, name, k)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(result["lora"], tmp / "final" / "lora")
        records[name] = {"method": name, "seed": seed, "cpu_seconds": round(result["cpu_seconds"]["total"], 1),
                         "cpu_seconds_by_stage": result["cpu_seconds"], "commands": result["commands"],
                         "stage_seeds": result["seeds"], "settings": result["settings"],
                         "build_sets": result["build_sets"], "process_cpu_seconds": round(cpu, 1)}
        atomic_write_text(tmp / "training.json", json.dumps(records[name], indent=2) + "\n")
        atomic_replace_folder(tmp, dest)
    return records


def _digest_files(root: Path) -> str:
    """SHA-256 of the files under ``root`` (or of the file ``root``), each by its path relative to ``root``; a
    ``.safetensors`` file by its tensors (name, dtype, shape, values) only, because peft writes a LoRA's target
    modules into the metadata in set order, which changes from process to process for the same weights."""
    import hashlib

    import torch
    from safetensors.torch import load_file

    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
        if root.is_dir() else [root]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode() + b"\0")
        if path.suffix == ".safetensors":
            for name, tensor in sorted(load_file(str(path)).items()):
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode()
                              + tensor.contiguous().flatten().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def weights_digest(flags: dict) -> str:
    """The first 12 hex digits of the SHA-256 of the weights the flags load (:func:`_digest_files` of each; "" without
    weights): an evaluation folder named with it belongs to exactly those weights, so a rerun resumes it (the
    evaluation's own settings lock checks every other setting) and new weights get a new folder."""
    import hashlib

    paths = [Path(value) for value in (flags.get("lora"), flags.get("soft_prompt")) if value is not None]
    if not paths:
        return ""
    return "-" + hashlib.sha256("".join(_digest_files(path) for path in paths).encode()).hexdigest()[:12]


def weights_flags(folder: Path) -> dict:
    """The evaluation's flags loading the weights exported in ``folder``: ``--lora`` and/or ``--soft-prompt``."""
    flags = {}
    if (folder / "lora").is_dir():
        flags["lora"] = str(folder / "lora")
    if (folder / "soft_prompt.safetensors").is_file():
        flags["soft_prompt"] = str(folder / "soft_prompt.safetensors")
    if not flags:
        raise FileNotFoundError(f"{folder} holds no exported weights (lora/ or soft_prompt.safetensors)")
    return flags


# ---- evaluation ----------------------------------------------------------------------------------------------

def evaluate_command(*, out: Path, seed: int, config: MethodsConfig, prompts: str, guidance_scale: float | None = None,
                     **extra) -> list[str]:
    """``python -m scaleup.evaluate --config evaluate.json ...`` on the testbed."""
    from scaleup.testbed.card import EVALUATE_CONFIG
    from scaleup.testbed.paths import testbed_path

    tb = testbed_path()
    flags = {"config": str(tb / EVALUATE_CONFIG), "pipeline": str(tb), "prompts": prompts,
             "images_per_prompt": config.images_per_prompt, "batch_size": config.batch_size,
             "num_inference_steps": config.num_inference_steps,
             "guidance_scale": config.guidance_scale if guidance_scale is None else guidance_scale,
             "seed": seed, "grid_images": config.grid_images, "device": "cpu", "out": str(out), **extra}
    if config.max_prompts is not None:
        flags["max_prompts"] = config.max_prompts
    args = [sys.executable, "-m", "scaleup.evaluate"]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _evaluate(args: list[str], out: Path, grids: bool = False) -> dict:
    """Run one evaluation; its per-prompt summary, CPU seconds and (``grids``) the grids of :data:`GRID_PROMPTS`
    (PNG, base64)."""
    import base64

    cpu = _run_measured(args, out.with_name(out.name + ".log"))
    result = json.loads((out / "results.json").read_text(encoding="utf-8"))
    prompts = [p["prompt"] for p in result["per_prompt"]]
    pictures = {prompt: base64.b64encode(path.read_bytes()).decode("ascii") for prompt in GRID_PROMPTS
                if grids and prompt in prompts
                and (path := out / "grids" / f"prompt_{prompts.index(prompt):05d}.png").is_file()}
    return {"per_prompt": _per_prompt(result), "cpu_seconds": round(cpu, 1), "grids": pictures}


# ---- reusing the committed evaluations -----------------------------------------------------------------------

#: The per-prompt summaries of every evaluation of the run, beside its results.json; a later run reuses them.
EVALUATIONS_FILE = "evaluations.json"


@dataclass(frozen=True)
class Evaluation:
    """One run of ``scaleup.evaluate``: its folder under ``evaluations/``, its command line, and whether its grids
    are kept (seed 0's table evaluations: results.json shows them)."""

    folder: str
    args: tuple[str, ...]
    grids: bool = False


def evaluation_key(args, testbed: str) -> str:
    """What determines an evaluation's numbers, as one SHA-256: its command line (the interpreter and ``--out``
    left out, this checkout's path as ``<repo>``), the weight files it loads and the testbed's files (``testbed``,
    :func:`testbed_digest`). The evaluation code is not in it: the sample re-run checks that (:func:`verify`)."""
    import hashlib

    args = list(args[3:])
    if "--out" in args:
        i = args.index("--out")
        del args[i:i + 2]
    weights = [_digest_files(Path(args[args.index(flag) + 1])) for flag in ("--lora", "--soft-prompt")
               if flag in args]
    normalised = [a.replace(str(REPO), "<repo>") for a in args]
    return hashlib.sha256(json.dumps([normalised, weights, testbed]).encode()).hexdigest()


def testbed_digest() -> str:
    """SHA-256 of every file of the committed testbed (weights, configs, prompts)."""
    from scaleup.testbed.paths import testbed_path

    return _digest_files(testbed_path())


def _loading(e: Evaluation) -> tuple:
    """How an evaluation loads what it evaluates: its option names and the model parts its LoRA touches."""
    args = list(e.args[3:])
    names = tuple(sorted(a for a in args if a.startswith("--") and a not in ("--out", "--prompts", "--seed",
                                                                             "--guidance-scale", "--grid-images")))
    parts: tuple = ()
    if "--lora" in args:
        from safetensors import safe_open

        with safe_open(str(Path(args[args.index("--lora") + 1]) / "pytorch_lora_weights.safetensors"), "pt") as f:
            parts = tuple(sorted({key.split(".")[0] for key in f.keys()}))
    return names, parts, "--edit-template" in args and args[args.index("--edit-guidance-scale") + 1]


def verification_sample(reused: list[Evaluation], summaries: dict) -> list[tuple[Evaluation, str]]:
    """The reused evaluations re-run to check their summaries: the first of each way of loading weights
    (:func:`_loading`: no weights, prompt augmentation, each semantic-guidance scale, a soft prompt, a LoRA of the
    text encoder / U-Net / both, with or without the same-noise comparison), one prompt each, the i-th of them its
    prompt ``7 i`` modulo the prompt count so that the sample covers several prompts."""
    seen, sample = set(), []
    for e in reused:
        way = _loading(e)
        if way in seen:
            continue
        seen.add(way)
        prompts = [p["prompt"] for p in summaries[e.folder]["per_prompt"]]
        sample.append((e, prompts[(7 * len(sample)) % len(prompts)]))
    return sample


def verify(sample: list[tuple[Evaluation, str]], summaries: dict, folder: Path, workers: int) -> list[dict]:
    """Re-run each sampled evaluation on its one prompt (same seed, noise and settings; images are keyed by the
    prompt's text, so a one-prompt run draws the same images) and compare every number of that prompt with the
    committed summary (:func:`experiments.leaves.moved`, 1e-9 relative); one error naming every difference."""
    from experiments.leaves import moved

    shutil.rmtree(folder, ignore_errors=True)
    jobs = []
    for i, (e, prompt) in enumerate(sample):
        work = folder / f"{i:02d}"
        work.mkdir(parents=True)
        atomic_write_text(work / "prompts.txt", prompt + "\n")
        args = list(e.args)
        args[args.index("--prompts") + 1] = str(work / "prompts.txt")
        args[args.index("--out") + 1] = str(work / "eval")
        args[args.index("--grid-images") + 1] = "0"
        jobs.append(lambda args=args, work=work: _evaluate(args, work / "eval"))
    checked, problems = [], []
    for (e, prompt), result in zip(sample, _parallel(jobs, workers)):
        committed = next(p for p in summaries[e.folder]["per_prompt"] if p["prompt"] == prompt)
        again = result["per_prompt"][0]
        diff = moved({k: v for k, v in committed.items() if k != "prompt"},
                     {k: v for k, v in again.items() if k != "prompt"})
        checked.append({"evaluation": e.folder, "prompt": prompt, "identical": not diff})
        problems += [f"{e.folder}, {prompt!r}: {line}" for line in diff]
    if problems:
        raise RuntimeError("the committed evaluation summaries do not reproduce with this code and machine:\n  "
                           + "\n  ".join(problems) + f"\nrun `python -m experiments run testbed-methods "
                           "--reevaluate` to recompute every evaluation (about 35 CPU-minutes)")
    return checked


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _reusable(entry: dict, grids: dict[str, str]) -> dict | None:
    """A committed summary with its grids taken back from the committed results.json (``grids``: PNG base64 by
    SHA-256; the index keeps only the hashes, the pictures are results.json's), or None when one is missing."""
    wanted = entry.get("grid_sha256")
    if wanted is None or any(h not in grids for h in wanted.values()):
        return None
    return {**{k: v for k, v in entry.items() if k != "grid_sha256"},
            "grids": {prompt: grids[h] for prompt, h in wanted.items()}}


def run_evaluations(evaluations: list[Evaluation], ctx: RunContext, config: MethodsConfig, *,
                    reuse_from: Path | None) -> tuple[dict, dict]:
    """Every evaluation's summary (``{folder: {"per_prompt", "cpu_seconds", "grids"}}``), reusing those of
    ``reuse_from``'s :data:`EVALUATIONS_FILE` whose :func:`evaluation_key` is unchanged (after :func:`verify` of a
    sample), running the rest (each resumes its folder under ``evaluations/``); writes the run's
    :data:`EVALUATIONS_FILE`, and returns what was reused, run and checked."""
    testbed = testbed_digest()
    keys = {e.folder: evaluation_key(e.args, testbed) for e in evaluations}
    by_key = {}
    if reuse_from is not None and (reuse_from / EVALUATIONS_FILE).is_file():
        committed = json.loads((reuse_from / EVALUATIONS_FILE).read_text(encoding="utf-8"))["evaluations"]
        results_path = reuse_from / "results.json"
        pictures = json.loads(results_path.read_text(encoding="utf-8")).get("grids", {}) \
            if results_path.is_file() else {}
        grids = {_sha256(b64): b64 for by_prompt in pictures.values() for b64 in by_prompt.values()}
        for entry in committed.values():  # by key: the weights kept, whatever the folder's name
            if (summary := _reusable(entry, grids)) is not None:
                by_key[entry["key"]] = summary
    summaries = {e.folder: by_key[keys[e.folder]] for e in evaluations if keys[e.folder] in by_key}
    reused = [e for e in evaluations if e.folder in summaries]
    todo = [e for e in evaluations if e.folder not in summaries]
    checked = verify(verification_sample(reused, summaries), summaries, ctx.out_dir / "verification",
                     config.train_processes) if reused else []
    jobs = [lambda e=e: _evaluate(list(e.args), ctx.out_dir / "evaluations" / e.folder, e.grids) for e in todo]
    for e, result in zip(todo, _parallel(jobs, config.train_processes)):
        summaries[e.folder] = {"key": keys[e.folder], **result}
    index = {"about": "per-prompt summaries of every evaluation of this run (experiments/testbed_methods.py); "
                      "key: evaluation_key(); grid_sha256: the SHA-256 of each grid's base64 in results.json",
             "testbed": testbed,
             "evaluations": {e.folder: {**{k: v for k, v in summaries[e.folder].items() if k != "grids"},
                                        "grid_sha256": {prompt: _sha256(b64) for prompt, b64
                                                        in summaries[e.folder]["grids"].items()}}
                             for e in evaluations}}
    atomic_write_text(ctx.out_dir / EVALUATIONS_FILE, json.dumps(index, indent=1) + "\n")
    report = {"reused": f"{len(reused)} committed summaries", "evaluated": f"{len(todo)} evaluations",
              "verified": "; ".join(f"{c['evaluation']} on {c['prompt']!r}: identical" for c in checked)}
    return summaries, report


def _per_prompt(result: dict) -> list[dict]:
    from scaleup.testbed.card import prompt_group

    return [{"prompt": p["prompt"], "group": prompt_group(p["prompt"]), "red": p["freq"]["red"], "bias": p["bias"],
             "confident_share": p["confident_share"], "prompt_accuracy": p["prompt_accuracy"],
             "similarity": p.get("similarity"), "n_images": p["n_images"]} for p in result["per_prompt"]]


def group_means(per_prompt: list[dict]) -> dict:
    """Mean over the prompts of each group, per metric."""
    out = {}
    for key in KEYS:
        out[key] = {}
        for group in GROUPS:
            values = [p[key] for p in per_prompt if p["group"] == group and p[key] is not None]
            out[key][group] = float(np.mean(values)) if values else None
    return out


def _parallel(jobs: list, workers: int) -> list:
    """Run the callables ``jobs`` (each starts one single-threaded process) ``workers`` at a time, in order."""
    if workers <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


# ---- the learning-rate selection ---------------------------------------------------------------------------

def selection(folder: Path) -> dict:
    """The committed selection runs (``selection/index.json``) on the training prompts, and the rate the rule picks
    (:data:`LEARNING_RATE_RULE`): the lowest training-prompt bias among the runs whose prompt accuracy stays within 2
    points of the original's on the same noise."""
    from scaleup.testbed.card import prompt_group

    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))

    def training_means(name: str) -> dict:
        result = json.loads((folder / name).read_text(encoding="utf-8"))
        rows = [p for p in result["per_prompt"] if prompt_group(p["prompt"]) == "training"]
        return {key: float(np.mean([p[key] for p in rows])) for key in ("bias", "prompt_accuracy", "confident_share")}

    original = training_means(index["original"])
    runs = [{**run, **training_means(run["file"])} for run in index["runs"]]
    # the rule compares the runs at the budget's 60 iterations and constant rate (the schedule check is reported only)
    kept = [r for r in runs if "iterations" not in r and r["prompt_accuracy"] >= original["prompt_accuracy"] - 0.02]
    chosen = min(kept, key=lambda r: r["bias"]) if kept else None
    return {"about": index["about"], "original": original, "runs": runs,
            "chosen_learning_rate": None if chosen is None else chosen["learning_rate"], "used_learning_rate": ADFT_LR}


# ---- the experiment ------------------------------------------------------------------------------------------

def run(config: MethodsConfig, ctx: RunContext) -> dict:
    from experiments.seed_statistics import mean_sd
    from scaleup.testbed.paths import testbed_path

    methods = [method(name) for name in config.methods]
    seeds = ctx.seeds(config.n_seeds)
    streams = [spawn_seeds(s, 2) for s in seeds]  # (training, evaluation) per seed index
    committed = REPO / "paper_figures" / "out" / ctx.name  # the runner's default_out(), where the weights are kept
    train = ctx.quick or ctx.retrain
    source = ctx.out_dir if train else committed

    # 1. training (or the committed exports)
    training: dict[str, list] = {}
    jobs = []
    for m in methods:
        if m.kind not in ("adft", "popalign"):
            continue
        for k, (train_seed, _) in enumerate(streams[:m.seeds]):
            if train and m.kind == "adft":
                jobs.append(lambda m=m, k=k, s=train_seed: {m.name: train_adft(m, config.adft, seed=s,
                                                                               root=ctx.out_dir, k=k)})
            elif train and m.name == "popalign":  # one process trains PopAlign and SFT on the same sets
                jobs.append(lambda k=k, s=train_seed: train_popalign(seed=s, root=ctx.out_dir, k=k,
                                                                     tiny=ctx.quick))
            elif not train:
                path = adapter_dir(committed, m.name, k) / "training.json"
                if not path.is_file():
                    raise FileNotFoundError(f"no committed weights of {m.name} seed {k} at {path.parent}; pass "
                                            f"--retrain to train them (about 6 CPU-minutes per run)")
                training.setdefault(m.name, []).append(json.loads(path.read_text(encoding="utf-8")))
    for records in _parallel(jobs, config.train_processes):
        for name, record in records.items():
            if name in config.methods:
                training.setdefault(name, []).append(record)
    for records in training.values():
        records.sort(key=lambda r: [s[0] for s in streams].index(r["seed"]))

    # 2. evaluation: every method and seed on all testbed prompts, from the seed's noise
    prompts = str(testbed_path() / "prompts" / "all.txt")
    evaluations, table_folders = [], {}
    for m in methods:
        for k, (_, eval_seed) in enumerate(streams[:m.seeds]):
            extra = dict(m.evaluate)
            if m.kind in ("adft", "popalign"):
                extra.update(weights_flags(adapter_dir(source, m.name, k) / "final"))
                if k == 0:  # content kept: the same-noise similarity to the original's image (seed 000 Table 1's
                    # CLIP-I / DINO), on the first seed only: it draws every image twice
                    extra.update(compare_original="true", image_embedder=SHAPE_EMBEDDER)
            folder = f"{m.name}/seed-{k}{weights_digest(extra)}"
            args = evaluate_command(out=ctx.out_dir / "evaluations" / folder, seed=eval_seed, config=config,
                                    prompts=prompts, **extra)
            evaluations.append(Evaluation(folder, tuple(args), grids=k == 0))
            table_folders[(m.name, k)] = folder
    # the guidance sweep (original and the sweep method, seed 0) and the curve methods' checkpoints on the
    # training prompts (bias against iterations): the same noise as the table's seed 0
    extras = {}
    by_name = {m.name: m for m in methods}
    eval_seed0 = streams[0][1]
    for w in config.guidance_sweep:
        for name in ("original", config.sweep_method):
            if name not in by_name:
                continue
            extra = weights_flags(adapter_dir(source, name, 0) / "final") if by_name[name].kind != "base" else {}
            folder = f"guidance/{name}-w{w:g}{weights_digest(extra)}"
            args = evaluate_command(out=ctx.out_dir / "evaluations" / folder, seed=eval_seed0, config=config,
                                    prompts=prompts, guidance_scale=w, grid_images=0, **extra)
            evaluations.append(Evaluation(folder, tuple(args)))
            extras[folder] = ("guidance", name, w)
    training_prompts = str(testbed_path() / "prompts" / "training.txt")
    for m in (by_name[name] for name in config.curve_methods if name in by_name):
        for k, (_, eval_seed) in enumerate(streams[:m.seeds]):
            for checkpoint in sorted(adapter_dir(source, m.name, k).glob("checkpoint-*"),
                                     key=lambda p: int(p.name.split("-")[1])):
                flags = weights_flags(checkpoint)
                folder = f"curve/{m.name}-seed-{k}-{checkpoint.name}{weights_digest(flags)}"
                args = evaluate_command(out=ctx.out_dir / "evaluations" / folder, seed=eval_seed, config=config,
                                        prompts=training_prompts, grid_images=0, **flags)
                evaluations.append(Evaluation(folder, tuple(args)))
                extras[folder] = ("curve", m.name, k, int(checkpoint.name.split("-")[1]))
    # the summaries beside the weights (the committed ones, or a previous run's in this folder when it trains)
    # are reused where nothing that determines them changed
    summaries, evaluation_reuse = run_evaluations(evaluations, ctx, config,
                                                  reuse_from=None if ctx.reevaluate else source)
    guidance = {}
    curve: dict[str, dict[int, dict[int, float]]] = {}
    for folder, what in extras.items():
        groups = group_means(summaries[folder]["per_prompt"])
        if what[0] == "guidance":
            guidance.setdefault(what[1], []).append({"guidance_scale": what[2], "groups": groups})
        else:
            curve.setdefault(what[1], {}).setdefault(what[2], {})[what[3]] = groups["bias"]["training"]
    per_seed: dict[str, list] = {}
    for (name, k), folder in table_folders.items():
        result = summaries[folder]
        per_seed.setdefault(name, []).append({"seed_index": k, "groups": group_means(result["per_prompt"]),
                                              "per_prompt": result["per_prompt"],
                                              "eval_cpu_seconds": result["cpu_seconds"]})

    iterations_curves = []
    for name in (name for name in config.curve_methods if name in per_seed):
        final = adft_flags(by_name[name], config.adft)["iterations"]
        for k, entry in enumerate(per_seed[name]):  # the final weights close each curve
            curve.setdefault(name, {}).setdefault(k, {})[final] = entry["groups"]["bias"]["training"]
        curves = [{"seed_index": k, "iterations": sorted(c), "training_bias": [c[i] for i in sorted(c)]}
                  for k, c in sorted(curve[name].items())]
        reached = [next((i for i, b in zip(c["iterations"], c["training_bias"]) if b <= 0.2), None) for c in curves]
        iterations_curves.append({"method": name, "curves": curves, "iterations_to_bias_0.2": reached})
    for name, at_table in (("original", per_seed.get("original")), (config.sweep_method,
                                                                      per_seed.get(config.sweep_method))):
        if at_table and name in guidance:
            guidance[name].append({"guidance_scale": config.guidance_scale, "groups": at_table[0]["groups"]})
            guidance[name].sort(key=lambda e: e["guidance_scale"])

    # before / after from the same noise: the evaluation's grids of seed 0 (PNG, base64), for the plot step
    grids = {m.name: summaries[table_folders[(m.name, 0)]]["grids"] for m in methods}

    # 3. the table: mean +- sd over seeds of each group mean
    table = []
    for m in methods:
        row = {"method": m.name, "label": m.label, "kind": m.kind, "paper": m.paper, "n_seeds": len(per_seed[m.name])}
        for key in KEYS:
            for group in GROUPS:
                values = [s["groups"][key][group] for s in per_seed[m.name] if s["groups"][key][group] is not None]
                if values:
                    mean, sd = mean_sd(values)
                    row[f"{key}:{group}"] = {"mean": mean, "sd": sd}
        if m.name in training:
            cpu = [t["cpu_seconds"] for t in training[m.name]]
            row["train_cpu_seconds"] = {"mean": float(np.mean(cpu)), "sd": float(np.std(cpu, ddof=1)) if len(cpu) > 1
                                        else 0.0}
        table.append(row)
    return {"testbed": str(testbed_path()), "weights": str(source), "trained_by_this_run": train,
            "seeds": seeds, "streams": streams, "methods": [asdict(m) for m in methods],
            "learning_rate_rule": LEARNING_RATE_RULE, "schedule_rule": SCHEDULE_RULE,
            "selection": selection(REPO / "paper_figures" / "out" / ctx.name / "selection"),
            "training": training, "per_seed": per_seed, "table": table, "grids": grids,
            "guidance_sweep": guidance, "iterations_curves": iterations_curves,
            "evaluation_reuse": evaluation_reuse}


def plot(results: dict) -> dict:
    import matplotlib.pyplot as plt

    table = results["table"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(table) + 1.6), layout="constrained", sharey=True)
    y = np.arange(len(table))
    colours = {"training": "C0", "heldout_digits": "C3", "heldout_template": "C2"}
    for ax, key, title in ((axes[0], "bias", "bias |P(red) - P(blue)|"),
                           (axes[1], "prompt_accuracy", "prompt (digit) accuracy"),
                           (axes[2], "confident_share", "confident share (1 - purple)")):
        for j, group in enumerate(GROUPS):
            means = [row.get(f"{key}:{group}", {}).get("mean", np.nan) for row in table]
            sds = [row.get(f"{key}:{group}", {}).get("sd", 0.0) for row in table]
            ax.barh(y + (j - 1) * 0.27, means, height=0.26, xerr=sds, color=colours[group], alpha=0.85,
                    label=group.replace("_", " "), capsize=2)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1.05)
    axes[0].axvline(0.2, color="grey", lw=0.8, ls="--")
    axes[0].set_yticks(y, [row["label"] for row in table], fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"every method on the testbed: mean ± sd over {table[0]['n_seeds']} seeds, "
                 f"{results['config']['images_per_prompt']} images per prompt, "
                 f"guidance {results['config']['guidance_scale']:g}", fontsize=10)
    figures = {"testbed_methods": fig}
    sweep, curves = results.get("guidance_sweep") or {}, results.get("iterations_curves") or []
    if sweep or curves:
        fig3, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
        labels = {row["method"]: row["label"] for row in table}
        for (name, entries), colour in zip(sweep.items(), ("k", "C0")):
            for group, line in (("training", "-"), ("heldout_digits", "--"), ("heldout_template", ":")):
                a1.plot([e["guidance_scale"] for e in entries], [e["groups"]["bias"][group] for e in entries],
                        color=colour, linestyle=line, marker="o", label=f"{labels.get(name, name)}: {group}")
        a1.set_xlabel("guidance scale w")
        a1.set_ylabel("bias (mean over the group's prompts)")
        a1.set_title("bias against guidance, before and after finetuning (seed 0)", fontsize=9)
        a1.legend(fontsize=6)
        a1.set_ylim(0, 1.05)
        for entry, colour in zip(curves, ("C1", "C0", "C4")):
            for c in entry["curves"]:
                a2.plot([0] + c["iterations"], [table[0]["bias:training"]["mean"]] + c["training_bias"], marker="o",
                        color=colour, alpha=0.8, label=f"{labels.get(entry['method'], entry['method'])}"
                        if c["seed_index"] == 0 else None)
        a2.axhline(0.2, color="grey", lw=0.8, ls="--")
        a2.set_xlabel("iteration")
        a2.set_ylabel("training-prompt bias")
        a2.set_ylim(0, 1.05)
        a2.set_title("training-prompt bias against iterations (one line per seed)", fontsize=9)
        a2.legend(fontsize=6)
        figures["testbed_methods_guidance_iterations"] = fig3
    grids = results.get("grids") or {}
    prompts = [p for p in GRID_PROMPTS if any(p in g for g in grids.values())]
    if prompts:
        import base64
        import io

        names = [row["method"] for row in table if grids.get(row["method"])]
        labels = {row["method"]: row["label"] for row in table}
        fig2, axes2 = plt.subplots(len(names), len(prompts), figsize=(2.2 * len(prompts), 1.3 * len(names)),
                                   layout="constrained", squeeze=False)
        for i, name in enumerate(names):
            for j, prompt in enumerate(prompts):
                ax = axes2[i][j]
                ax.set_xticks([]), ax.set_yticks([])
                if prompt in grids[name]:
                    ax.imshow(plt.imread(io.BytesIO(base64.b64decode(grids[name][prompt])), format="png"))
                if j == 0:
                    ax.set_ylabel(labels[name], fontsize=6, rotation=0, ha="right", va="center")
                if i == 0:
                    ax.set_title(prompt, fontsize=7)
        fig2.suptitle("the same noise through every method (seed 0; the evaluation classifier's label on each image)",
                      fontsize=9)
        figures["testbed_methods_grids"] = fig2
    return figures


EXPERIMENTS = [Experiment("testbed-methods", make_config, run, plot)]
