"""``dft-training`` (seed 000, Fig. 6a): finetuning toward a fixed target through the sampler with the exact,
adjusted and unstandardised gradients (:data:`theory.sampler_gradient.GRADIENT_MODES`), repeated over seeds."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.dft_models import SD_BETAS, mean_sd, mixture_model  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.sampler_gradient import GRADIENT_MODES  # noqa: E402
from toy.sampler_chain import finetune, make_sampler  # noqa: E402


@dataclass(frozen=True)
class TrainingConfig:
    dim: int = 2
    sampler: str = "ddim"
    steps: int = 20
    iterations: int = 150
    batch: int = 32
    lr: float = 0.02
    seeds: int = 5  # repeats, each with its own mixture and batches; the headline is mean and sd over them
    target: tuple[float, ...] = (1.5, -1.0)


def run_training(cfg: TrainingConfig, ctx: RunContext) -> dict:
    sampler = make_sampler(cfg.sampler, SD_BETAS, cfg.steps)
    target = torch.tensor(cfg.target, dtype=torch.float64)
    streams = ctx.seeds(2 * cfg.seeds)  # repeat r: its mixture's means from stream 2r, its batches from 2r + 1
    curves = {}
    for mode in GRADIENT_MODES:  # every mode sees the same mixtures and batches: a paired comparison
        curves[mode] = [finetune(mixture_model(cfg.dim, streams[2 * r]), sampler,
                                 lambda z0: (z0 - target).square().sum(1).mean(), mode, dim=cfg.dim, iterations=cfg.iterations,
                                 batch=cfg.batch, lr=cfg.lr, seed=streams[2 * r + 1])
                        for r in range(cfg.seeds)]
    tail = max(1, cfg.iterations // 10)
    per_seed = {m: [float(np.mean(c[-tail:])) for c in curves[m]] for m in GRADIENT_MODES}
    final = {m: mean_sd(per_seed[m]) for m in GRADIENT_MODES}
    return {"final_loss": {m: final[m][0] for m in GRADIENT_MODES},
            "final_loss_sd": {m: final[m][1] for m in GRADIENT_MODES},
            "final_loss_per_seed": per_seed,
            "initial_loss": float(np.mean([c[0] for c in curves["exact"]])),
            "curves": {m: np.array(curves[m]).mean(0).tolist() for m in GRADIENT_MODES},
            "curves_min": {m: np.array(curves[m]).min(0).tolist() for m in GRADIENT_MODES},
            "curves_max": {m: np.array(curves[m]).max(0).tolist() for m in GRADIENT_MODES},
            "figure": "dft_training.png"}


def plot(results: dict) -> dict:
    """Loss curves of the exact, adjusted and unstandardised gradients (mean and range over seeds)."""
    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, color in zip(GRADIENT_MODES, ("C3", "C0", "C2")):
        mean, sd = results["final_loss"][mode], results["final_loss_sd"][mode]
        curve = results["curves"][mode]
        ax.plot(curve, color=color, label=f"{mode}: final {mean:.3g} +- {sd:.2g}")
        ax.fill_between(np.arange(len(curve)), results["curves_min"][mode], results["curves_max"][mode], color=color,
                        alpha=0.2)
    ax.set(yscale="log", xlabel="iteration", ylabel="E ||z_0 - target||^2",
           title=f"Finetuning through {cfg['sampler']} ({cfg['steps']} steps), mean and range over {cfg['seeds']} "
                 f"seeds (seed 000, Fig. 6a)")
    ax.legend(fontsize=8)
    return {"dft_training": fig}


def make_config(quick: bool) -> TrainingConfig:
    return TrainingConfig(iterations=40, seeds=2) if quick else TrainingConfig()


EXPERIMENTS = [Experiment("dft-training", make_config, run_training, plot)]
