"""``dft-eq9``: eq. 9 of seed 000 (-sum_t A_t B_t d eps_t/d theta) against autograd's dz_0/dtheta through the whole
DDPM / DDIM / DPM-Solver++ chain, float64, for the exact mixture predictor and a trained MLP."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

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


def plot(results: dict) -> dict:
    """The relative error of eq. 9 against autograd for every (model, dimension, sampler), from ``results``."""
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['model']}\nd={r['dim']}\n{r['sampler']}{r['steps']}" for r in rows]
    ax.bar(range(len(rows)), [max(r["rel_error"], 1e-18) for r in rows])
    ax.axhline(1e-10, color="r", ls="--", label="1e-10 target")
    ax.set(yscale="log", ylabel="max |eq. 9 - autograd| / max |autograd|", title="Eq. 9 of seed 000 vs autograd (float64)")
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.legend()
    return {"dft_eq9": fig}


def make_config(quick: bool) -> Eq9Config:
    return Eq9Config(dims=(1,), samplers=(("ddim", 20), ("ddpm", 1000), ("dpmsolver++", 20)),
                     mlp_train_steps=100) if quick else Eq9Config()


EXPERIMENTS = [Experiment("dft-eq9", make_config, run_eq9, plot)]
