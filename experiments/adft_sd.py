"""``adft-sd``: the aDFT job of seed 000 (Algorithm A.1, [0105]-[0109]) end to end on tiny random models on CPU.

The whole Stable Diffusion job (:mod:`scaleup.jobs.adft`) runs on tiny random SD 1.5 / CLIP / DINOv2 written to disk
and loaded back through the real loaders: LoRA on the text encoder, DPM-Solver++ with CFG and the adjusted gradient,
original images with the adapters disabled, DAL targets on the whole batch, L_img with CLIP and DINOv2, L_face against
a folder of real faces (scikit-image's astronaut). The run is killed after a few iterations, resumed from its last
checkpoint (``--resume latest``), compared bit for bit with an uninterrupted run, and its checkpoint exports are
evaluated for held-out bias through ``scaleup.evaluate.run_eval``. The figure plots the batch's class frequency
against the iterations, from the job's JSONL log.

Tiny random images hold no face a real detector would find, so the centre-box detector stands in for one, and the
tiny CLIP's zero-shot classifier is random: the numbers show the machinery working (the DAL moving the classifier's
verdicts toward the target), not a debiased Stable Diffusion. With real weights the same job runs as
``accelerate launch -m scaleup.jobs.adft --preset gender ...`` (README, Scale-up jobs).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402


@dataclass(frozen=True)
class AdftSdConfig:
    preset: str = "gender"
    iterations: int = 24
    kill_after: int = 13
    checkpoint_every: int = 6
    batch_size: int = 8
    sub_batch_size: int = 4
    num_inference_steps: int = 4
    learning_rate: float = 1e-2
    lora_rank: int = 4
    coefficients: str = "algorithm_a1"
    eval_images_per_prompt: int = 4


def make_config(quick: bool) -> AdftSdConfig:
    if quick:
        return AdftSdConfig(iterations=4, kill_after=3, checkpoint_every=2, batch_size=4, sub_batch_size=2,
                            num_inference_steps=3, eval_images_per_prompt=2)
    return AdftSdConfig()


def _lora(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "lora" / "pytorch_lora_weights.safetensors"))


def run(cfg: AdftSdConfig, ctx: RunContext) -> dict:
    import torch

    from scaleup.jobs.adft.config import AdftConfig
    from scaleup.jobs.adft.job import run_job
    from scaleup.jobs.adft.tiny import tiny_config_values, write_tiny_run_inputs

    with tempfile.TemporaryDirectory(prefix="adft-sd-") as tmp:
        tmp = Path(tmp)
        inputs = write_tiny_run_inputs(tmp / "inputs", seed=ctx.seed)
        values = tiny_config_values(inputs, tmp / "run") | dict(
            preset=cfg.preset, iterations=cfg.iterations, checkpoint_every=cfg.checkpoint_every,
            batch_size=cfg.batch_size, sub_batch_size=cfg.sub_batch_size, num_inference_steps=cfg.num_inference_steps,
            learning_rate=cfg.learning_rate, lora_rank=cfg.lora_rank, coefficients=cfg.coefficients,
            eval_images_per_prompt=cfg.eval_images_per_prompt, seed=ctx.seed, checkpoints_total_limit=2)
        killed = run_job(AdftConfig(**(values | dict(until=cfg.kill_after))))
        resumed = run_job(AdftConfig(**(values | dict(resume="latest", evaluate_checkpoints=True))))
        run_job(AdftConfig(**(values | dict(output_dir=str(tmp / "whole")))))
        a, b = _lora(tmp / "run" / "final"), _lora(tmp / "whole" / "final")
        identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        log = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
        checkpoints = sorted(p.name for p in (tmp / "run").glob("checkpoint-*"))

    attribute = resumed["plan"]["attributes"][0]
    name, classes, target = attribute["name"], attribute["classes"], attribute["target"]
    steps = [e["step"] for e in log]
    freq = np.array([e["class_frequencies"][name] or [np.nan] * len(classes) for e in log], dtype=float)
    mean_prob = np.array([e["mean_probabilities"][name] or [np.nan] * len(classes) for e in log], dtype=float)
    original = np.array([e["original_class_frequencies"][name] or [np.nan] * len(classes) for e in log], dtype=float)
    return {
        "note": "tiny random models; centre-box detector and random CLIP zero-shot classifier: the machinery, not a "
                "debiased SD",
        "attribute": name, "classes": classes, "target": target,
        "iterations": steps, "class_frequency": freq.tolist(), "mean_probability": mean_prob.tolist(),
        "original_class_frequency": original.tolist(),
        "losses": {key: [e[key] for e in log] for key in ("loss", "loss_align", "loss_img", "loss_face")},
        "first_frequency": freq[0].tolist(), "last_frequency": freq[-1].tolist(),
        "killed_after": killed["iterations_done"], "resumed_from": Path(resumed["resumed_from"]).name,
        "resume_equals_uninterrupted": identical, "checkpoints_kept": checkpoints,
        "evaluations": resumed["evaluations"], "best": resumed["best"], "models": resumed["models"],
        "skipped_steps": resumed["skipped_steps"], "figure": "adft_sd.png",
    }


def plot(results: dict) -> dict:
    """Class frequency of the finetuned and original model over iterations (killed and resumed), and the losses."""
    steps, classes, target = results["iterations"], results["classes"], results["target"]
    name = results["attribute"]
    freq, mean_prob, original = (np.array(results[k], dtype=float) for k in
                                 ("class_frequency", "mean_probability", "original_class_frequency"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    k = len(classes) - 1  # the last class ("female" for gender): the one the biased tiny model under-produces
    left.plot(steps, freq[:, k], "o-", label=f"finetuned: share of {classes[k]}")
    left.plot(steps, mean_prob[:, k], "^:", label=f"finetuned: mean P({classes[k]})")
    left.plot(steps, original[:, k], "s--", color="grey", label="original model (same noise)")
    left.axhline(target[k], color="r", ls=":", label=f"target {target[k]:.2f}")
    resumed_at = int(results["resumed_from"].split("-")[1])
    left.axvline(resumed_at + 0.5, color="k", lw=0.8, alpha=0.5)
    left.annotate(f"killed after {results['killed_after']}, resumed\nfrom checkpoint {resumed_at}",
                  (resumed_at + 0.5, 0.3), xytext=(4, 0), textcoords="offset points", fontsize=7)
    left.set(xlabel="training iteration", ylabel=f"share of {classes[k]} in the batch (fraction)", ylim=(-0.05, 1.05),
             title=f"aDFT (paper 000, Alg. A.1) on tiny random SD: {name}, N = {results['config']['batch_size']}")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2)
    for (key, label), style in zip((("loss", "L"), ("loss_align", "L_align"), ("loss_img", "lambda_img L_img"),
                                    ("loss_face", "L_face")), ("-", "--", "-.", ":")):
        right.plot(steps, results["losses"][key], ls=style, label=label)
    right.set(xlabel="training iteration", ylabel="loss (unitless)", title="loss terms, paper 000 [0107]-[0109]")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=4)
    return {"adft_sd": fig}


EXPERIMENT = Experiment(
    name="adft-sd",
    make_config=make_config,
    run=run,
    plot=plot,
)
EXPERIMENTS = [EXPERIMENT]
