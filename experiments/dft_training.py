"""``dft-training`` (paper 000, Fig. 6a, [0115]): finetuning toward a fixed target through the sampler with the exact,
adjusted and unstandardised gradients (:data:`theory.sampler_gradient.GRADIENT_MODES`), under Adam and plain SGD,
for the paper's 1000 iterations, repeated over seeds.

Why two optimisers: the standardised and unstandardised adjusted gradients differ by one global factor, the geometric
mean gm(A) of the sampler's A_i (C_i = 1/A_i divided by gm(C); seed 000, Algorithm A.1). Adam divides every
coordinate by its own running scale, so under Adam the two are the same run up to rounding; only under SGD does the
standardisation of [0115] change anything, and then it acts as a learning-rate factor gm(A).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from experiments.dft_models import SD_BETAS, mixture_model  # noqa: E402
from experiments.seed_statistics import mean_sd  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.sampler_gradient import GRADIENT_MODES  # noqa: E402
from toy.sampler_chain import finetune, make_sampler  # noqa: E402

#: How each gradient mode is drawn: the three curves overlap (Adam makes the two adjusted ones identical), so each has
#: its own line style and marker besides its colour.
MODE_STYLE = {"exact": dict(color="C3", ls="-", marker="o"),
              "adjusted": dict(color="C0", ls="--", marker="s"),
              "adjusted_unstandardised": dict(color="C2", ls=":", marker="^")}


@dataclass(frozen=True)
class TrainingConfig:
    dim: int = 2
    sampler: str = "ddim"
    steps: int = 10  # DDIM steps per sample; 10 rather than ~20 keeps 2 x 3 x 5 runs of 1000 iterations at minutes
    iterations: int = 1000  # paper 000 [0115]: "after 1000 iterations"
    batch: int = 32
    # One learning rate per optimiser, the same for all three gradient modes (a paired comparison). Adam: 0.02.
    # SGD: 0.3, the largest of {0.1, 0.3, 1.0} at which the standardised adjusted gradient ended below its initial
    # loss in a 300-iteration pilot on two other mixtures (at 1.0 it jumped to a loss ~150 and stayed there).
    optimisers: tuple[str, ...] = ("adam", "sgd")
    lrs: tuple[float, ...] = (0.02, 0.3)
    seeds: int = 5  # repeats, each with its own mixture and batches; the headline is mean and sd over them
    target: tuple[float, ...] = (1.5, -1.0)


def divergence(curve: np.ndarray, tail: int) -> tuple[bool, int | None]:
    """Whether a loss curve diverged, and the first iteration where it left the initial loss behind.

    Diverged means: the loss became non-finite, or its mean over the last ``tail`` iterations is above the initial
    loss (training made the model worse; SGD can jump to a stuck state of finite but large loss). The iteration
    returned is the first at which the loss was non-finite or above the initial loss (None if it never was).
    """
    bad = ~np.isfinite(curve) | (curve > curve[0])
    bad[0] = False
    diverged = bool(~np.isfinite(curve).all() or np.mean(curve[-tail:]) > curve[0])
    return diverged, (int(np.argmax(bad)) if bad.any() else None)


def run_training(cfg: TrainingConfig, ctx: RunContext) -> dict:
    if len(cfg.optimisers) != len(cfg.lrs):
        raise ValueError(f"optimisers and lrs must pair up one learning rate per optimiser; got {cfg.optimisers} "
                         f"and {cfg.lrs}")
    sampler = make_sampler(cfg.sampler, SD_BETAS, cfg.steps)
    target = torch.tensor(cfg.target, dtype=torch.float64)
    streams = ctx.seeds(2 * cfg.seeds)  # repeat r: its mixture's means from stream 2r, its batches from 2r + 1
    tail = max(1, cfg.iterations // 10)
    a = np.abs(sampler.a_coefficients)
    out: dict = {}
    with tqdm(total=len(cfg.optimisers) * len(GRADIENT_MODES) * cfg.seeds, desc="dft-training runs",
              disable=ctx.quick) as bar:
        for opt, lr in zip(cfg.optimisers, cfg.lrs):
            out[opt] = {"lr": lr}
            for mode in GRADIENT_MODES:  # every mode sees the same mixtures and batches: a paired comparison
                curves = []
                for r in range(cfg.seeds):
                    curves.append(finetune(mixture_model(cfg.dim, streams[2 * r]), sampler,
                                           lambda z0: (z0 - target).square().sum(1).mean(), mode, dim=cfg.dim,
                                           iterations=cfg.iterations, batch=cfg.batch, lr=lr, seed=streams[2 * r + 1],
                                           optimiser=opt, stop_when_diverged=True))
                    bar.update(1)
                c = np.array(curves)
                flags = [divergence(row, tail) for row in c]
                per_seed = [float(np.mean(row[-tail:])) for row in c]  # NaN for a run that stopped at a NaN loss
                finite = np.isfinite(c)
                n_finite = finite.sum(0)
                # mean and sd (ddof 1) at each iteration over the seeds whose loss is still finite there
                masked = np.where(finite, c, 0.0)
                mean = masked.sum(0) / np.maximum(n_finite, 1)
                var = np.where(finite, (c - mean) ** 2, 0.0).sum(0) / np.maximum(n_finite - 1, 1)
                kept = [v for v in per_seed if np.isfinite(v)]
                final_mean, final_sd = mean_sd(kept) if kept else (float("nan"), float("nan"))
                out[opt][mode] = {
                    "final_loss_per_seed": per_seed,
                    "final_loss": final_mean, "final_loss_sd": final_sd,
                    "diverged": [f[0] for f in flags], "diverged_at": [f[1] for f in flags],
                    "n_diverged": int(sum(f[0] for f in flags)),
                    "curve_mean": np.where(n_finite > 0, mean, np.nan).tolist(),
                    "curve_sd": np.where(n_finite > 1, np.sqrt(var), np.nan).tolist(),
                    "n_finite": n_finite.tolist(),
                    "initial_loss_per_seed": c[:, 0].tolist(),
                    "curves_per_seed": c.tolist(),  # the plot's median and min-max band over seeds
                }
    return {"optimisers": out,
            "tail_iterations": tail,
            # the standardised adjusted gradient is gm(A) times the unstandardised one (Algorithm A.1)
            "a_coefficients": a.tolist(), "a_geometric_mean": float(np.exp(np.log(a).mean())),
            "initial_loss": float(np.mean([out[o]["exact"]["initial_loss_per_seed"] for o in cfg.optimisers])),
            "figure": "dft_training.png"}


def log_binned(curves: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(iteration, binned curves): each row (one seed's loss per iteration) averaged over log-spaced bins of
    iterations, every iteration early and wider bins late, so that batch-to-batch noise does not hide the trend on a
    logarithmic iteration axis. A bin where a row is non-finite throughout (a stopped run) is NaN."""
    curves = np.atleast_2d(curves)
    edges = np.unique(np.geomspace(1, curves.shape[1] + 1, bins + 1).astype(int))
    centres = np.array([np.sqrt(lo * (hi - 1)) for lo, hi in zip(edges[:-1], edges[1:])])
    binned = np.full((curves.shape[0], centres.size), np.nan)
    for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        chunk = curves[:, lo - 1:hi - 1]
        finite = np.isfinite(chunk)
        counts = finite.sum(1)
        binned[counts > 0, j] = np.where(finite, chunk, 0.0).sum(1)[counts > 0] / counts[counts > 0]
    return centres, binned


