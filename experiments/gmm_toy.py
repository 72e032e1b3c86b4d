"""``gmm-toy``: GAMMA-FACE on an exact 1-D diffusion model (seed 002, Sec. 3.3-3.4).

The data are an imbalanced two-class mixture 0.8 N(-3, 1) + 0.2 N(3, 1); the diffusion model is its exact noise
predictor (:class:`toy.gaussian_mixture.GaussianMixture1D`), so every latent x_t is an exact draw of the noised
marginal p_t = sum_c w_c N(sqrt(abar_t) m_c, abar_t s_c^2 + 1 - abar_t). At each t of a grid the run collects x_t
from the reverse chain, fits diagonal GMMs for K = 1..10 and keeps the lowest BIC (:mod:`scaleup.latent_mixture`),
draws equally many x_t per component (component mean as the noise mean, and full component) and finishes the chain.
The class of a generated x_0 is its most probable class under the true mixture; the bias is seed 000's metric.

t is chosen by the method, not by the resulting bias: the largest t of the grid (the most generation left to the
diffusion model) at which BIC still selects K >= 2. The whole sweep is reported as evidence of when the claim holds.
The run is repeated on ``repeats`` independent streams (``numpy.random.SeedSequence(seed).spawn``: chains, component
draws, scikit-learn's fits); the figure shows mean +- sd over them, and the first repeat's fit and latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.experiment import Experiment, RunContext, spawn_seeds  # noqa: E402
from experiments.seed_statistics import mean_sd  # noqa: E402
from scaleup.latent_mixture import choose_step, fit_latent_mixture  # noqa: E402
from theory.metrics import class_frequencies, frequency_bias  # noqa: E402
from theory.schedules import alphas_cumprod, linear_betas  # noqa: E402
from toy.gaussian_mixture import GaussianMixture1D  # noqa: E402
from toy.gmm_latents import reverse_chain  # noqa: E402




@dataclass(frozen=True)
class GMMToyConfig:
    weights: tuple[float, float] = (0.8, 0.2)
    means: tuple[float, float] = (-3.0, 3.0)
    stds: tuple[float, float] = (1.0, 1.0)
    num_steps: int = 1000
    t_grid: tuple[int, ...] = (100, 200, 300, 400, 500, 600, 700, 800)
    n_latents: int = 4000
    n_per_component: int = 1000
    k_max: int = 10
    repeats: int = 5  # independent streams; 4 s each on one core


def make_config(quick: bool) -> GMMToyConfig:
    if quick:
        return GMMToyConfig(t_grid=(100, 300, 500, 700), n_latents=1000, n_per_component=300, k_max=5, repeats=2)
    return GMMToyConfig()


def _generated_bias(model: GaussianMixture1D, x0: torch.Tensor) -> tuple[float, list[float]]:
    classes = model.posterior(x0.reshape(1, -1)).argmax(-1).reshape(-1).numpy()
    freq = class_frequencies(classes, 2)
    return frequency_bias(freq), freq.tolist()


def _exact_noised_density(cfg: GMMToyConfig, abar: float, grid: np.ndarray) -> np.ndarray:
    """p_t(x) = sum_c w_c N(x; sqrt(abar) m_c, abar s_c^2 + 1 - abar), the marginal the exact chain samples."""
    var = abar * np.square(cfg.stds) + 1 - abar
    mean = np.sqrt(abar) * np.asarray(cfg.means)
    dens = np.exp(-0.5 * (grid[:, None] - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)
    return dens @ np.asarray(cfg.weights)


def run_once(cfg: GMMToyConfig, seed: int, *, detail: bool) -> dict:
    """One repeat on the streams spawned from ``seed``: the sweep over t, t* by BIC and the biases; with ``detail``
    also the fit against the exact noised mixture and the latents' histogram at t* (for the figure)."""
    model = GaussianMixture1D(cfg.weights, cfg.means, cfg.stds)
    betas = linear_betas(cfg.num_steps)
    abar = alphas_cumprod(betas).numpy()
    chain_seed, component_seed, fit_seed = spawn_seeds(seed, 3)  # the chains, the component draws, sklearn's fits
    generator = torch.Generator().manual_seed(chain_seed)
    rng = np.random.default_rng(component_seed)
    z = torch.randn(1, cfg.n_latents, generator=generator, dtype=torch.float64)

    # one set of chains, stopped at every t of the grid in turn (descending), so all latents share their past
    sweep, latents, t_prev = [], {}, cfg.num_steps
    for t in sorted(cfg.t_grid, reverse=True):
        z = reverse_chain(model.noise_prediction, z, betas, t_prev, t, generator)
        latents[t], t_prev = z.clone(), t
    plain_x0 = reverse_chain(model.noise_prediction, z, betas, t_prev, 0, generator)
    bias_plain, freq_plain = _generated_bias(model, plain_x0)

    fits = {}
    for t in sorted(cfg.t_grid):
        x_t = latents[t].reshape(-1, 1).numpy()
        fit = fit_latent_mixture(x_t, k_range=range(1, cfg.k_max + 1), seed=fit_seed)
        fits[t] = fit
        row = {"t": t, "abar_t": float(abar[t - 1]), "chosen_k": fit.chosen_k, "bic": fit.bic}
        for mode in ("mean", "full"):
            lat, _ = fit.sample_uniform(cfg.n_per_component, mode=mode, noise_std=float(np.sqrt(1 - abar[t - 1])),
                                        rng=rng)
            x0 = reverse_chain(model.noise_prediction, torch.as_tensor(lat.reshape(1, -1)), betas, t, 0, generator)
            row[f"bias_gmm_{mode}"], row[f"class_shares_gmm_{mode}"] = _generated_bias(model, x0)
        sweep.append(row)

    t_star = choose_step({r["t"]: r["chosen_k"] for r in sweep})
    chosen = next((r for r in sweep if r["t"] == t_star), None)
    out = {
        "chosen_t": t_star,
        "chosen_k": chosen["chosen_k"] if chosen else None,
        "bias_plain_sampling": bias_plain,
        "class_shares_plain": freq_plain,
        # with no t where BIC sees two components, uniform sampling over one component is plain sampling
        "bias_gmm_sampling": chosen["bias_gmm_mean"] if chosen else bias_plain,
        "bias_gmm_full_component": chosen["bias_gmm_full"] if chosen else bias_plain,
        "sweep": sweep,
    }
    out["halves_bias"] = bool(out["bias_gmm_sampling"] <= bias_plain / 2)
    if not detail:
        return out
    exact = None
    if t_star is not None and fits[t_star].chosen_k == 2:
        # the fitted components against the exact noised mixture at t* (sorted by mean)
        a = float(abar[t_star - 1])
        gmm = fits[t_star].gmm
        order = np.argsort(gmm.means_[:, 0])
        exact = {"fitted_weights": gmm.weights_[order], "fitted_means": gmm.means_[order, 0],
                 "fitted_vars": gmm.covariances_[order, 0],
                 "exact_weights": np.asarray(cfg.weights), "exact_means": np.sqrt(a) * np.asarray(cfg.means),
                 "exact_vars": a * np.square(cfg.stds) + 1 - a}
    chosen_density = None
    if t_star is not None:  # the histogram of x_t, the chosen GMM's density and the exact p_t, for the figure
        x_t = latents[t_star].reshape(-1).numpy()
        heights, edges = np.histogram(x_t, bins=80, density=True)
        grid = np.linspace(x_t.min(), x_t.max(), 400)
        chosen_density = {"histogram_edges": edges, "histogram_density": heights, "grid": grid,
                          "gmm_density": np.exp(fits[t_star].gmm.score_samples(grid[:, None])),
                          "exact_density": _exact_noised_density(cfg, float(abar[t_star - 1]), grid)}
    return {**out, "fit_vs_exact_at_chosen_t": exact, "latents_at_chosen_t": chosen_density}



