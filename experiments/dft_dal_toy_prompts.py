"""``dft-dal-toy-prompts`` (seed 000 Fig. 9, [0131]-[0133]): the share of the minority attribute ("old") per prompt
before and after the conditional DAL + adjusted DFT toward 75/25, on the multi-prompt toy (toy.prompt_mixture)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.dal_prompt_runs import dal_run, occupations  # noqa: E402
from experiments.dft_models import SD_BETAS  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from experiments.loss_bands import draw_loss_band  # noqa: E402
from toy.prompt_mixture import COMPONENT_LABELS  # noqa: E402
from toy.sampler_chain import make_sampler  # noqa: E402
from tqdm import tqdm  # noqa: E402


@dataclass(frozen=True)
class PromptsConfig:
    prompts: int = 10  # "occupations"
    minority_range: tuple[float, float] = (0.05, 0.6)  # original share of "old", lowest and highest prompt
    content_range: tuple[float, float] = (0.35, 0.65)  # original share of content 0 (the "gender" conditioned on)
    target: tuple[float, float] = (0.75, 0.25)  # young / old, seed 000 [0132]
    conditional: bool = True  # targets within every prompt x content type ([0132])
    component: str = "text_encoder_lora"  # seed 000's default: LoRA on the text encoder ([0120])
    rank: int = 2
    width: int = 16
    steps: int = 20  # DDIM steps (seed 000 uses about 20 DPM-Solver++ steps, [0119])
    iterations: int = 200
    per_prompt: int = 24  # images per prompt per iteration (seed 000's N = 24)
    threshold: float = 0.8
    lr: float = 0.05
    n_eval: int = 1000  # samples per prompt
    seeds: int = 5


def run_prompts(cfg: PromptsConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddim", SD_BETAS, cfg.steps)
    prompts = occupations(cfg.prompts, cfg.minority_range, cfg.content_range)
    streams = ctx.seeds(3 * cfg.seeds)  # repeat r: original model 3r, training batches 3r + 1, evaluation 3r + 2
    runs = [dal_run(prompts, cfg.component, target=cfg.target, conditional=cfg.conditional, sampler=sampler,
                    width=cfg.width, rank=cfg.rank, iterations=cfg.iterations, per_prompt=cfg.per_prompt,
                    threshold=cfg.threshold, lr=cfg.lr, n_eval=cfg.n_eval, model_seed=streams[3 * r],
                    train_seed=streams[3 * r + 1], eval_seed=streams[3 * r + 2])
            for r in tqdm(range(cfg.seeds), desc="dft-dal-toy-prompts seeds")]
    summary = {}
    for when in ("before", "after"):
        shares = np.array([run[when]["attribute1"] for run in runs])  # (seeds, prompts)
        within = np.array([run[when]["attribute1_in_content"] for run in runs])  # (seeds, prompts, 2)
        summary[when] = {"old_share_mean": shares.mean(0).tolist(), "old_share_sd": shares.std(0, ddof=1).tolist(),
                         "old_in_content_mean": np.nanmean(within, 0).tolist(),
                         "old_in_content_sd": np.nanstd(within, 0, ddof=1).tolist(),
                         "distance_to_target_per_seed": np.abs(shares - cfg.target[1]).mean(1).tolist()}
    kept = np.array([run["after"]["content_kept_paired"] for run in runs])
    return {"prompts": prompts, "runs": runs, "summary": summary,
            "content_kept_paired_mean": kept.mean(0).tolist(), "content_kept_paired_sd": kept.std(0, ddof=1).tolist(),
            "trainable_parameters": runs[0]["trainable_parameters"]}


def plot(results: dict) -> dict:
    """Seed 000 Fig. 9's counterpart: per prompt, the share of "old" of the original and the debiased model (mean
    +- sd over seeds) with the target line; beside it, the DAL over iterations."""
    cfg, prompts, s = results["config"], results["prompts"], results["summary"]
    n, seeds, target = len(prompts["names"]), cfg["seeds"], cfg["target"][1]
    x = np.arange(n)
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(13, 4.6), width_ratios=[2.2, 1], layout="constrained")
    ax.bar(x - 0.2, s["before"]["old_share_mean"], 0.4, yerr=s["before"]["old_share_sd"], capsize=3, color="0.65",
           edgecolor="0.3", hatch="//", label="original model")
    ax.bar(x + 0.2, s["after"]["old_share_mean"], 0.4, yerr=s["after"]["old_share_sd"], capsize=3, color="C0",
           label=f"debiased: conditional DAL + aDFT, {COMPONENT_LABELS[cfg['component']]}")
    ax.plot(x, prompts["minority_share"], "k.", ms=7, label="original model's exact share (its weights)")
    ax.axhline(target, color="C3", ls="--", lw=1.5, label=f"target {target:.0%} old")
    ax.set_xticks(x, prompts["names"], rotation=30, ha="right")
    ax.set(xlabel="prompt (toy occupation)", ylabel='share of samples classified "old" (share)', ylim=(0, 0.8),
           title=f"paper 000 Fig. 9 on the toy: share of \"old\" per prompt (mean ± sd over {seeds} seeds)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=4, fontsize=8)
    draw_loss_band(ax_loss, [run["loss"] for run in results["runs"]])
    ax_loss.set(xlabel="iteration (iterations)", ylabel="conditional DAL (nats)",
                title=f"training loss ({seeds} seeds)")
    ax_loss.legend(fontsize=8)
    return {"dft_dal_toy_prompts": fig}


def make_config(quick: bool) -> PromptsConfig:
    return PromptsConfig(iterations=30, per_prompt=12, n_eval=200, seeds=2) if quick else PromptsConfig()


EXPERIMENTS = [Experiment("dft-dal-toy-prompts", make_config, run_prompts, plot)]
