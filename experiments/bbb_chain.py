"""``bbb-chain``: biased embedding -> imbalanced generations, balanced embedding -> balanced (seed 003).

Two attribute prompts ("man" e_0 = (1, 0), "woman" e_1 = (0, 1)) and neutral prompts e_theta = (cos theta,
sin theta) on the arc between them, in the 1-D conditional mixture diffusion toy. For each theta: the embedding bias
cos(e, e_0) - cos(e, e_1), the exact class distribution of the DDPM sampler's generations, their representational
imbalance (TV from 50/50), and the corollary's lower bound on it from the attribute prompts' own class masses and
the Lipschitz TV bound. Also the smallest embedding distance to each attribute that the corollary allows for an
eps-balanced neutral prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.embedding_bias_bound import (  # noqa: E402
    chain_tv_constant,
    class_mass_lower_bound,
    generation_tv_bound,
    min_distance_for_balance,
)
from theory.ddpm import ddpm_sigmas  # noqa: E402
from theory.fairness_criteria import embedding_bias_gap, representational_balance  # noqa: E402
from toy.conditional_diffusion import ConditionalMixtureDiffusion, Grid  # noqa: E402


@dataclass(frozen=True)
class ChainConfig:
    n_steps: int = 20
    beta_range: tuple[float, float] = (0.03, 0.35)  # sigma_1 = 0.17: the last kernel spans several grid cells
    # (name, mode separation mu, data std, gain of W = gain * I)
    toys: tuple[tuple[str, float, float, float], ...] = (("overlapping modes", 1.0, 0.6, 2.0),
                                                         ("separated modes", 2.0, 0.5, 4.0))
    n_angles: int = 41
    grid_points: int = 601
    balance_tolerance: float = 0.05


def make_config(quick: bool) -> ChainConfig:
    return ChainConfig(n_angles=13, grid_points=401) if quick else ChainConfig()


def run_toy(name: str, mu: float, std: float, gain: float, cfg: ChainConfig) -> dict:
    betas = np.linspace(*cfg.beta_range, cfg.n_steps)
    sigmas = ddpm_sigmas(betas)
    model = ConditionalMixtureDiffusion([[-mu], [mu]], std, gain * np.eye(2), betas, sigmas)
    grid = Grid(1, 8.0, cfg.grid_points)
    lip = model.lipschitz()
    attr = np.eye(2)
    p_attr = [model.class_distribution(model.generate_on_grid(a, grid), grid)[k] for k, a in enumerate(attr)]
    thetas = np.linspace(0, np.pi / 2, cfg.n_angles)
    emb = np.column_stack([np.cos(thetas), np.sin(thetas)])
    dist = [model.class_distribution(model.generate_on_grid(e, grid), grid) for e in emb]
    p_man = np.array([p[0] for p in dist])
    imbalance = np.array([representational_balance(p) for p in dist])
    # corollary: P_n(a) >= P_a(a) - TV bound(||e_n - e_a||), so imbalance >= P_n(a) - 1/2 for each attribute a
    lower = np.zeros(len(emb))
    for k in range(2):
        r = np.linalg.norm(emb - attr[k], axis=1)
        mass_lb = class_mass_lower_bound(p_attr[k], generation_tv_bound(betas, sigmas, lip, r))
        lower = np.maximum(lower, mass_lb - 0.5)
    k_chain = chain_tv_constant(betas, sigmas, lip)
    min_distances = [min_distance_for_balance(k_chain, p_attr[k], 0.5, cfg.balance_tolerance) for k in range(2)]
    return {
        "name": name, "theta": thetas, "embedding_bias_gap": embedding_bias_gap(emb, attr[0], attr[1]),
        "p_man": p_man, "imbalance": imbalance, "imbalance_lower_bound": lower,
        "corollary_violations": int((imbalance < lower - 1e-12).sum()),
        "attribute_class_mass": p_attr, "chain_tv_constant": k_chain,
        "balanced_embedding_imbalance": float(imbalance[np.argmin(np.abs(thetas - np.pi / 4))]),
        "p_man_monotone_in_bias": bool(np.all(np.diff(p_man) <= 1e-12)),
        "min_distance_for_balance": min_distances,
        "attribute_distance_of_balanced_prompt": float(np.linalg.norm(np.array([1, 1]) / np.sqrt(2) - attr[0])),
        "balance_excluded_gaps": excluded_gaps(min_distances),
        "n_angles_bound_nontrivial": int((lower > 0).sum()),
    }


def excluded_gaps(min_distances: list[float]) -> list[float]:
    """The embedding-bias gaps on the arc e_theta = (cos theta, sin theta) where the corollary rules out eps-balance:
    [g_woman, g_man], balance impossible for gap > g_man (too near e_man) and for gap < g_woman (too near e_woman).

    On the unit circle ||e_theta - e_man|| = 2 sin(theta / 2), so ||e_theta - e_man|| < r_man iff theta < theta_man
    = 2 arcsin(r_man / 2); the gap cos(theta) - sin(theta) decreases in theta on [0, pi/2]. A minimum distance of 2
    or more excludes the whole arc (gap limits -inf / +inf are then clipped to the arc's ends, -1 and 1).
    """
    r_man, r_woman = (min(float(r), 2.0) for r in min_distances)
    theta_man = 2 * np.arcsin(r_man / 2)
    theta_woman = np.pi / 2 - 2 * np.arcsin(r_woman / 2)
    gap = lambda theta: float(np.cos(theta) - np.sin(theta))  # noqa: E731
    return [gap(min(max(theta_woman, 0.0), np.pi / 2)), gap(min(max(theta_man, 0.0), np.pi / 2))]


def run(cfg: ChainConfig, ctx: RunContext) -> dict:
    toys = [run_toy(*toy, cfg) for toy in cfg.toys]
    return {
        "corollary_violations": int(sum(r["corollary_violations"] for r in toys)),
        "balanced_embedding_imbalance": max(r["balanced_embedding_imbalance"] for r in toys),
        "toys": toys,
        "figure": "bbb_chain.png",
    }


def plot(results: dict) -> dict:
    """P('man'), the imbalance and the corollary's lower bound against the embedding bias, per toy, with the gaps
    where the corollary rules out eps-balance shaded (seed 003, Corollary 3 of ``theory/notes/bias_begets_bias.md``)."""
    toys, eps = results["toys"], results["config"]["balance_tolerance"]
    fig, axes = plt.subplots(1, len(toys), figsize=(6 * len(toys), 4.6), layout="constrained", squeeze=False)
    for ax, res in zip(axes[0], toys):
        gap = np.asarray(res["embedding_bias_gap"])
        g_woman, g_man = res["balance_excluded_gaps"]
        ax.axvspan(g_man, gap.max(), color="0.85", lw=0, label=f"{eps}-balance ruled out by the corollary")
        ax.axvspan(gap.min(), g_woman, color="0.85", lw=0)
        ax.plot(gap, res["p_man"], "o-", ms=3, color="C0", label="P(generation is 'man')")
        ax.plot(gap, res["imbalance"], "s--", ms=3, color="C3", label="imbalance TV(class distribution, 50/50)")
        ax.plot(gap, res["imbalance_lower_bound"], "k:", lw=2, label="corollary's lower bound on the imbalance")
        ax.axhline(eps, color="C3", lw=0.8, alpha=0.6, label=f"tolerance eps = {eps}")
        ax.annotate("balanced embedding\n(gap 0)", (0, res["balanced_embedding_imbalance"]), xytext=(0.05, 0.62),
                    textcoords="data", fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.8})
        ax.set(xlim=(gap.min(), gap.max()), ylim=(-0.02, 1.02),
               xlabel="embedding bias cos(e, e_man) - cos(e, e_woman) (unitless)",
               ylabel="share / total variation (unitless)",
               title=f"{res['name']}: K_chain = {res['chain_tv_constant']:.2f}, "
                     f"P(man | 'man') = {res['attribute_class_mass'][0]:.3f}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("Bias Begets Bias (paper 003): neutral-prompt embeddings on the arc from 'man' to 'woman', "
                 "exact generations of a 1-D DDPM toy")
    return {"bbb_chain": fig}


EXPERIMENTS = [Experiment("bbb-chain", make_config, run, plot)]