def summarise_repeats(repeats: list[dict]) -> dict:
    """Mean and sd (ddof = 1) over the repeats of the biases at each t and at each repeat's t*, and how often BIC
    saw two or more components at each t."""
    plain = [r["bias_plain_sampling"] for r in repeats]
    gmm = [r["bias_gmm_sampling"] for r in repeats]
    by_t = []
    for i, row in enumerate(repeats[0]["sweep"]):
        rows = [r["sweep"][i] for r in repeats]
        entry = {"t": row["t"], "abar_t": row["abar_t"],
                 "repeats_with_k_at_least_2": sum(r["chosen_k"] >= 2 for r in rows)}
        for mode in ("mean", "full"):
            entry[f"bias_gmm_{mode}_mean"], entry[f"bias_gmm_{mode}_sd"] = mean_sd([r[f"bias_gmm_{mode}"]
                                                                                    for r in rows])
        by_t.append(entry)
    return {
        "n_repeats": len(repeats),
        "chosen_t": [r["chosen_t"] for r in repeats],
        "bias_plain": plain,
        "bias_gmm_at_chosen_t": gmm,
        "bias_plain_mean_sd": mean_sd(plain),
        "bias_gmm_at_chosen_t_mean_sd": mean_sd(gmm),
        "repeats_halving_bias": sum(r["halves_bias"] for r in repeats),
        "repeats_below_plain": sum(g < p for g, p in zip(gmm, plain)),
        "by_t": by_t,
    }


