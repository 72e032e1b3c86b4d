"""Which A_i the adjusted gradient inverts: Algorithm A.1's DDPM A_{t_i} vs the sampler's own coefficient (seed 000).

Seed 000, [0110]-[0117] and Algorithm A.1: the adjusted gradient detaches z before the network (B -> I) and scales the
gradient reaching eps_i by C_i = 1 / A_i, standardised by the geometric mean of all C_i. Algorithm A.1 (and the
official code, under DDIM and DPM-Solver++ too) takes the DDPM A_t = beta_t / (sqrt(1 - abar_t) sqrt(abar_t)) at the
visited timestep t_i (``coefficients="algorithm_a1"``); fairdiff's ``"sampler"`` takes the sampler's own unrolled
coefficient of eps_i in z_0, which makes the adjusted gradient exactly -sum_i d eps_i / d theta (A -> 1 exactly).
Both come from :meth:`theory.sampler_gradient.AdjustedGradient.from_scheduler`.

``dft-coefficients``:

(a) the two standardised vectors over the steps of DDIM and DPM-Solver++(2M) at 10/20/50 steps on the SD schedule, and
    their ratio per step (figure ``dft_coefficients``, table ``coefficient_table``);
(b) finetuning the dft-training toy (a 2-D three-component mixture denoiser pulled toward a fixed target through the
    sampler, loss E ||z_0 - target||^2) with each choice, under Adam and under SGD, paired over seeds (same mixture,
    same batches for both choices): final loss mean +- sd and curves (figure ``dft_coefficients_training``);
(c) a verdict per (sampler, optimiser) computed from (b).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from experiments.seed_statistics import mean_sd  # noqa: E402
from theory.sampler_gradient import COEFFICIENTS, AdjustedGradient  # noqa: E402
from theory.schedules import scaled_linear_betas  # noqa: E402
from toy.denoisers import MixtureDenoiser  # noqa: E402
from toy.sampler_chain import diffusers_scheduler, finetune, make_sampler  # noqa: E402

SD_BETAS = scaled_linear_betas(1000).numpy()
SAMPLER_LABELS = {"ddim": "DDIM", "dpmsolver++": "DPM-Solver++(2M)"}
COEFFICIENT_LABELS = {"algorithm_a1": "Algorithm A.1: 1/A_{t_i} (DDPM)", "sampler": "sampler: 1/|k_i| (unrolled)"}
COEFFICIENT_STYLES = {"algorithm_a1": dict(color="C3", ls="-"), "sampler": dict(color="C0", ls="--")}


def sd_scheduler(kind: str):
    """The diffusers scheduler that :func:`toy.sampler_chain.make_sampler` steps through, on the SD schedule, so that
    the C_i of :meth:`AdjustedGradient.from_scheduler` belong to the chain that is trained."""
    if kind not in SAMPLER_LABELS:
        raise ValueError(f"sampler must be 'ddim' or 'dpmsolver++'; got {kind!r}")
    return diffusers_scheduler(kind, SD_BETAS)


def visited_timesteps(kind: str, n_steps: int) -> list[int]:
    """The timesteps t_i (diffusers' 0-based index) the sampler's network sees, in sampling order."""
    scheduler = sd_scheduler(kind)
    scheduler.set_timesteps(n_steps)
    return [int(t) for t in scheduler.timesteps]


def coefficient_vectors(kind: str, n_steps: int) -> dict[str, np.ndarray]:
    """The standardised C_i (geometric mean 1) of both choices, sampling order: ``{"algorithm_a1": .., "sampler": ..}``."""
    scheduler = sd_scheduler(kind)
    return {c: AdjustedGradient.from_scheduler(scheduler, n_steps, "adjusted", coefficients=c).scales
            for c in COEFFICIENTS}


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class CoefficientsConfig:
    samplers: tuple[str, ...] = ("ddim", "dpmsolver++")
    step_counts: tuple[int, ...] = (10, 20, 50)
    train_steps: int = 20  # sampler steps of the finetuning chain
    dim: int = 2
    iterations: int = 150
    batch: int = 32
    # (name, learning rate). "sgd-matched" is SGD with each choice's lr divided by its total step weight
    # sum_i |k_i| C_i (relative to the sampler choice's), so that the two differ only in how they split the weight
    # over the steps, not in overall size (Adam divides the overall size out by itself).
    optimisers: tuple[tuple[str, float], ...] = (("adam", 0.02), ("sgd", 0.01), ("sgd-matched", 0.01))
    seeds: int = 5  # repeats, each with its own mixture and batches; both choices see the same ones (paired)
    target: tuple[float, ...] = (1.5, -1.0)


def make_config(quick: bool) -> CoefficientsConfig:
    return CoefficientsConfig(iterations=30, seeds=2) if quick else CoefficientsConfig()


# ---------------------------------------------------------------------------------------------------- (a) vectors
def _coefficient_table(cfg: CoefficientsConfig) -> tuple[list[dict], dict]:
    rows, vectors = [], {}
    for kind in cfg.samplers:
        for n in cfg.step_counts:
            c = coefficient_vectors(kind, n)
            ratio = c["algorithm_a1"] / c["sampler"]
            vectors[f"{kind}/{n}"] = {"timesteps": visited_timesteps(kind, n),
                                      **{k: v.tolist() for k, v in c.items()}, "ratio": ratio.tolist()}
            rows.append({"sampler": kind, "steps": n, "ratio_first_step": float(ratio[0]),
                         "ratio_last_step": float(ratio[-1]), "ratio_min": float(ratio.min()),
                         "ratio_max": float(ratio.max()), "ratio_median": float(np.median(ratio)),
                         # the sampler choice weights every step's d eps_i/d theta equally (|k_i| C_i constant), so
                         # the mean ratio is Algorithm A.1's total step weight over the sampler's: its effective
                         # learning-rate factor under SGD
                         "ratio_mean": float(ratio.mean()),
                         "dynamic_range_algorithm_a1": float(c["algorithm_a1"].max() / c["algorithm_a1"].min()),
                         "dynamic_range_sampler": float(c["sampler"].max() / c["sampler"].min())})
    return rows, vectors


def _coefficient_figure(cfg: dict, vectors: dict):
    fig, axes = plt.subplots(2, len(cfg["samplers"]), figsize=(6.2 * len(cfg["samplers"]), 7.5), squeeze=False,
                             sharex=True, layout="constrained")
    markers = dict(zip(cfg["step_counts"], ("o", "s", "^", "v", "D")))
    for col, kind in enumerate(cfg["samplers"]):
        top, bottom = axes[0, col], axes[1, col]
        for j, n in enumerate(cfg["step_counts"]):
            v = vectors[f"{kind}/{n}"]
            t = np.asarray(v["timesteps"])
            for coefficients in COEFFICIENTS:
                style = COEFFICIENT_STYLES[coefficients]
                top.plot(t, v[coefficients], ls=style["ls"], color=f"C{j}", marker=markers[n], ms=3.5,
                         mfc="white" if coefficients == "sampler" else f"C{j}")
            bottom.plot(t, v["ratio"], color=f"C{j}", marker=markers[n], ms=3.5)
        top.set(yscale="log", ylabel="C_i / geometric mean of C (unitless)",
                title=f"{SAMPLER_LABELS[kind]}: C_i of both choices")
        bottom.axhline(1.0, color="k", lw=0.8)
        bottom.set(yscale="log", xlabel="visited timestep t_i (DDPM index; sampling runs left to right)",
                   ylabel="C_i(A.1) / C_i(sampler) (unitless)",
                   title=f"{SAMPLER_LABELS[kind]}: ratio of the two choices")
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="major")
    axes[0, 0].invert_xaxis()  # sampling runs from t = 999 down to 0; once, the x axis is shared by every panel
    handles = [Line2D([], [], color=f"C{j}", marker=markers[n], ls="-", label=f"{n} sampler steps")
               for j, n in enumerate(cfg["step_counts"])]
    handles += [Line2D([], [], color="0.3", marker="o", label=COEFFICIENT_LABELS["algorithm_a1"], ls="-"),
                Line2D([], [], color="0.3", marker="o", mfc="white", label=COEFFICIENT_LABELS["sampler"], ls="--")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("Adjusted-gradient coefficients C_i on the SD schedule: paper 000's Algorithm A.1 vs the sampler's own")
    return fig


# ---------------------------------------------------------------------------------------------------- (b) training
def _mixture(dim: int, seed: int) -> MixtureDenoiser:
    """The dft-training toy: three components, means ~ N(0, 4 I), std 0.3, weights 0.5/0.3/0.2."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(3, dim, generator=gen, dtype=torch.float64) * 2.0
    return MixtureDenoiser(torch.tensor([0.5, 0.3, 0.2]), means, torch.full((3,), 0.3))


def _finetune(model: torch.nn.Module, sampler, gradient: AdjustedGradient, target: torch.Tensor, *, optimiser: str,
              lr: float, iterations: int, batch: int, seed: int) -> list[float]:
    """:func:`toy.sampler_chain.finetune` with the given coefficients and optimiser, stopping at divergence."""
    return finetune(model, sampler, lambda z0: (z0 - target).square().sum(1).mean(), gradient.mode,
                    dim=target.shape[0], iterations=iterations, batch=batch, lr=lr, seed=seed, gradient=gradient,
                    optimiser=optimiser, stop_when_diverged=True)


def _final(curve: np.ndarray) -> float:
    """Mean loss over the last tenth of the iterations (NaN for a diverged run)."""
    return float(np.mean(curve[-max(1, curve.shape[0] // 10):]))


def _iterations_to(curve: np.ndarray, threshold: float) -> float:
    """First iteration whose 5-iteration running mean is below ``threshold`` (NaN if never)."""
    if not np.isfinite(curve).all():
        return float("nan")
    smooth = np.convolve(curve, np.ones(5) / 5, mode="valid") if curve.shape[0] >= 5 else curve
    below = np.flatnonzero(smooth < threshold)
    return float(below[0]) if below.size else float("nan")



def step_weights(sampler, gradient: AdjustedGradient) -> np.ndarray:
    """|k_i| C_i: the weight with which d eps_i / d theta enters the adjusted gradient through this chain.

    eps_i reaches z_0 with coefficient k_i = -A_i (the sampler's own), and its gradient is scaled by C_i; with
    ``coefficients="sampler"`` every step gets the same weight 1 / (geometric mean of 1/|A|) (A -> 1 exactly).
    """
    return np.abs(sampler.a_coefficients) * gradient.scales


def _train_all(cfg: CoefficientsConfig, ctx: RunContext) -> tuple[dict, dict]:
    target = torch.tensor(cfg.target, dtype=torch.float64)
    streams = ctx.seeds(2 * cfg.seeds)  # repeat r: its mixture's means from stream 2r, its batches from 2r + 1
    jobs = [(kind, opt, lr, c) for kind in cfg.samplers for opt, lr in cfg.optimisers for c in COEFFICIENTS]
    curves: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
    lrs: dict[str, dict[str, dict[str, float]]] = {}
    done: dict[tuple, list[list[float]]] = {}  # (sampler, optimiser, lr, coefficients) already trained: reuse it
    with tqdm(total=len(jobs) * cfg.seeds, desc="dft-coefficients training") as bar:
        for kind, opt, lr, coefficients in jobs:
            sampler = make_sampler(kind, SD_BETAS, cfg.train_steps)
            gradient = AdjustedGradient.from_scheduler(sd_scheduler(kind), cfg.train_steps, "adjusted",
                                                       coefficients=coefficients)
            optimiser, lr_used = opt, lr
            if opt == "sgd-matched":
                reference = AdjustedGradient.from_scheduler(sd_scheduler(kind), cfg.train_steps, "adjusted",
                                                            coefficients="sampler")
                optimiser = "sgd"
                lr_used = lr * step_weights(sampler, reference).sum() / step_weights(sampler, gradient).sum()
            lrs.setdefault(kind, {}).setdefault(opt, {})[coefficients] = float(lr_used)
            key = (kind, optimiser, lr_used, coefficients)
            if key in done:  # "sgd-matched" leaves the sampler choice's lr as it is: the "sgd" runs again
                bar.update(cfg.seeds)
            else:
                done[key] = []
                for r in range(cfg.seeds):
                    done[key].append(_finetune(_mixture(cfg.dim, streams[2 * r]), sampler, gradient, target,
                                               optimiser=optimiser, lr=lr_used, iterations=cfg.iterations,
                                               batch=cfg.batch, seed=streams[2 * r + 1]))
                    bar.update()
            runs = done[key]
            curves.setdefault(kind, {}).setdefault(opt, {})[coefficients] = runs
    return curves, lrs


def _summaries(cfg: CoefficientsConfig, curves: dict, lrs: dict) -> tuple[list[dict], list[str]]:
    """Per (sampler, optimiser): final losses of both choices, their paired difference, speed, and a verdict line."""
    rows, verdicts = [], []
    for kind in cfg.samplers:
        for opt, lr in cfg.optimisers:
            arr = {c: np.asarray(curves[kind][opt][c], dtype=np.float64) for c in COEFFICIENTS}
            final = {c: np.array([_final(run) for run in arr[c]]) for c in COEFFICIENTS}
            diverged = {c: int((~np.isfinite(arr[c]).all(axis=1)).sum()) for c in COEFFICIENTS}
            initial = float(np.mean([run[0] for c in COEFFICIENTS for run in arr[c] if np.isfinite(run[0])]))
            best = float(np.nanmin([np.nanmean(final[c]) for c in COEFFICIENTS]))
            threshold = float(np.sqrt(initial * best))  # halfway from the initial to the better final loss, in log
            speed = {c: np.array([_iterations_to(run, threshold) for run in arr[c]]) for c in COEFFICIENTS}
            diff = final["algorithm_a1"] - final["sampler"]  # paired over seeds: same mixture, same batches
            diff_mean, diff_sd = mean_sd(diff)
            spread = max(mean_sd(final[c])[1] for c in COEFFICIENTS)
            row = {"sampler": kind, "optimiser": opt, "lr": lr, "lr_used": lrs[kind][opt], "initial_loss": initial, "speed_threshold": threshold,
                   "final_loss_per_seed": {c: final[c].tolist() for c in COEFFICIENTS},
                   "final_loss_mean": {c: mean_sd(final[c])[0] for c in COEFFICIENTS},
                   "final_loss_sd": {c: mean_sd(final[c])[1] for c in COEFFICIENTS},
                   "iterations_to_threshold_mean": {c: float(np.nanmean(speed[c])) if np.isfinite(speed[c]).any()
                                                    else None for c in COEFFICIENTS},
                   "iterations_to_threshold_per_seed": {c: [None if not np.isfinite(s) else s for s in speed[c]]
                                                        for c in COEFFICIENTS},
                   "diverged": diverged, "paired_difference_mean": diff_mean, "paired_difference_sd": diff_sd,
                   "seed_spread": spread}
            row["verdict"] = _verdict(row, cfg.seeds)
            rows.append(row)
            verdicts.append(row["verdict"])
    return rows, verdicts


def _verdict(row: dict, seeds: int) -> str:
    """One line from the numbers: which choice ends lower and reaches the threshold sooner, whether the final-loss
    difference is within the seed spread (|mean difference| <= the larger per-choice sd over seeds), and whether it is
    consistent across seeds when paired (|mean paired difference| > 2 standard errors of the paired differences)."""
    lr = row["lr_used"]
    lr_text = (f"lr {lr['algorithm_a1']:.3g} / {lr['sampler']:.3g} for algorithm_a1 / sampler"
               if lr["algorithm_a1"] != lr["sampler"] else f"lr {row['lr']:g}")
    head = f"{SAMPLER_LABELS[row['sampler']]} + {row['optimiser'].upper()} ({lr_text}, {seeds} seeds)"
    if any(row["diverged"].values()):
        return f"{head}: diverged runs {row['diverged']}; no comparison of final losses"
    m = row["final_loss_mean"]
    better, worse = ("algorithm_a1", "sampler") if m["algorithm_a1"] < m["sampler"] else ("sampler", "algorithm_a1")
    rel = (m[worse] - m[better]) / m[worse]
    stderr = row["paired_difference_sd"] / np.sqrt(seeds)
    within = abs(row["paired_difference_mean"]) <= row["seed_spread"]
    consistent = abs(row["paired_difference_mean"]) > 2 * stderr
    speed = row["iterations_to_threshold_mean"]
    if speed["algorithm_a1"] is None or speed["sampler"] is None:
        pace = "not every choice reached the speed threshold"
    else:
        faster = ("neither" if speed["algorithm_a1"] == speed["sampler"]
                  else min(COEFFICIENTS, key=lambda c: speed[c]))
        pace = (f"{faster} reaches the halfway loss {row['speed_threshold']:.3g} first "
                f"({speed['algorithm_a1']:.1f} vs {speed['sampler']:.1f} iterations, algorithm_a1 vs sampler)")
    return (f"{head}: final loss algorithm_a1 {m['algorithm_a1']:.4g} +- {row['final_loss_sd']['algorithm_a1']:.2g}, "
            f"sampler {m['sampler']:.4g} +- {row['final_loss_sd']['sampler']:.2g}; {better} lower by {rel:.1%} "
            f"(paired difference {row['paired_difference_mean']:+.3g} +- {row['paired_difference_sd']:.2g}), "
            f"{'within' if within else 'outside'} the seed spread (sd {row['seed_spread']:.2g}), "
            f"{'consistent' if consistent else 'not consistent'} across paired seeds (2 SE = {2 * stderr:.2g}); {pace}")


def _curve_array(curves: list[list]) -> np.ndarray:
    """Per-seed curves as a float array, a diverged run's stored None back as NaN."""
    return np.array([[np.nan if v is None else v for v in curve] for curve in curves], dtype=np.float64)


def _training_figure(cfg: dict, curves: dict, rows: list[dict]):
    fig, axes = plt.subplots(len(cfg["samplers"]), len(cfg["optimisers"]), figsize=(5.0 * len(cfg["optimisers"]),
                             3.6 * len(cfg["samplers"])), squeeze=False, sharex=True, layout="constrained")
    for i, kind in enumerate(cfg["samplers"]):
        for j, (opt, lr) in enumerate(cfg["optimisers"]):
            ax = axes[i, j]
            for c in COEFFICIENTS[::-1]:  # the dashed "sampler" curve last, on top: the two often overlap
                arr = _curve_array(curves[kind][opt][c])
                x = np.arange(arr.shape[1])
                style = COEFFICIENT_STYLES[c]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column once every run diverged
                    ax.plot(x, np.nanmean(arr, 0), lw=1.5, **style)
                    ax.fill_between(x, np.nanmin(arr, 0), np.nanmax(arr, 0), color=style["color"], alpha=0.15, lw=0)
                for run in arr:  # a diverged run: an x at its last finite loss, never silently dropped
                    bad = np.flatnonzero(~np.isfinite(run))
                    if bad.size:
                        last = max(int(bad[0]) - 1, 0)
                        y = run[last] if np.isfinite(run[last]) else 1.0
                        ax.plot(last, y, "x", color=style["color"], ms=9, mew=2)
                        ax.annotate("diverged", (last, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                    color=style["color"])
            lr_text = f"lr {lr:g} / step weight" if opt == "sgd-matched" else f"lr {lr:g}"
            ax.set_title(f"{SAMPLER_LABELS[kind]}, {cfg['train_steps']} steps: {opt.upper()}, {lr_text}", fontsize=9)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if i == len(cfg["samplers"]) - 1:
                ax.set_xlabel("iteration (optimiser steps)")
            if j == 0:
                ax.set_ylabel("E ||z_0 - target||^2 (data units^2)")
    handles = [Line2D([], [], lw=1.5, label=f"{COEFFICIENT_LABELS[c]}: mean over seeds", **COEFFICIENT_STYLES[c])
               for c in COEFFICIENTS[::-1]]
    handles += [Patch(color="0.5", alpha=0.3, label=f"band: min-max range over {cfg['seeds']} seeds"),
                Line2D([], [], marker="x", ls="", color="0.3", mew=2, label="diverged run (at its last finite loss)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"Finetuning the 2-D mixture toy with each choice of C_i, paper 000 Algorithm A.1 "
                 f"({cfg['seeds']} paired seeds: same mixtures and batches for both choices)")
    return fig


def _final_figure(cfg: dict, rows: list[dict]):
    """Final loss per (sampler, optimiser): mean +- sd over seeds for each choice, every seed's pair joined."""
    fig, axes = plt.subplots(1, len(cfg["samplers"]), figsize=(4.8 * len(cfg["samplers"]), 4.2), squeeze=False,
                             sharey=True, layout="constrained")
    optimisers = [opt for opt, _ in cfg["optimisers"]]
    offsets = {"algorithm_a1": -0.15, "sampler": 0.15}
    markers = {"algorithm_a1": "o", "sampler": "s"}
    for ax, kind in zip(axes[0], cfg["samplers"]):
        for x, opt in enumerate(optimisers):
            row = next(r for r in rows if (r["sampler"], r["optimiser"]) == (kind, opt))
            per_seed = {c: np.array([np.nan if v is None else v for v in row["final_loss_per_seed"][c]])
                        for c in COEFFICIENTS}
            for a1, smp in zip(per_seed["algorithm_a1"], per_seed["sampler"]):  # one paired seed
                ax.plot([x + offsets["algorithm_a1"], x + offsets["sampler"]], [a1, smp], color="0.75", lw=0.8)
            for c in COEFFICIENTS:
                colour = COEFFICIENT_STYLES[c]["color"]
                mean, sd = row["final_loss_mean"][c], row["final_loss_sd"][c]
                if mean is None:  # a diverged seed makes the mean NaN (stored as None): marked, not dropped
                    ax.plot(x + offsets[c], 1.0, "x", color=colour, ms=10, mew=2)
                    ax.annotate(f"{row['diverged'][c]} diverged", (x + offsets[c], 1.0), fontsize=7, xytext=(4, 4),
                                textcoords="offset points", color=colour)
                    continue
                ax.errorbar(x + offsets[c], mean, yerr=sd or 0.0, color=colour, marker=markers[c], capsize=4, lw=1.5,
                            mfc="white" if c == "sampler" else colour)
        ax.set_xticks(range(len(optimisers)), [o.upper() for o in optimisers])
        ax.set(xlabel="optimiser", title=f"{SAMPLER_LABELS[kind]}, {cfg['train_steps']} steps")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("final loss E ||z_0 - target||^2 (data units^2)")
    handles = [Line2D([], [], color=COEFFICIENT_STYLES[c]["color"], marker=markers[c], ls="",
                      mfc="white" if c == "sampler" else COEFFICIENT_STYLES[c]["color"],
                      label=f"{COEFFICIENT_LABELS[c]}: mean +- sd over {cfg['seeds']} seeds") for c in COEFFICIENTS[::-1]]
    handles.append(Line2D([], [], color="0.75", lw=0.8, label="one paired seed (same mixture and batches)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("Final loss (mean over the last tenth of the iterations) by choice of C_i, paper 000 Algorithm A.1",
                 fontsize=10)
    return fig


def run(cfg: CoefficientsConfig, ctx: RunContext) -> dict:
    table, vectors = _coefficient_table(cfg)
    curves, lrs = _train_all(cfg, ctx)
    rows, verdicts = _summaries(cfg, curves, lrs)
    mean_curves = {kind: {opt: {c: np.nanmean(np.asarray(curves[kind][opt][c], dtype=np.float64), 0).tolist()
                                for c in COEFFICIENTS} for opt in curves[kind]} for kind in curves}
    return _finite_or_none({"coefficient_table": table, "coefficient_vectors": vectors, "training": rows,
                            "verdicts": verdicts, "curves_per_seed": curves, "curves_mean": mean_curves})


def plot(results: dict) -> dict:
    """The figures from the results alone: the coefficient vectors, the training curves and the final losses."""
    cfg = results["config"]
    return {"dft_coefficients": _coefficient_figure(cfg, results["coefficient_vectors"]),
            "dft_coefficients_training": _training_figure(cfg, results["curves_per_seed"], results["training"]),
            "dft_coefficients_final": _final_figure(cfg, results["training"])}


def _finite_or_none(value):
    """The results with every NaN/inf float (a diverged run) as None: results.json is strict JSON (allow_nan=False)."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


EXPERIMENTS = [Experiment(name="dft-coefficients", make_config=make_config, run=run, plot=plot)]
