"""``dft-eq9``: eq. 9 of seed 000 (-sum_t A_t B_t d eps_t/d theta) against autograd's dz_0/dtheta through the whole
DDPM / DDIM / DPM-Solver++ chain, float64, for the exact mixture predictor and a trained MLP."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from experiments.dft_models import SD_BETAS, mixture_model, trained_mlp  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from toy.sampler_chain import eq9_relative_error, make_sampler  # noqa: E402


@dataclass(frozen=True)
class Eq9Config:
    dims: tuple[int, ...] = (1, 2, 4)
    samplers: tuple[tuple[str, int], ...] = (("ddpm", 1000), ("ddim", 20), ("ddim", 50), ("dpmsolver++", 20))
    mlp_train_steps: int = 300


def run_eq9(cfg: Eq9Config, ctx: RunContext) -> dict:
    rows = []
    streams = ctx.seeds(2 * len(cfg.dims))  # per dimension: the models (2i), the chains' noises (2i + 1)
    for i, d in enumerate(cfg.dims):
        gen = torch.Generator().manual_seed(streams[2 * i + 1])
        model_seed = streams[2 * i]
        for model_name, model in (("mixture", mixture_model(d, model_seed)), ("mlp", trained_mlp(d, model_seed, cfg.mlp_train_steps))):
            for kind, n in cfg.samplers:
                noises = [torch.randn(1, d, generator=gen, dtype=torch.float64) for _ in range(n)] if kind == "ddpm" else None
                sampler = make_sampler(kind, SD_BETAS, n, noises=noises)
                z_T = torch.randn(1, d, generator=gen, dtype=torch.float64)
                rows.append({"dim": d, "model": model_name, "sampler": kind, "steps": n,
                             "rel_error": eq9_relative_error(model, sampler, z_T)})
    return {"max_rel_error": max(r["rel_error"] for r in rows), "rows": rows, "figure": "dft_eq9.png"}


SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmsolver++": "DPM-Solver++(2M)"}
MODEL_COLOURS = {"mixture": "C0", "mlp": "C1"}
CRITERION = 1e-10  # the exactness criterion of the verdict: eq. 9 agrees with autograd to 10 digits


def plot(results: dict) -> dict:
    """The relative error of eq. 9 against autograd: one panel per sampler, one horizontal bar per (model, d), on a
    log axis with the 1e-10 criterion and float64's machine epsilon; all from ``results``."""
    rows = results["rows"]
    chains = list(dict.fromkeys((r["sampler"], r["steps"]) for r in rows))
    bars = list(dict.fromkeys((r["model"], r["dim"]) for r in rows))
    fig, axes = plt.subplots(1, len(chains), figsize=(3.0 * len(chains) + 1.2, 0.32 * len(bars) + 2.0), sharey=True,
                             squeeze=False, layout="constrained")
    floor = 1e-18  # an exact zero is drawn at the floor and written out
    for ax, (kind, n) in zip(axes[0], chains):
        by_bar = {(r["model"], r["dim"]): r["rel_error"] for r in rows if (r["sampler"], r["steps"]) == (kind, n)}
        for y, bar in enumerate(bars):
            err = by_bar.get(bar)
            if err is None:
                continue
            ax.barh(y, max(err, floor), left=floor, color=MODEL_COLOURS.get(bar[0], "0.5"), height=0.7)
            if err == 0.0:
                ax.text(floor * 3, y, "0 (exact)", va="center", fontsize=7)
        ax.axvline(CRITERION, color="C3", ls="--", lw=1.2)
        ax.axvline(np.finfo(np.float64).eps, color="0.4", ls=":", lw=1.2)
        form = "recursive form" if kind == "dpmsolver++" else "product form, eq. 9"
        ax.set(xscale="log", xlim=(floor, 1e-8), xlabel="relative error (unitless)",
               title=f"{SAMPLER_NAMES.get(kind, kind)}, {n} steps\n({form})")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=6))
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(bars)), [f"{m}, d = {d}" for m, d in bars])
    axes[0, 0].invert_yaxis()
    axes[0, 0].set_ylabel("noise predictor, dimension")
    handles = [Patch(color=c, label=f"{m} noise predictor") for m, c in MODEL_COLOURS.items()]
    handles += [Line2D([], [], color="C3", ls="--", label=f"criterion {CRITERION:.0e}"),
                Line2D([], [], color="0.4", ls=":", label="float64 machine epsilon (2.2e-16)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(f"Paper 000 eq. 9 against autograd through the whole chain, float64: relative error = "
                 f"max |eq. 9 - autograd| / max |autograd| (max over all: {results['max_rel_error']:.1e})", fontsize=10)
    return {"dft_eq9": fig}


def make_config(quick: bool) -> Eq9Config:
    return Eq9Config(dims=(1,), samplers=(("ddim", 20), ("ddpm", 1000), ("dpmsolver++", 20)),
                     mlp_train_steps=100) if quick else Eq9Config()


EXPERIMENTS = [Experiment("dft-eq9", make_config, run_eq9, plot)]