def plot(results: dict) -> dict:
    """Loss curves of the three gradient modes, one panel per optimiser: the median over seeds (line) and the range
    from the lowest to the highest seed (band), diverged runs marked. A min-max band stays positive on the logarithmic
    loss axis, where a mean +- sd band with sd > mean would run off the bottom."""
    cfg = results["config"]
    opts = results["optimisers"]
    fig, axes = plt.subplots(1, len(opts), figsize=(6.2 * len(opts), 4.6), layout="constrained", squeeze=False,
                             sharey=True)
    lowest, highest = np.inf, 0.0
    for ax, (opt, entry) in zip(axes[0], opts.items()):
        for mode in GRADIENT_MODES:
            m, style = entry[mode], MODE_STYLE[mode]
            raw = np.asarray(m["curve_mean"], float)
            it, binned = log_binned(np.asarray(m["curves_per_seed"], float))
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bin (every run stopped) stays NaN
                median, low, high = (np.nanmedian(binned, 0), np.nanmin(binned, 0), np.nanmax(binned, 0))
            ax.plot(it, median, ls=style["ls"], color=style["color"], marker=style["marker"],
                    markevery=list(np.unique(np.geomspace(1, median.size, 9).astype(int)) - 1), ms=5, lw=1.6,
                    label=f"{mode}: final {m['final_loss']:.3g} ± {m['final_loss_sd']:.2g} (mean ± sd), "
                          f"diverged {m['n_diverged']}/{len(m['diverged'])}")
            ax.fill_between(it, low, high, color=style["color"], alpha=0.15, lw=0)
            lowest = min(lowest, float(np.nanmin(low)))
            highest = max(highest, float(np.nanmax(high)))
            for at, diverged in zip(m["diverged_at"], m["diverged"]):
                if not diverged or at is None:
                    continue
                ax.plot(at + 1, np.nanmax(raw) if not np.isfinite(raw[at]) else raw[at], "x",
                        color=style["color"], ms=11, mew=2.5)
            if m["n_diverged"]:
                first = min(a for a, d in zip(m["diverged_at"], m["diverged"]) if d and a is not None)
                y = raw[first] if np.isfinite(raw[first]) else np.nanmax(raw)
                ax.annotate(f"{mode}: {m['n_diverged']} diverged", (first + 1, y), xytext=(8, 8),
                            textcoords="offset points", color=style["color"], fontsize=8)
        ax.set(xscale="log", yscale="log", xlabel="iteration (log scale)",
               ylabel="training loss E||z_0 - target||² (unitless)",
               title=f"{opt.upper()}, lr = {entry['lr']:g}")
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    axes[0, 0].set_ylim(lowest / 3, highest * 3)
    fig.suptitle(f"paper 000, Fig. 6a: finetuning a 3-component mixture (d = {cfg['dim']}) through "
                 f"{cfg['sampler'].upper()} ({cfg['steps']} steps), {cfg['iterations']} iterations; "
                 f"median (line) and min-max (band) over {cfg['seeds']} seeds,\naveraged in log-spaced bins of "
                 f"iterations; x = where a diverged run first rose above its initial loss", fontsize=10)
    return {"dft_training": fig}


def make_config(quick: bool) -> TrainingConfig:
    return TrainingConfig(iterations=40, seeds=2) if quick else TrainingConfig()


EXPERIMENTS = [Experiment("dft-training", make_config, run_training, plot)]
