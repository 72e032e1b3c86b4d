"""``dft-dal-toy-components`` (seed 000 Table 1, [0129]-[0130]): which component to finetune with the DAL + adjusted
DFT toward 50/50: a soft prompt, LoRA on the text encoder, on the U-Net, on both, or every weight (full finetuning),
on the multi-prompt toy (toy.prompt_mixture), with the same loss, iterations and seeds for all."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.dal_prompt_runs import dal_run, occupations  # noqa: E402
from experiments.dft_models import SD_BETAS  # noqa: E402
from experiments.seed_statistics import mean_sd  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from toy.prompt_mixture import COMPONENT_LABELS, COMPONENTS  # noqa: E402
from toy.sampler_chain import make_sampler  # noqa: E402
from tqdm import tqdm  # noqa: E402


@dataclass(frozen=True)
class ComponentsConfig:
    prompts: int = 10
    minority_range: tuple[float, float] = (0.05, 0.6)  # original share of attribute 1 ("female"), per prompt
    content_range: tuple[float, float] = (0.35, 0.65)  # original share of the unrelated content type 0
    target: tuple[float, float] = (0.5, 0.5)  # a balanced gender, seed 000 [0120]
    components: tuple[str, ...] = COMPONENTS
    rank: int = 2  # LoRA rank (seed 000: 50 of 768-1024 dims; here 2 of 16, and of 4 logits for the U-Net)
    width: int = 16
    steps: int = 20
    iterations: int = 150
    per_prompt: int = 24
    threshold: float = 0.8
    lr: float = 0.05
    n_eval: int = 1000
    seeds: int = 5


def _per_seed(runs: list[dict], key: str, when: str = "after") -> np.ndarray:
    """One number per seed: the mean over prompts of ``run[when][key]``."""
    return np.array([np.mean(run[when][key]) for run in runs])


def run_components(cfg: ComponentsConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddim", SD_BETAS, cfg.steps)
    prompts = occupations(cfg.prompts, cfg.minority_range, cfg.content_range)
    # repeat r: original model 3r, training batches (and LoRA init) 3r + 1, evaluation 3r + 2, the same for every
    # component: a paired comparison
    streams = ctx.seeds(3 * cfg.seeds)
    runs = {c: [] for c in cfg.components}
    with tqdm(total=len(cfg.components) * cfg.seeds, desc="dft-dal-toy-components runs") as bar:
        for c in cfg.components:
            for r in range(cfg.seeds):
                runs[c].append(dal_run(prompts, c, target=cfg.target, conditional=False, sampler=sampler,
                                       width=cfg.width, rank=cfg.rank, iterations=cfg.iterations,
                                       per_prompt=cfg.per_prompt, threshold=cfg.threshold, lr=cfg.lr,
                                       n_eval=cfg.n_eval, model_seed=streams[3 * r], train_seed=streams[3 * r + 1],
                                       eval_seed=streams[3 * r + 2]))
                bar.update()
    first = runs[cfg.components[0]]
    original_bias = _per_seed(first, "bias", "before")
    table = [{"component": "original", "label": "original model", "trainable_parameters": 0,
              "bias_per_seed": original_bias.tolist(), "bias_mean": mean_sd(original_bias)[0],
              "bias_sd": mean_sd(original_bias)[1], "content_kept_mean": 1.0, "content_kept_sd": 0.0,
              "content_shift_mean": 0.0, "content_shift_sd": 0.0}]
    for c in cfg.components:
        bias = _per_seed(runs[c], "bias")
        kept = _per_seed(runs[c], "content_kept_paired")
        shift = np.array([np.mean(np.abs(np.subtract(run["after"]["content0"], run["before"]["content0"])))
                          for run in runs[c]])
        table.append({"component": c, "label": COMPONENT_LABELS[c],
                      "trainable_parameters": runs[c][0]["trainable_parameters"],
                      "bias_per_seed": bias.tolist(), "bias_mean": mean_sd(bias)[0], "bias_sd": mean_sd(bias)[1],
                      "content_kept_per_seed": kept.tolist(), "content_kept_mean": mean_sd(kept)[0],
                      "content_kept_sd": mean_sd(kept)[1], "content_shift_mean": mean_sd(shift)[0],
                      "content_shift_sd": mean_sd(shift)[1],
                      "final_loss_mean": float(np.mean([np.mean(run["loss"][-10:]) for run in runs[c]]))})
    return {"prompts": prompts, "table": table, "runs": runs}


def plot(results: dict) -> dict:
    """Seed 000 Table 1's counterpart as a table figure and bar charts: bias (seed 000 [0124]) and the paired share
    of samples whose unrelated content is unchanged, mean +- sd over seeds, with each variant's parameter count."""
    cfg, table = results["config"], results["table"]
    seeds = cfg["seeds"]
    fig, (ax_tab, ax_bias, ax_kept) = plt.subplots(1, 3, figsize=(16, 4.4), width_ratios=[1.6, 1, 1],
                                                   layout="constrained")
    ax_tab.axis("off")
    cells = [[row["label"], f"{row['trainable_parameters']}", f"{row['bias_mean']:.3f} ± {row['bias_sd']:.3f}",
              f"{row['content_kept_mean']:.3f} ± {row['content_kept_sd']:.3f}",
              f"{row['content_shift_mean']:.3f} ± {row['content_shift_sd']:.3f}"] for row in table]
    tab = ax_tab.table(cells, colLabels=["finetuned component", "params", "bias ↓", "content kept ↑",
                                         "|Δ content| ↓"], loc="center", cellLoc="center",
                        colWidths=[0.36, 0.1, 0.18, 0.18, 0.18])
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.6)
    for (_, col), cell in tab.get_celld().items():
        if col == 0:
            cell.set_text_props(ha="left")
    ax_tab.set_title(f"paper 000 Table 1 on the toy (target 50/50, mean ± sd over {seeds} seeds)", fontsize=10)
    y = np.arange(len(table))[::-1]
    labels = [f"{row['label']} ({row['trainable_parameters']})" for row in table]
    colours = ["0.6"] + [f"C{i}" for i in range(len(table) - 1)]
    ax_bias.barh(y, [r["bias_mean"] for r in table], xerr=[r["bias_sd"] for r in table], capsize=3, color=colours)
    ax_bias.set_yticks(y, labels, fontsize=8)
    ax_bias.set(xlabel="bias, mean over prompts (unitless, 0 = balanced)", title="bias ↓ (paper 000 [0124])")
    ax_kept.barh(y, [r["content_kept_mean"] for r in table], xerr=[r["content_kept_sd"] for r in table], capsize=3,
                 color=colours)
    ax_kept.set_yticks(y, [""] * len(y))
    low = min(r["content_kept_mean"] - r["content_kept_sd"] for r in table)
    ax_kept.set(xlabel="same-noise samples with unchanged content (share)", xlim=(max(0.0, low - 0.05), 1.0),
                title="unrelated content kept ↑")
    return {"dft_dal_toy_components": fig}


def make_config(quick: bool) -> ComponentsConfig:
    return ComponentsConfig(iterations=30, per_prompt=12, n_eval=200, seeds=2) if quick else ComponentsConfig()


EXPERIMENTS = [Experiment("dft-dal-toy-components", make_config, run_components, plot)]
