"""``dft-dal-toy`` (seed 000, eq. 6, Algorithm A.1): the DAL (theory.dal.dal_loss) with the adjusted gradient on a
prompt-conditioned four-component mixture (a soft prompt), toward targets 50/50 and 75/25, repeated over seeds."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.dft_models import SD_BETAS  # noqa: E402
from experiments.seed_statistics import mean_sd  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from experiments.loss_bands import draw_loss_band  # noqa: E402
from theory.dal import dal_loss  # noqa: E402
from theory.sampler_gradient import AdjustedGradient, run_sampler  # noqa: E402
from toy.attribute_classifiers import QUADRANT_ATTRIBUTE, QUADRANT_MEANS, quadrant_attribute_logits  # noqa: E402
from toy.denoisers import PromptMixtureDenoiser  # noqa: E402
from toy.sampler_chain import eps_model_for, finetune, make_sampler  # noqa: E402


@dataclass(frozen=True)
class DalToyConfig:
    targets: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.75, 0.25))
    bias: float = 0.85  # initial share of attribute class 0
    content_share: float = 0.6  # initial share of content type 0, which the attribute does not touch
    steps: int = 20
    iterations: int = 200
    batch: int = 24  # seed 000 uses N = 24 for gender
    threshold: float = 0.8
    lr: float = 0.05
    n_eval: int = 2000
    seeds: int = 5  # repeats (training batches and evaluation draws); the headline is mean and sd over them


def _prompt_model(cfg: DalToyConfig) -> PromptMixtureDenoiser:
    weights = torch.tensor([cfg.bias * cfg.content_share, cfg.bias * (1 - cfg.content_share),
                            (1 - cfg.bias) * cfg.content_share, (1 - cfg.bias) * (1 - cfg.content_share)],
                           dtype=torch.float64)
    projection = torch.eye(4, dtype=torch.float64)  # prompt embedding -> component logits
    return PromptMixtureDenoiser(projection, torch.zeros(4), weights.log(), QUADRANT_MEANS, torch.full((4,), 0.7))


def _shares(model: PromptMixtureDenoiser, sampler, n: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z0 = run_sampler(eps_model_for(model, sampler), torch.randn(n, 2, generator=gen, dtype=torch.float64),
                         sampler.step, sampler.n_steps, AdjustedGradient("exact"))
    w = model.weights.detach()
    return {"attribute0_freq": float((quadrant_attribute_logits(model, z0).argmax(1) == 0).double().mean()),
            "content0_freq": float((z0[:, 1] < 0).double().mean()),
            "attribute0_mass": float(w[QUADRANT_ATTRIBUTE == 0].sum()),
            "content0_mass": float(w[0] + w[2]),
            "content0_within_attribute": [float(w[0] / (w[0] + w[1])), float(w[2] / (w[2] + w[3]))]}


def run_dal_toy(cfg: DalToyConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddim", SD_BETAS, cfg.steps)
    # stream 0 evaluates the (deterministic) initial model; run (k, r) trains on 1 + 2 (k R + r), evaluates on the next
    streams = ctx.seeds(1 + 2 * len(cfg.targets) * cfg.seeds)
    before = _shares(_prompt_model(cfg), sampler, cfg.n_eval, streams[0])
    runs = []
    for k, target in enumerate(cfg.targets):
        per_seed = []
        for r in range(cfg.seeds):
            train_seed, eval_seed = streams[1 + 2 * (k * cfg.seeds + r)], streams[2 + 2 * (k * cfg.seeds + r)]
            model = _prompt_model(cfg)
            losses = finetune(model, sampler, lambda z0, t=target, m=model: dal_loss(quadrant_attribute_logits(m, z0), list(t),
                                                                                        cfg.threshold),
                              "adjusted", dim=2, iterations=cfg.iterations, batch=cfg.batch, lr=cfg.lr, seed=train_seed)
            per_seed.append({"after": _shares(model, sampler, cfg.n_eval, eval_seed), "loss": losses})
        freq_after, freq_after_sd = mean_sd([s["after"]["attribute0_freq"] for s in per_seed])
        content_after, content_after_sd = mean_sd([s["after"]["content0_freq"] for s in per_seed])
        loss_curves = np.array([s["loss"] for s in per_seed])
        runs.append({"target": list(target), "freq_before": before["attribute0_freq"], "freq_after": freq_after,
                     "freq_after_sd": freq_after_sd, "content0_freq_after": content_after,
                     "content0_freq_after_sd": content_after_sd, "before": before,
                     "after_per_seed": [s["after"] for s in per_seed], "loss": loss_curves.mean(0).tolist(),
                     "loss_per_seed": loss_curves.tolist(), "loss_min": loss_curves.min(0).tolist(),
                     "loss_max": loss_curves.max(0).tolist()})
    return {"runs": runs, "figure": "dft_dal_toy.png"}


def plot(results: dict) -> dict:
    """The DAL per target (mean +- sd over seeds) and the attribute/content shares before and after."""
    cfg, runs = results["config"], results["runs"]
    before, seeds = runs[0]["before"], cfg["seeds"]
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5 * (len(runs) + 1), 4.3), layout="constrained")
    for ax, run in zip(axes, runs):
        target = run["target"]
        draw_loss_band(ax, run["loss_per_seed"])
        ax.set(title=f"target {target[0]:.0%}/{target[1]:.0%}: attribute 0 {before['attribute0_freq']:.2f} → "
                     f"{run['freq_after']:.3f} ± {run['freq_after_sd']:.3f}",
               xlabel="iteration (iterations)", ylabel="DAL (nats)")
        ax.legend(fontsize=8, loc="upper right")
    ax = axes[-1]
    x = np.arange(len(runs))
    ax.bar(x - 0.2, [r["freq_before"] for r in runs], 0.4, color="0.65", edgecolor="0.3", hatch="//",
           label="attribute 0, original")
    ax.bar(x + 0.2, [r["freq_after"] for r in runs], 0.4, yerr=[r["freq_after_sd"] for r in runs], capsize=4,
           color="C0", label=f"attribute 0, debiased (mean ± sd, {seeds} seeds)")
    ax.plot(x + 0.2, [r["target"][0] for r in runs], "k*", ms=12, label="target share of attribute 0")
    ax.errorbar(x + 0.2, [r["content0_freq_after"] for r in runs], yerr=[r["content0_freq_after_sd"] for r in runs],
                fmt="rs", capsize=3, label=f"content 0, debiased (original {before['content0_freq']:.2f})")
    ax.set_xticks(x, [f"target {r['target'][0]:.0%}/{r['target'][1]:.0%}" for r in runs])
    ax.set(ylabel="share of samples (share)", ylim=(0, 1), title="shares before and after")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle("paper 000 eq. 6 + Alg. A.1: DAL + adjusted DFT on a prompt-conditioned mixture (soft prompt, "
                 "DDIM 20 steps)")
    return {"dft_dal_toy": fig}


def make_config(quick: bool) -> DalToyConfig:
    return DalToyConfig(iterations=60, n_eval=1000, seeds=2) if quick else DalToyConfig()


EXPERIMENTS = [Experiment("dft-dal-toy", make_config, run_dal_toy, plot)]
