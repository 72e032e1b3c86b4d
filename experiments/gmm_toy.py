"""``gmm-toy``: GAMMA-FACE on an exact 1-D diffusion model (seed 002, Sec. 3.3-3.4).

The data are an imbalanced two-class mixture 0.8 N(-3, 1) + 0.2 N(3, 1); the diffusion model is its exact noise
predictor (:class:`toy.gaussian_mixture.GaussianMixture1D`), so every latent x_t is an exact draw of the noised
marginal p_t = sum_c w_c N(sqrt(abar_t) m_c, abar_t s_c^2 + 1 - abar_t). At each t of a grid the run collects x_t
from the reverse chain, fits diagonal GMMs for K = 1..10 and keeps the lowest BIC (:mod:`scaleup.latent_mixture`),
draws equally many x_t per component (component mean as the noise mean, and full component) and finishes the chain.
The class of a generated x_0 is its most probable class under the true mixture; the bias is seed 000's metric.

t is chosen by the method, not by the resulting bias: the largest t of the grid (the most generation left to the
diffusion model) at which BIC still selects K >= 2. The whole sweep is reported as evidence of when the claim holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
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


def make_config(quick: bool) -> GMMToyConfig:
    if quick:
        return GMMToyConfig(t_grid=(100, 300, 500, 700), n_latents=1000, n_per_component=300, k_max=5)
    return GMMToyConfig()


def _generated_bias(model: GaussianMixture1D, x0: torch.Tensor) -> tuple[float, list[float]]:
    classes = model.posterior(x0.reshape(1, -1)).argmax(-1).reshape(-1).numpy()
    freq = class_frequencies(classes, 2)
    return frequency_bias(freq), freq.tolist()


def plot_bias_against_t(ax, sweep: list[dict], bias_plain: float, t_star: int | None, *, ylabel: str, title: str) -> None:
    """Bias of GMM-component sampling (both variants) at each step t of the latents, against plain sampling."""
    ts = [r["t"] for r in sweep]
    ax.axhline(bias_plain, color="k", ls="--", label="plain sampling")
    ax.axhline(bias_plain / 2, color="grey", ls=":", label="half of plain")
    ax.plot(ts, [r["bias_gmm_mean"] for r in sweep], "o-", label="GMM: mean as noise mean")
    ax.plot(ts, [r["bias_gmm_full"] for r in sweep], "s-", label="GMM: full component")
    if t_star is not None:
        ax.axvline(t_star, color="C3", lw=1, label=f"t* = {t_star} (BIC rule)")
    ax.set(xlabel="step t of the latents", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)


def run(cfg: GMMToyConfig, ctx: RunContext) -> dict:
    model = GaussianMixture1D(cfg.weights, cfg.means, cfg.stds)
    betas = linear_betas(cfg.num_steps)
    abar = alphas_cumprod(betas).numpy()
    chain_seed, component_seed, fit_seed = ctx.seeds(3)  # the chains, the component draws, scikit-learn's fits
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
    if t_star is not None:  # the histogram of x_t and the chosen GMM's density, for the figure
        x_t = latents[t_star].reshape(-1).numpy()
        heights, edges = np.histogram(x_t, bins=80, density=True)
        grid = np.linspace(x_t.min(), x_t.max(), 400)
        chosen_density = {"histogram_edges": edges, "histogram_density": heights, "grid": grid,
                          "gmm_density": np.exp(fits[t_star].gmm.score_samples(grid[:, None]))}

    return {
        "chosen_t": t_star,
        "chosen_k": chosen["chosen_k"] if chosen else None,
        "bias_plain_sampling": bias_plain,
        "class_shares_plain": freq_plain,
        "bias_gmm_sampling": chosen["bias_gmm_mean"] if chosen else None,
        "bias_gmm_full_component": chosen["bias_gmm_full"] if chosen else None,
        "halves_bias": bool(chosen and chosen["bias_gmm_mean"] <= bias_plain / 2),
        "fit_vs_exact_at_chosen_t": exact,
        "sweep": sweep,
        "latents_at_chosen_t": chosen_density,
        "figure": "gmm_toy.png",
    }


def plot(results: dict) -> dict:
    """BIC curves, bias against t and the latents at t* with the chosen mixture, from ``results``."""
    sweep, t_star = results["sweep"], results["chosen_t"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    ax = axes[0]
    for r in sweep:
        bic = {int(k): v for k, v in r["bic"].items()}  # JSON keys are strings
        ks = sorted(bic)
        ax.plot(ks, [bic[k] - min(bic.values()) for k in ks], "o-", ms=3, label=f"t = {r['t']}")
    ax.set(xlabel="K", ylabel="BIC - min BIC", title="BIC by number of components", yscale="symlog")
    ax.legend(fontsize=7)
    plot_bias_against_t(axes[1], sweep, results["bias_plain_sampling"], t_star,
                        ylabel="bias of generated classes (seed 000)", title="bias against t")
    ax = axes[2]
    chosen = results["latents_at_chosen_t"]
    if chosen is not None:
        ax.stairs(chosen["histogram_density"], chosen["histogram_edges"], fill=True, alpha=0.5,
                  label=f"x_t at t* = {t_star}")
        ax.plot(chosen["grid"], chosen["gmm_density"], "k-", label=f"GMM, K = {results['chosen_k']}")
    ax.set(xlabel="x_t", ylabel="density", title="latents and the chosen mixture")
    ax.legend(fontsize=7)
    fig.suptitle("GAMMA-FACE on an exact 1-D diffusion model, data 80/20 (seed 002, Sec. 3.3)")
    return {"gmm_toy": fig}


EXPERIMENTS = [Experiment("gmm-toy", make_config, run, plot)]