def run(cfg: GMMToyConfig, ctx: RunContext) -> dict:
    if cfg.repeats < 1:
        raise ValueError(f"repeats must be >= 1 independent streams; got {cfg.repeats}")
    repeats = [run_once(cfg, s, detail=i == 0) for i, s in enumerate(ctx.seeds(cfg.repeats))]
    # the first repeat is the one whose fit and latents the figure shows; the summary covers all of them
    return {**repeats[0], "over_repeats": summarise_repeats(repeats), "figure": "gmm_toy.png"}


def plot_bias_against_t(ax, ts: list[int], bias_mean: dict[str, list[float]], bias_plain: float,
                        t_star: int | None, *, sd: dict[str, list[float]] | None = None, plain_sd: float = 0.0,
                        spread: str = "", ylabel: str) -> None:
    """Bias of GMM-component sampling at each step t of the latents (``bias_mean[mode]`` for mode "mean" / "full",
    with ``sd[mode]`` drawn as error bars), against plain sampling (a band of +- ``plain_sd``) and half of it."""
    ax.axhline(bias_plain, color="k", ls="--", label=f"plain sampling{spread}")
    if plain_sd:
        ax.axhspan(bias_plain - plain_sd, bias_plain + plain_sd, color="k", alpha=0.1, lw=0)
    ax.axhline(bias_plain / 2, color="grey", ls=":", label="half of plain")
    styles = {"mean": ("o", "-", "C0", "GMM: component mean as noise mean"),
              "full": ("s", "--", "C1", "GMM: full component")}
    for mode, (marker, ls, color, label) in styles.items():
        err = None if sd is None else sd[mode]
        shift = 0.01 * (max(ts) - min(ts)) * (1 if mode == "full" else -1)  # keep the two sets of error bars apart
        ax.errorbar(np.asarray(ts) + shift, bias_mean[mode], yerr=err, marker=marker, ls=ls, color=color,
                    capsize=3, ms=5, label=label + spread)
    if t_star is not None:
        ax.axvline(t_star, color="C3", lw=1, label=f"t* = {t_star} (noisiest t where BIC picks K >= 2)")
    ax.set(xlabel="step t of the latents (of T = 1000; larger = noisier)", ylabel=ylabel, ylim=(-0.03, None))


