"""The scale-up's testbed: ``testbed-train`` (the model itself) and ``testbed-bias`` (its learned bias, measured).

``testbed-train`` reports the committed testbed (components, size, training time, loss curve, the classifiers'
checks); with ``--retrain`` it trains a new one from scratch into its run folder (about 20 CPU-minutes) and reports
that, leaving the committed one in place. ``--quick`` trains a few iterations only, to exercise the code.

``testbed-bias`` runs the evaluation job (:func:`scaleup.evaluate.run_eval`, exactly what
``python -m scaleup.evaluate`` runs) on the committed testbed, for every testbed prompt (the training prompts of a
finetune, the held-out digits, the held-out template) at guidance scales 1, 3, 5 and 7.5: the share of red ink, the
bias of seed 000 [0124], the confident share and the prompt accuracy, against the skew of the training data.
Recent work reports that classifier-free guidance amplifies the bias of real SD; here the question is asked of a
model whose data skew is known exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from experiments.experiment import Experiment, RunContext

GROUPS = ("training", "heldout_digits", "heldout_template")
GROUP_LABELS = {"training": "training prompts (8 digits)", "heldout_digits": "held-out digits (four, seven)",
                "heldout_template": "held-out template (10 digits)"}


# ---- testbed-train -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    vae_steps: int = 1500
    steps: int = 3000
    batch_size: int = 128
    threads: int = 1


def make_train_config(quick: bool) -> TrainConfig:
    return TrainConfig(vae_steps=10, steps=10, batch_size=16) if quick else TrainConfig()


def _loss_curve(log_path: Path, every: int = 25) -> dict:
    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = np.array([r["loss"] for r in rows], dtype=np.float64)
    n = len(losses) // every
    return {"every": every, "step": [int((i + 1) * every) for i in range(n)],
            "loss": [float(losses[i * every:(i + 1) * every].mean()) for i in range(n)]}


def run_train(config: TrainConfig, ctx: RunContext) -> dict:
    from scaleup.testbed.build import build_testbed, folder_size_bytes
    from scaleup.testbed.card import read_card
    from scaleup.testbed.paths import testbed_path
    from scaleup.testbed.train import TestbedConfig

    if ctx.quick or ctx.retrain:
        out = ctx.out_dir / "testbed"
        card = build_testbed(TestbedConfig(output_dir=str(out), seed=ctx.seed, vae_steps=config.vae_steps,
                                           steps=config.steps, batch_size=config.batch_size, threads=config.threads,
                                           checkpoint_every=max(1, config.steps // 4),
                                           resume=None if ctx.restart else "latest"), progress=True)
        folder, source = out / "pipeline", "trained by this run"
    else:
        folder, source = testbed_path(), "the committed testbed (pass --retrain to train a new one)"
        card = read_card(folder)
    return {"testbed": str(folder), "source": source, "size_bytes": folder_size_bytes(folder),
            "components": card["components"], "training": card["training"],
            "classifiers": card["classifiers"]["report"], "data_skew": card["data_skew"],
            "loss_curve": _loss_curve(folder / "training_log.jsonl")}


def plot_train(results: dict) -> dict:
    import matplotlib.pyplot as plt

    curve = results["loss_curve"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
    ax.plot(curve["step"], curve["loss"], color="C0")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"denoising loss (mean of {curve['every']} iterations)")
    ax.set_yscale("log")
    params = sum(c.get("parameters", 0) for c in results["components"].values())
    ax.set_title(f"testbed training: {params / 1e6:.2f} M parameters, {results['size_bytes'] / 1e6:.1f} MB, "
                 f"diffusion stage {results['training']['cpu_seconds_this_process'] / 60:.0f} CPU-min", fontsize=9)
    return {"testbed_training": fig}


# ---- testbed-bias --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BiasConfig:
    guidance_scales: tuple[float, ...] = (1.0, 3.0, 5.0, 7.5)
    #: None: both protocols' own counts (seed 001's 100; seed 000's 60 are the first 60 of them)
    images_per_prompt: int | None = None
    labelled_per_class: int = 200
    bootstrap_resamples: int = 1000
    num_inference_steps: int = 20
    batch_size: int = 60
    max_prompts: int | None = None
    grid_images: int = 16


def make_bias_config(quick: bool) -> BiasConfig:
    if quick:
        return BiasConfig(guidance_scales=(1.0, 7.5), images_per_prompt=8, num_inference_steps=10, batch_size=8,
                          max_prompts=3, grid_images=0, labelled_per_class=20, bootstrap_resamples=50)
    return BiasConfig()


def testbed_eval_config(*, prompts: str, out: str | Path, guidance_scale: float, images_per_prompt: int | None,
                        num_inference_steps: int, batch_size: int, seed: int, max_prompts: int | None = None,
                        grid_images: int = 16, pipeline: str | None = None, **overrides):
    """The evaluation job's settings for the testbed: its card's attribute, classifiers and detector."""
    from scaleup.evaluate import EvalConfig
    from scaleup.job_config import build_config, read_config_file
    from scaleup.testbed.card import EVALUATE_CONFIG
    from scaleup.testbed.paths import testbed_path

    folder = Path(pipeline) if pipeline is not None else testbed_path()
    flags = dict(pipeline=str(folder), prompts=prompts, images_per_prompt=images_per_prompt, max_prompts=max_prompts,
                 num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, batch_size=batch_size,
                 device="cpu", seed=seed, grid_images=grid_images, out=str(out), **overrides)
    # the same precedence as `python -m scaleup.evaluate --config evaluate.json --flag ...`
    return build_config(EvalConfig, read_config_file(folder / EVALUATE_CONFIG), flags)


def _group_stats(per_prompt: list[dict], key: str) -> dict:
    from experiments.seed_statistics import mean_sd
    from scaleup.testbed.card import prompt_group

    out = {}
    for group in GROUPS:
        values = [p[key] for p in per_prompt if prompt_group(p["prompt"]) == group and p[key] is not None]
        if values:
            mean, sd = mean_sd(values)
            out[group] = {"mean": mean, "sd": sd, "n_prompts": len(values)}
    return out


def run_bias(config: BiasConfig, ctx: RunContext) -> dict:
    import tempfile

    from scaleup.evaluate import run_eval
    from scaleup.evaluation.compare import compare_evaluations
    from scaleup.testbed.card import PROMPT_FILES, prompt_group, read_card
    from scaleup.testbed.labelled import write_labelled_folder
    from scaleup.testbed.paths import testbed_path

    card = read_card()
    prompts = str(testbed_path() / "prompts" / PROMPT_FILES["all"])
    per_scale = []
    # labelled real digits for the classifier's confusion (CLEAM); made afresh from the seed, not committed
    labelled_dir = tempfile.TemporaryDirectory(prefix="testbed-labelled-")
    labelled = write_labelled_folder(labelled_dir.name, n_per_class=config.labelled_per_class, seed=ctx.seed)
    for w in config.guidance_scales:
        eval_config = testbed_eval_config(
            prompts=prompts, out=ctx.out_dir / "evaluations" / f"cfg-{w:g}", guidance_scale=w,
            images_per_prompt=config.images_per_prompt, num_inference_steps=config.num_inference_steps,
            batch_size=config.batch_size, seed=ctx.seed, max_prompts=config.max_prompts,
            grid_images=config.grid_images if w == max(config.guidance_scales) else 0, restart=True,
            protocol="both", labelled_folder=str(labelled), bootstrap_resamples=config.bootstrap_resamples)
        result = run_eval(eval_config, progress=True)
        per_prompt = [{"prompt": p["prompt"], "group": prompt_group(p["prompt"]), "red": p["freq"]["red"],
                       "bias": p["bias"], "confident_share": p["confident_share"],
                       "prompt_accuracy": p["prompt_accuracy"], "n_images": p["n_images"]}
                      for p in result["per_prompt"]]
        per_scale.append({"guidance_scale": w, "per_prompt": per_prompt,
                          "groups": {key: _group_stats(per_prompt, key)
                                     for key in ("bias", "red", "confident_share", "prompt_accuracy")},
                          "evaluation": f"evaluations/cfg-{w:g}/results.json",
                          "protocols": result["protocols"],
                          "classifier_error": {k: result["classifier_error"][k] for k in (
                              "n_labelled", "accuracy_per_class", "confusion", "protocols")}})
    labelled_dir.cleanup()
    # each scale against the lowest on the same prompts and noise: how sure the growth with guidance is
    lowest = ctx.out_dir / "evaluations" / f"cfg-{config.guidance_scales[0]:g}"
    guidance_vs_lowest = [
        {"guidance_scale": w, **compare_evaluations(lowest, ctx.out_dir / "evaluations" / f"cfg-{w:g}",
                                                    n_resamples=config.bootstrap_resamples)["differences"]}
        for w in config.guidance_scales[1:]]
    skew = card["data_skew"]
    evaluated = [p["prompt"] for p in per_scale[0]["per_prompt"]]
    data_groups = {g: float(np.mean([skew[p]["bias"] for p in evaluated if prompt_group(p) == g]))
                   for g in GROUPS if any(prompt_group(p) == g for p in evaluated)}
    top = per_scale[-1]
    return {"testbed": card["name"], "attribute": card["attribute"], "data_skew": {p: skew[p] for p in evaluated},
            "data_bias_by_group": data_groups, "per_guidance_scale": per_scale,
            "guidance_vs_lowest": guidance_vs_lowest,
            "headline": {"guidance_scale": top["guidance_scale"],
                         "training_bias_mean": top["groups"]["bias"]["training"]["mean"],
                         "data_training_bias_mean": data_groups["training"],
                         "protocols": {name: {k: p[k] for k in ("value", "interval", "images_per_prompt")}
                                       for name, p in top["protocols"].items()}}}


def plot_bias(results: dict) -> dict:
    import matplotlib.pyplot as plt

    scales = [s["guidance_scale"] for s in results["per_guidance_scale"]]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), layout="constrained")
    styles = {"training": ("C0", "-", "o"), "heldout_digits": ("C3", "--", "s"), "heldout_template": ("C2", ":", "^")}
    for group, (colour, line, marker) in styles.items():
        stats = [s["groups"]["bias"].get(group) for s in results["per_guidance_scale"]]
        if stats[0] is None:
            continue
        mean = np.array([s["mean"] for s in stats])
        sd = np.array([s["sd"] for s in stats])
        axes[0].errorbar(scales, mean, yerr=sd, color=colour, linestyle=line, marker=marker, capsize=3,
                         label=GROUP_LABELS[group])
        axes[0].axhline(results["data_bias_by_group"][group], color=colour, linestyle=line, alpha=0.35, lw=1)
        for ax, key in ((axes[2], "confident_share"), (axes[2], "prompt_accuracy")):
            values = [s["groups"][key].get(group, {}).get("mean", np.nan) for s in results["per_guidance_scale"]]
            ax.plot(scales, values, color=colour, linestyle=line, marker=marker if key == "prompt_accuracy" else "x")
    axes[0].set_xlabel("guidance scale w")
    axes[0].set_ylabel("bias |P(red) - P(blue)| (mean ± sd over prompts)")
    axes[0].set_title("bias grows with guidance (faint lines: the data's bias)", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower right")
    axes[0].set_ylim(0, 1.05)

    top = results["per_guidance_scale"][-1]
    names = [p["prompt"].replace("a handwritten ", "").replace("a drawing of the digit ", "drawing: ")
             for p in top["per_prompt"]]
    y = np.arange(len(names))
    axes[1].barh(y, [p["red"] for p in top["per_prompt"]], color=[styles[p["group"]][0] for p in top["per_prompt"]],
                 alpha=0.8, label=f"model at w = {top['guidance_scale']:g}")
    axes[1].scatter([results["data_skew"][p["prompt"]]["red"] for p in top["per_prompt"]], y, color="k",
                    marker="|", s=120, label="training data", zorder=3)
    axes[1].set_yticks(y, names, fontsize=7)
    axes[1].invert_yaxis()
    axes[1].set_xlim(0, 1)
    axes[1].axvline(0.5, color="grey", lw=0.8)
    axes[1].set_xlabel("share of images in red ink")
    axes[1].set_title("per prompt: model vs data", fontsize=9)
    axes[1].legend(fontsize=7, loc="lower right")

    axes[2].set_xlabel("guidance scale w")
    axes[2].set_ylabel("share of images")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("prompt accuracy (markers) and confident share (x)", fontsize=9)

    for name, colour, label in (("adft", "C0", "seed 000: mean bias over prompts"),
                                ("popalign", "C1", "seed 001: pooled discrepancy")):
        entries = [s["protocols"].get(name) for s in results["per_guidance_scale"]]
        if any(e is None or e["interval"] is None for e in entries):
            continue
        values = np.array([e["value"] for e in entries])
        low = values - np.array([e["interval"]["low"] for e in entries])
        high = np.array([e["interval"]["high"] for e in entries]) - values
        axes[3].errorbar(scales, values, yerr=[low, high], color=colour, marker="o", capsize=3, label=label)
    axes[3].set_xlabel("guidance scale w")
    axes[3].set_ylabel("the protocol's number (95 % bootstrap interval)")
    n_prompts = len(results["per_guidance_scale"][0]["per_prompt"])
    axes[3].set_title(f"both papers' protocols, {n_prompts} prompts", fontsize=9)
    axes[3].legend(fontsize=7, loc="upper left")
    axes[3].set_ylim(0, 1.05)
    return {"testbed_bias": fig}


EXPERIMENTS = [
    Experiment("testbed-train", make_train_config, run_train, plot_train),
    Experiment("testbed-bias", make_bias_config, run_bias, plot_bias),
]
