"""``bbb-bound``: the path-KL / Pinsker bound on TV between generations against the exact TV (seed 003).

For the conditional mixture diffusion toy (``toy.conditional_diffusion``) in 1-D and 2-D, every pair of a set of
prompt embeddings gets

- the true TV between the two generated distributions of the T-step DDPM ancestral sampler (grid quadrature),
- the exact path KL sum_t E[c_t^2 ||eps_e - eps_e'||^2 / (2 alpha_t sigma_t^2)] and its Pinsker bound,
- the Lipschitz bound min(1, sqrt(sum_t c_t^2 L_t^2 ||e - e'||^2 / (4 alpha_t sigma_t^2))) of theory.embedding_bias_bound.

It counts violations (true TV above the bound; none are allowed), reports the tightness TV / bound, checks that the
Lipschitz constants L_t hold (and are attained, K = 2) on random points, that the quadrature has converged (a finer
grid), and that a KL constant too small by a factor 2 is violated, so the check can fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.embedding_bias_bound import chain_tv_constant, generation_tv_bound, path_kl_bound, pinsker_tv_bound  # noqa: E402
from theory.ddpm import ddpm_sigmas  # noqa: E402
from toy.conditional_diffusion import ConditionalMixtureDiffusion, Grid, generation_tv, grid_mass  # noqa: E402


@dataclass(frozen=True)
class ToyConfig:
    """One toy: modes, data std, W = gain * I (one attribute per embedding axis), grid."""

    name: str
    means: tuple[tuple[float, ...], ...]
    data_std: float
    gain: float
    grid_half_width: float
    grid_points: int
    n_embeddings: int


def triangle(radius: float) -> tuple[tuple[float, float], ...]:
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    return tuple((float(radius * np.cos(a)), float(radius * np.sin(a))) for a in angles)


@dataclass(frozen=True)
class BoundConfig:
    n_steps: int = 20
    beta_range: tuple[float, float] = (0.03, 0.35)  # sigma_1 = 0.17: the last kernel spans several grid cells
    toys: tuple[ToyConfig, ...] = (
        ToyConfig("1-D overlapping modes", ((-1.0,), (1.0,)), 0.6, 2.0, 8.0, 801, 24),
        ToyConfig("1-D separated modes", ((-2.0,), (2.0,)), 0.5, 4.0, 8.0, 801, 24),
        ToyConfig("2-D three modes", triangle(1.2), 0.6, 2.0, 6.0, 101, 12),
    )
    lipschitz_samples: int = 20_000
    refine_factor: int = 2  # the convergence check reruns one pair on a grid this much finer per axis


def make_config(quick: bool) -> BoundConfig:
    if quick:
        return BoundConfig(toys=(
            ToyConfig("1-D overlapping modes", ((-1.0,), (1.0,)), 0.6, 2.0, 8.0, 401, 10),
            ToyConfig("1-D separated modes", ((-2.0,), (2.0,)), 0.5, 4.0, 8.0, 401, 10),
            ToyConfig("2-D three modes", triangle(1.2), 0.6, 2.0, 6.0, 61, 6),
        ), lipschitz_samples=5_000)
    return BoundConfig()


def build_model(toy: ToyConfig, cfg: BoundConfig) -> ConditionalMixtureDiffusion:
    betas = np.linspace(*cfg.beta_range, cfg.n_steps)
    k = len(toy.means)
    return ConditionalMixtureDiffusion(np.array(toy.means), toy.data_std, toy.gain * np.eye(k), betas, ddpm_sigmas(betas))


def embeddings(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit embeddings: half spread over the sphere, half perturbations of one of them at distances 0.01..0.5
    (so that pairs cover the range where the bound is below 1)."""
    spread = rng.standard_normal((n - n // 2, k))
    base = spread[0] / np.linalg.norm(spread[0])
    scales = np.geomspace(0.01, 0.5, n // 2)
    near = base + scales[:, None] * rng.standard_normal((n // 2, k)) / np.sqrt(k)
    e = np.vstack([spread, near])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def lipschitz_check(model: ConditionalMixtureDiffusion, n: int, rng: np.random.Generator) -> dict:
    """Max over random (x, e, e') of ||eps(x,e) - eps(x,e')|| / (L_t ||e - e'||), and of ||d eps/de||_op / L_t."""
    lip = model.lipschitz()
    worst_ratio, worst_jac = 0.0, 0.0
    for t in range(1, model.n_steps + 1):
        x = rng.standard_normal((n, model.dim)) * 3.0
        e = rng.standard_normal(model.embedding_dim) * 2.0
        e2 = e + rng.standard_normal(model.embedding_dim) * rng.uniform(0.01, 2.0)
        diff = np.linalg.norm(model.eps(x, t, e) - model.eps(x, t, e2), axis=1)
        worst_ratio = max(worst_ratio, float(diff.max() / (lip[t - 1] * np.linalg.norm(e - e2))))
        jac = np.linalg.norm(model.eps_jacobian_e(x, t, e), ord=2, axis=(1, 2))
        worst_jac = max(worst_jac, float(jac.max() / lip[t - 1]))
    return {"max_difference_ratio_over_L": worst_ratio, "max_jacobian_norm_over_L": worst_jac}


def run_toy(toy: ToyConfig, cfg: BoundConfig, rng: np.random.Generator) -> dict:
    model = build_model(toy, cfg)
    grid = Grid(model.dim, toy.grid_half_width, toy.grid_points)
    lip = model.lipschitz()
    emb = embeddings(len(toy.means), toy.n_embeddings, rng)
    gens = [model.generate_on_grid(e, grid) for e in emb]
    rows = []
    for i, j in combinations(range(len(emb)), 2):
        d = float(np.linalg.norm(emb[i] - emb[j]))
        tv = generation_tv(gens[i], gens[j], grid)
        kl = model.exact_path_kl(gens[i], gens[j], grid)
        rows.append((d, tv, kl, float(pinsker_tv_bound(kl)), float(generation_tv_bound(model.betas, model.sigmas, lip, d))))
    d, tv, kl, pinsker_exact, bound = map(np.array, zip(*rows))
    # quadrature convergence: the pair of largest TV on a grid refine_factor times finer per axis
    worst = int(np.argmax(tv))
    i, j = list(combinations(range(len(emb)), 2))[worst]
    fine = Grid(model.dim, toy.grid_half_width, (toy.grid_points - 1) * cfg.refine_factor + 1)
    tv_fine = generation_tv(model.generate_on_grid(emb[i], fine), model.generate_on_grid(emb[j], fine), fine)
    kl_half = kl / 2  # the path-KL with a constant too small by 2: 1/(4 alpha sigma^2) instead of 1/(2 alpha sigma^2)
    return {
        "name": toy.name, "dim": model.dim, "n_modes": len(toy.means), "n_pairs": len(rows),
        "chain_tv_constant": chain_tv_constant(model.betas, model.sigmas, lip), "lipschitz": lip,
        "violations": int((tv > bound).sum()),
        "violations_exact_path_kl_pinsker": int((tv > pinsker_exact).sum()),
        "violations_with_half_kl_constant": int((tv > pinsker_tv_bound(kl_half)).sum()),
        "median_tightness": float(np.median(tv / bound)), "max_tightness": float(np.max(tv / bound)),
        "median_tightness_nonvacuous": float(np.median((tv / bound)[bound < 1])) if (bound < 1).any() else None,
        "n_nonvacuous": int((bound < 1).sum()),
        "median_tightness_exact_path_kl": float(np.median(tv / pinsker_exact)),
        "max_tightness_exact_path_kl": float(np.max(tv / pinsker_exact)),
        "median_kl_ratio_exact_over_lipschitz": float(np.median(kl / np.maximum(
            path_kl_bound(model.betas, model.sigmas, lip, d), 1e-300))),
        "lipschitz_check": lipschitz_check(model, cfg.lipschitz_samples, rng),
        "quadrature": {"min_grid_mass": float(min(grid_mass(g, grid) for g in gens)),
                       "max_grid_mass": float(max(grid_mass(g, grid) for g in gens)),
                       "tv_refined_minus_tv": float(tv_fine - tv[worst]), "refined_points_per_axis": fine.n},
        "_pairs": (d, tv, pinsker_exact, bound),
    }


def run(cfg: BoundConfig, ctx: RunContext) -> dict:
    rng = np.random.default_rng(ctx.seed)
    toys = [run_toy(toy, cfg, rng) for toy in cfg.toys]
    all_tight = []
    for res in toys:
        d, tv, pinsker_exact, bound = res.pop("_pairs")
        all_tight.append(tv / bound)
        # every pair, for the figure (plot reads only results.json)
        res["pairs"] = {"distance": d, "tv": tv, "pinsker_exact_path_kl": pinsker_exact, "bound": bound}
    tight = np.concatenate(all_tight)
    return {
        "n_pairs": int(sum(r["n_pairs"] for r in toys)),
        "violations": int(sum(r["violations"] for r in toys)),
        "median_tightness": float(np.median(tight)),
        "max_tightness": float(np.max(tight)),
        "violations_exact_path_kl_pinsker": int(sum(r["violations_exact_path_kl_pinsker"] for r in toys)),
        "violations_with_half_kl_constant": int(sum(r["violations_with_half_kl_constant"] for r in toys)),
        "toys": toys,
        "figure": "bbb_bound.png",
    }


def plot(results: dict) -> dict:
    """Exact TV, Pinsker on the exact path KL and the Lipschitz bound over embedding distance, per toy, and the
    tightness of the bound where it is below 1, from ``results`` (seed 003, Theorem 4.5 as stated in
    ``theory/notes/bias_begets_bias.md``).

    Log-log axes: the pairs span four decades of distance and TV, and the non-vacuous part of the bound (small
    distances) is invisible on linear axes.
    """
    toys = results["toys"]
    fig, axes = plt.subplots(1, len(toys) + 1, figsize=(4.6 * (len(toys) + 1), 4.4), layout="constrained")
    floor = 1e-7  # TV is > 1e-6 for every pair here; the floor only keeps the log axis finite
    for ax, res in zip(axes, toys):
        pairs = res["pairs"]
        d, tv, pinsker_exact = (np.asarray(pairs[k]) for k in ("distance", "tv", "pinsker_exact_path_kl"))
        grid_d = np.geomspace(d.min(), d.max(), 200)
        ax.plot(grid_d, np.minimum(1, res["chain_tv_constant"] * grid_d), "k-", lw=1.5,
                label="Lipschitz bound min(1, K_chain ||e - e'||)")
        ax.plot(d, np.maximum(pinsker_exact, floor), "^", color="C1", ms=3, alpha=0.5, mfc="none",
                label="Pinsker on the exact path KL")
        ax.plot(d, np.maximum(tv, floor), "o", color="C0", ms=3, alpha=0.8, label="exact TV of the generations")
        above = tv > np.asarray(pairs["bound"])
        if above.any():  # a violation must be seen, not just counted
            ax.plot(d[above], tv[above], "x", color="red", ms=8, mew=2, label="violation (TV > bound)")
        ax.set(xscale="log", yscale="log", ylim=(floor, 2), xlabel="||e - e'|| (unitless, unit-norm embeddings)",
               ylabel="total variation (unitless)",
               title=f"{res['name']}, K_chain = {res['chain_tv_constant']:.2f}\n"
                     f"{res['violations']} violations / {res['n_pairs']} pairs")
        ax.minorticks_off()  # log-axis minor ticks cost most of the redraw time and add nothing readable here
    ax = axes[-1]
    styles, top = ("-", "--", ":"), 0.0
    for res, ls in zip(toys, styles):
        tv, bound = np.asarray(res["pairs"]["tv"]), np.asarray(res["pairs"]["bound"])
        below = bound < 1
        if below.any():
            bins = np.geomspace(1e-4, 1, 25)
            counts, _, _ = ax.hist(np.clip(tv[below] / bound[below], bins[0], 1), bins=bins, histtype="step", lw=1.8,
                                   ls=ls, label=f"{res['name']} ({below.sum()} pairs)")
            top = max(top, counts.max())
    ax.set(xscale="log", xlabel="tightness TV / bound (unitless)", ylabel="pairs (count)",
           title="tightness where the bound is below 1")
    ax.minorticks_off()
    ax.set_ylim(0, 1.45 * top + 1)  # headroom so that the legend sits above the bars
    ax.legend(fontsize=7, loc="upper right")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8, markerscale=2)
    fig.suptitle(f"Bias Begets Bias (paper 003): TV bound vs exact TV between generations of two prompt "
                 f"embeddings, DDPM T = {results['config']['n_steps']}")
    return {"bbb_bound": fig}


EXPERIMENTS = [Experiment("bbb-bound", make_config, run, plot)]