def legend_below(ax, ncols: int = 1) -> None:
    """The legend of ``ax`` below it, clear of the data (constrained layout makes room for it)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=ncols, fontsize=7, frameon=False)


def plot_bic_curves(ax, sweep: list[dict]) -> None:
    """BIC - min BIC against K for every t of the sweep (a colour per t, the chosen K filled), on a symlog axis."""
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sweep)))
    # curves of neighbouring t often coincide: line style and marker tell them apart where colour cannot
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for i, (r, color) in enumerate(zip(sweep, colors)):
        bic = {int(k): v for k, v in r["bic"].items()}  # JSON keys are strings
        ks = sorted(bic)
        low = min(bic.values())
        ls, marker = styles[i % len(styles)]
        ax.plot(ks, [bic[k] - low for k in ks], ls=ls, marker=marker, ms=4, mfc="none", color=color,
                label=f"t = {r['t']}: K* = {r['chosen_k']}")
        ax.plot([r["chosen_k"]], [0], "o", ms=7, color=color)
    ax.set(xlabel="K (components of the diagonal GMM)", ylabel="BIC - min BIC over K (unitless)", yscale="symlog")
    ax.set_xticks(range(1, max(int(k) for k in sweep[0]["bic"]) + 1))


def plot(results: dict) -> dict:
    """BIC curves, bias against t (mean +- sd over repeats) and the latents at t* with the chosen and the exact
    mixture, from ``results``."""
    sweep, t_star, over = results["sweep"], results["chosen_t"], results["over_repeats"]
    n = over["n_repeats"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), layout="constrained")
    plot_bic_curves(axes[0], sweep)
    axes[0].set_title("BIC by number of components (repeat 1)")
    legend_below(axes[0], ncols=2)

    ax = axes[1]
    by_t = over["by_t"]
    plot_bias_against_t(ax, [r["t"] for r in by_t],
                        {m: [r[f"bias_gmm_{m}_mean"] for r in by_t] for m in ("mean", "full")},
                        over["bias_plain_mean_sd"][0], t_star,
                        sd={m: [r[f"bias_gmm_{m}_sd"] for r in by_t] for m in ("mean", "full")},
                        plain_sd=over["bias_plain_mean_sd"][1], spread=f" (mean +- sd, {n} repeats)",
                        ylabel="bias of generated classes, paper 000 metric (0 = balanced)")
    top = ax.secondary_xaxis("top")  # how often BIC saw mixture structure at each t (t* is chosen per repeat)
    top.set_xticks([r["t"] for r in by_t], [f"{r['repeats_with_k_at_least_2']}/{n}" for r in by_t], fontsize=7)
    top.set_xlabel("repeats in which BIC picks K >= 2", fontsize=8)
    ax.set_title("bias against t (t* of repeat 1 marked)")
    legend_below(ax)

    ax = axes[2]
    chosen = results["latents_at_chosen_t"]
    if chosen is not None:
        ax.stairs(chosen["histogram_density"], chosen["histogram_edges"], fill=True, alpha=0.4,
                  label=f"x_t at t* = {t_star} (repeat 1, {results['config']['n_latents']} chains)")
        ax.plot(chosen["grid"], chosen["gmm_density"], "k-", label=f"fitted GMM, K = {results['chosen_k']}")
        ax.plot(chosen["grid"], chosen["exact_density"], "C3--", label="exact noised mixture p_t")
    else:
        ax.text(0.5, 0.5, "BIC chose K = 1 at every t:\nno t*", transform=ax.transAxes, ha="center")
    ax.set(xlabel="x_t (unitless)", ylabel="density (1 / unit of x_t)", title="latents at t* and the chosen mixture")
    legend_below(ax)
    w = results["config"]["weights"]
    fig.suptitle(f"GAMMA-FACE on an exact 1-D diffusion model, data {round(100 * w[0])}/{round(100 * w[1])} "
                 f"(paper 002, Sec. 3.3-3.4)")
    return {"gmm_toy": fig}


EXPERIMENTS = [Experiment("gmm-toy", make_config, run, plot)]
