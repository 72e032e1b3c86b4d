"""``popalign-sd``: PopAlign on Stable Diffusion end to end (seed 001, Sec. 3.1, 3.3, 5.1-5.4, App. B.1, E).

Generate the preference images (neutral and identity-augmented prompts), run the sanity filter, build the winning /
losing sets, train PopAlign (eq. 9) with LoRA, stop it half-way and resume it (compared with an uninterrupted run),
train the SFT baseline, and evaluate the base, PopAlign and SFT models through ``scaleup.evaluate.run_eval``: the
discrepancy (eq. 11) on the neutral prompts and the identity recall of App. B.1 on the augmented ones.

``--quick`` runs it all on tiny random SD 1.5 models on the CPU, saved and loaded back through the real loading
code. Random models draw no faces, so the quick run uses stand-ins, named as such in ``results.json``: the whole
image as the "face" and a randomly initialised tiny CLIP zero-shot classifier; the filter runs in ``record`` mode
(verdicts and what would be dropped are recorded, nothing is dropped, because the stand-in's labels are noise). The
numbers of a quick run show that the path runs, not what PopAlign does to a real model. The full configuration
needs real weights (``FAIRDIFF_SD15``, a GPU for sensible run times) and the real detector and classifier.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402


@dataclass(frozen=True)
class PopAlignSDConfig:
    tiny: bool = False  # tiny random models (quick); else the pipeline of FAIRDIFF_SD15
    prompts: str = "popalign-occupations"
    max_prompts: int | None = None
    keywords: str = "gender"
    images_per_neutral: int = 100
    images_per_augmented: int = 10
    num_inference_steps: int = 25
    guidance_scale: float = 6.5
    size: int | None = None
    set_size: int = 5
    target: tuple[float, ...] = ()
    filter: str = "apply"
    detector: str = "dlib"
    classifier: str = "auto"
    lora_rank: int = 64
    learning_rate: float = 1e-5
    train_steps: int = 750
    stop_at: int = 375
    checkpoint_every: int = 125
    pairs_per_device: int = 2
    beta_prime: float = 5000.0
    alpha: float = 0.5
    eval_images_per_prompt: int = 60
    reward_accuracy_sets: int = 16


def make_config(quick: bool) -> PopAlignSDConfig:
    if quick:
        return PopAlignSDConfig(tiny=True, max_prompts=2, images_per_neutral=6, images_per_augmented=4,
                                num_inference_steps=2, size=32, set_size=2, filter="record", detector="whole-image",
                                classifier="tiny-clip", lora_rank=4, learning_rate=1e-3, train_steps=4, stop_at=2,
                                checkpoint_every=2, eval_images_per_prompt=4, reward_accuracy_sets=2)
    return PopAlignSDConfig()


def _train(cfg: PopAlignSDConfig, pipeline: str, data: Path, out: Path, *, loss: str, seed: int,
           until: int | None = None, resume: str | None = None) -> dict:
    from scaleup.jobs.popalign.config import TrainConfig
    from scaleup.jobs.popalign.train import run_train

    config = TrainConfig(data=str(data), out=str(out), pipeline=pipeline, loss=loss, finetune="lora",
                         lora_rank=cfg.lora_rank, beta_prime=cfg.beta_prime, alpha=cfg.alpha, resolution=cfg.size,
                         pairs_per_device=cfg.pairs_per_device, max_train_steps=cfg.train_steps,
                         learning_rate=cfg.learning_rate, lr_warmup_steps=0 if cfg.tiny else 50,
                         checkpoint_every=cfg.checkpoint_every, until=until, resume=resume,
                         reward_accuracy_sets=cfg.reward_accuracy_sets, seed=seed)
    results = run_train(config, progress=False)
    results.pop("config", None)
    return results


def _lora_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def run(cfg: PopAlignSDConfig, ctx: RunContext) -> dict:
    import torch

    from scaleup.jobs.popalign.build import run_build_sets
    from scaleup.jobs.popalign.config import BuildSetsConfig, GenerateConfig
    from scaleup.jobs.popalign.evaluation import evaluate_prompts, identity_recall, stand_in_parts
    from scaleup.jobs.popalign.generation import run_generate, validate
    from scaleup.jobs.popalign.keywords import augment_prompt
    from scaleup.jobs.popalign.sanity import make_perception
    from scaleup.models.adapters import load_lora
    from scaleup.models.loading import load_pipeline

    work = ctx.out_dir / "work"
    if cfg.tiny:
        from scaleup.models.tiny import save_tiny_models

        pipeline = str(save_tiny_models(work / "models", seed=ctx.seed)["sd15"])
    else:
        from scaleup.models.errors import ModelUnavailableError
        from scaleup.models.loading import resolve_model_source

        try:  # FAIRDIFF_SD15 or the cached default, found before anything computes
            pipeline = resolve_model_source("sd15").location
        except ModelUnavailableError as err:
            if os.environ.get("FAIRDIFF_SD15", "").strip():
                raise  # a variable naming something unloadable is an error, missing models allowed or not
            ctx.model_absent(f"popalign-sd needs Stable Diffusion 1.5: {err}")  # stops here unless allowed
            return {"weights_available": False, "reason": str(err),
                    "how_to_run": "set FAIRDIFF_SD15=/path/to/stable-diffusion-v1-5 (a diffusers folder), ideally "
                                  "on a GPU: the full configuration generates 12,000 images (100 prompts x "
                                  "(100 + 2 x 10)) and trains 750 steps"}
    gen_config = GenerateConfig(out=str(work / "generated"), pipeline=pipeline, prompts=cfg.prompts,
                                max_prompts=cfg.max_prompts, keywords=(cfg.keywords,),
                                images_per_neutral=cfg.images_per_neutral,
                                images_per_augmented=cfg.images_per_augmented,
                                num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                                height=cfg.size, width=cfg.size, seed=ctx.seed)
    prompts, keywords = validate(gen_config)
    generation = run_generate(gen_config, progress=False)
    build = run_build_sets(BuildSetsConfig(generated=gen_config.out, out=str(work / "data"), set_size=cfg.set_size,
                                           target=cfg.target, filter=cfg.filter, detector=cfg.detector,
                                           classifier=cfg.classifier, seed=ctx.seed), progress=False)
    data = work / "data"

    # PopAlign, stopped half-way and resumed; the same run uninterrupted; the SFT baseline
    stopped = _train(cfg, pipeline, data, work / "popalign", loss="popalign", seed=ctx.seed, until=cfg.stop_at)
    popalign = _train(cfg, pipeline, data, work / "popalign", loss="popalign", seed=ctx.seed, resume="latest")
    straight = _train(cfg, pipeline, data, work / "popalign-uninterrupted", loss="popalign", seed=ctx.seed)
    sft = _train(cfg, pipeline, data, work / "sft", loss="sft", seed=ctx.seed)
    log_resumed = (work / "popalign" / "log.jsonl").read_text().splitlines()
    log_straight = (work / "popalign-uninterrupted" / "log.jsonl").read_text().splitlines()
    a, b = _lora_tensors(work / "popalign" / "lora"), _lora_tensors(work / "popalign-uninterrupted" / "lora")
    resume_check = {"stopped_after": stopped["iterations_done"], "resumed_from": popalign["resumed_from"],
                    "weights_equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
                    "logs_equal": log_resumed == log_straight}

    # evaluation: base, PopAlign, SFT on the neutral prompts (discrepancy) and augmented ones (App. B.1)
    augmented = [(augment_prompt(p, k), k) for p in prompts for k in keywords.keywords]
    target = keywords.class_target(keywords.target(cfg.target))
    perception = make_perception(keywords.attribute, cfg.detector, cfg.classifier, seed=ctx.seed) \
        if cfg.tiny else None
    evaluations = {}
    for name, lora in (("base", None), ("popalign", work / "popalign" / "lora"), ("sft", work / "sft" / "lora")):
        pipe = load_pipeline(pipeline, scheduler="dpm++2m")
        if lora is not None:
            load_lora(pipe, lora)
        parts = None if perception is None else stand_in_parts(
            pipe, perception, num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
            height=cfg.size, width=cfg.size)
        common = dict(attribute=keywords.attribute, images_per_prompt=cfg.eval_images_per_prompt,
                      num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                      size=cfg.size, seed=ctx.seeds(2)[1], parts=parts)  # other seeds than the training images'
        neutral = evaluate_prompts(pipe, prompts, work / "eval" / name / "neutral", target=target, **common)
        specific = evaluate_prompts(pipe, [p for p, _ in augmented], work / "eval" / name / "identity", **common)
        evaluations[name] = {"neutral": neutral["overall"],
                             "identity_recall": identity_recall(specific, [k for _, k in augmented], keywords)}

    log = [json.loads(line) for line in log_resumed]
    return {
        "weights_available": True,
        "models": "tiny random SD 1.5 (scaleup.models.tiny), saved and reloaded" if cfg.tiny else pipeline,
        "note": ("quick run on tiny random models: the numbers show the path runs end to end, not PopAlign's effect; "
                 "perception is the stand-ins named under build.filter") if cfg.tiny else None,
        "generation": generation, "build": {k: build[k] for k in (
            "set_pairs", "rows", "images", "pairs_dropped", "pairs_flagged_not_dropped", "prompts_without_sets",
            "filter", "target", "class_target")},
        "training": {"popalign": popalign, "sft": sft, "uninterrupted": {
            k: straight[k] for k in ("iterations_done", "set_reward_accuracy")}},
        "resume": resume_check, "evaluation": evaluations,
        "training_log": [{k: e[k] for k in ("step", "loss", "r_winner", "r_loser", "mu")} for e in log],
        "figure": "popalign_sd_training.png",
    }


def plot(results: dict) -> dict:
    """The PopAlign loss and the mean rewards of winners and losers over the (stopped and resumed) training."""
    if "training_log" not in results:  # a run without weights trained nothing
        return {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    cfg, log = results["config"], results["training_log"]
    steps = [e["step"] for e in log]
    axes[0].plot(steps, [e["loss"] for e in log], marker="o", label="PopAlign loss (paper 001, eq. 9)")
    axes[0].axvline(cfg['stop_at'], color="grey", ls=":", label="stopped and resumed")
    axes[0].set(xlabel="training iteration", ylabel="loss (nats)")
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2)
    axes[1].plot(steps, [e["r_winner"] for e in log], marker="o", label="mean r, winners")
    axes[1].plot(steps, [e["r_loser"] for e in log], marker="s", ls="--", label="mean r, losers")
    axes[1].plot(steps, [e["mu"] for e in log], ls=":", label="mu (normaliser)")
    axes[1].set(xlabel="training iteration", ylabel="implicit reward r (unitless)")
    axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=3)
    title = "tiny random SD 1.5 (path check, stand-in perception)" if cfg['tiny'] else "SD 1.5"
    fig.suptitle(f"PopAlign (paper 001) on {title}")
    return {"popalign_sd_training": fig}


EXPERIMENT = Experiment(
    name="popalign-sd",
    make_config=make_config,
    run=run,
    plot=plot,
)
EXPERIMENTS = [EXPERIMENT]
