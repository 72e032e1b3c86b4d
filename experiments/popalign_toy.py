"""PopAlign vs SFT on the 1-D Gaussian mixture (seed 001, Sec. 4 Fig. 3; App. H Fig. 11, 12, 13).

Four experiments share this module:

- ``popalign-toy`` (Fig. 3): reference, PopAlign and SFT, in both parameterisations (density, diffusion), plus the
  numeric check of the per-sample lower bound on the preference sets actually used.
- ``popalign-toy-targets`` (Fig. 11): targets 50/50, 65/35, 80/20, 95/5.
- ``popalign-toy-beta`` (Fig. 12): beta from 0.1 to 10.
- ``popalign-toy-alpha`` (Fig. 13): alpha 0.25, 0.5, 0.75, in both parameterisations.

Every setting is trained for several independent draws of the preference data (``seeds``) and reported as mean and
standard deviation. ``beta`` and ``betas`` are beta', the coefficient of r - mu (``beta_prime`` of
:func:`theory.popalign.popalign_loss`); ``bound_betas`` are eq. 8's beta.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.popalign import jensen_lower_bound, popalign_normaliser, set_objective, split_lower_bound  # noqa: E402
from toy.popalign_toy import (  # noqa: E402
    Setting,
    SweepResult,
    TrainConfig,
    generate,
    log_ratio_sets,
    preference_data,
    reference_mixture,
    summarise,
    sweep,
)

PARAMETERISATIONS = ("diffusion", "density")


@dataclass(frozen=True)
class PopAlignToyConfig:
    target: float = 0.5
    beta: float = 1.0
    alpha: float = 0.5
    seeds: int = 3
    steps: int = 3000
    lr: float = 0.02
    n_samples: int = 1000
    set_size: int = 10
    n_generated: int = 1000
    targets: tuple[float, ...] = (0.5, 0.65, 0.8, 0.95)
    betas: tuple[float, ...] = (0.1, 0.25, 0.5, 0.9, 1.0, 2.0, 4.0, 10.0)
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75)
    bound_betas: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0)


def make_config(quick: bool) -> PopAlignToyConfig:
    if quick:
        return PopAlignToyConfig(seeds=1, steps=2000, betas=(0.25, 0.5, 1.0, 2.0, 4.0, 10.0))
    return PopAlignToyConfig()


def _train_config(cfg: PopAlignToyConfig, method: str, parameterisation: str) -> TrainConfig:
    return TrainConfig(method=method, parameterisation=parameterisation, steps=cfg.steps, lr=cfg.lr)


def _sweep(cfg: PopAlignToyConfig, settings: list[Setting], method: str, parameterisation: str, seed: int) -> SweepResult:
    return sweep(settings, cfg.seeds, _train_config(cfg, method, parameterisation), seed=seed,
                 n_samples=cfg.n_samples, set_size=cfg.set_size)


def _mixture_density(model, run: int, grid: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.log_prob(torch.as_tensor(grid)[None].expand(model.logits.shape[0], -1))[run].exp().numpy()


#: The x grid of the density curves and the bin edges of the sample histograms.
DENSITY_GRID = np.linspace(-12, 12, 601)
HISTOGRAM_EDGES = np.linspace(-12, 12, 73)


def _histogram(samples: np.ndarray, model, run: int, title: str) -> dict:
    """One histogram panel as data: the samples' density per bin of :data:`HISTOGRAM_EDGES`, and the model's and the
    reference's densities on :data:`DENSITY_GRID` (the plot reads only these)."""
    return {"title": title, "histogram_edges": HISTOGRAM_EDGES,
            "histogram_density": np.histogram(samples, bins=HISTOGRAM_EDGES, density=True)[0],
            "grid": DENSITY_GRID, "model_density": _mixture_density(model, run, DENSITY_GRID),
            "reference_density": _mixture_density(reference_mixture(1), 0, DENSITY_GRID)}


def _histogram_panel(ax, panel: dict) -> None:
    ax.stairs(panel["histogram_density"], panel["histogram_edges"], fill=True, color="C0", alpha=0.45,
              label="samples")
    ax.plot(panel["grid"], panel["model_density"], color="C0", lw=1.5, label="model density")
    ax.plot(panel["grid"], panel["reference_density"], "k--", lw=1, label="reference")
    ax.set(title=panel["title"], xlabel="x", ylim=(0, 0.45))


def _samples(result: SweepResult, parameterisation: str, n: int, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return generate(result.model, n, parameterisation, generator=generator).numpy()


def _reference_summary(target: float) -> dict:
    return summarise(reference_mixture(1), torch.tensor([target], dtype=torch.float64))[0]


def _bound_check(cfg: PopAlignToyConfig, result: SweepResult, seed: int) -> dict:
    """Theorem 1 and 2 of theory/notes/popalign_bound.md on the preference sets the trained models were fit to.

    The sets are re-drawn with the sweep's generator (same seed, so the same data) and the exact log-ratios
    rho = log P_theta - log P_ref of the trained seed-0 model are used, with mu the batch normaliser (alpha).
    """
    generator = torch.Generator().manual_seed(seed)
    data = preference_data(torch.full((cfg.seeds,), cfg.target, dtype=torch.float64), n_samples=cfg.n_samples,
                           set_size=cfg.set_size, generator=generator)
    rho_w, rho_l = (rho[0] for rho in log_ratio_sets(result.model, reference_mixture(cfg.seeds), data))
    is_winner = torch.cat([torch.ones(rho_w.numel()), torch.zeros(rho_l.numel())]).bool()
    mu = popalign_normaliser(torch.cat([rho_w.reshape(-1), rho_l.reshape(-1)]), is_winner, cfg.alpha)
    rows, violations, pairs = [], 0, 0
    for beta in cfg.bound_betas:
        objective = set_objective(rho_w, rho_l, beta)
        jensen = jensen_lower_bound(rho_w, rho_l, beta, mu)
        split = split_lower_bound(rho_w, rho_l, beta, mu)
        violations += int((jensen > objective + 1e-12).sum() + (split > objective + 1e-12).sum())
        pairs += 2 * objective.numel()
        rows.append({"beta": beta, "objective_mean": float(objective.mean()),
                     "jensen_bound_mean": float(jensen.mean()), "split_bound_mean": float(split.mean()),
                     "min_gap_jensen": float((objective - jensen).min()), "min_gap_split": float((objective - split).min())})
    return {"n_set_pairs": int(rho_w.shape[0]), "checks": pairs, "violations": violations, "mu": float(mu), "rows": rows}


def run_fig3(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    setting = [Setting(cfg.target, cfg.beta, cfg.alpha)]
    # one data stream for every method and parameterisation (a paired comparison), another for the samples shown
    train_seed, sample_seed = ctx.seeds(2)
    trained = {(p, m): _sweep(cfg, setting, m, p, train_seed) for p in PARAMETERISATIONS for m in ("popalign", "sft")}
    reference = _reference_summary(cfg.target)

    ref_samples = reference_mixture(1).sample(cfg.n_generated, torch.Generator().manual_seed(sample_seed))[0].numpy()
    histograms = {}  # per parameterisation: the reference's, PopAlign's and SFT's samples (figure rows)
    for parameterisation in PARAMETERISATIONS:
        histograms[parameterisation] = [_histogram(ref_samples, reference_mixture(1), 0,
                                                   f"reference ({parameterisation} row)")]
        for method in ("popalign", "sft"):
            res = trained[(parameterisation, method)]
            agg = res.settings[0]
            histograms[parameterisation].append(_histogram(
                _samples(res, parameterisation, cfg.n_generated, sample_seed)[0], res.model, 0,
                f"{method} ({parameterisation}): G1 share {agg['g1_share']:.2f}, G2 {agg['g2_weight']:.3f}"))

    by_param = {p: {m: trained[(p, m)].settings[0] for m in ("popalign", "sft")} for p in PARAMETERISATIONS}
    ref_g2 = reference["g2_weight"]

    def fig3_holds(methods: dict) -> bool:
        pop, sft = methods["popalign"], methods["sft"]
        return (abs(pop["g1_share"] - cfg.target) <= 0.1 and pop["g2_weight"] >= 0.5 * ref_g2
                and abs(sft["g1_share"] - cfg.target) <= 0.1 and sft["g2_weight"] < 0.05)

    return {
        "target_g1_share": cfg.target,
        "reference": reference,
        "methods": by_param["diffusion"],
        "parameterisations": by_param,
        "reproduces_fig3": {p: fig3_holds(by_param[p]) for p in PARAMETERISATIONS},
        "bound_check": {p: _bound_check(cfg, trained[(p, "popalign")], train_seed) for p in PARAMETERISATIONS},
        "histograms": histograms,
        "figure": "popalign_toy.png",
    }


def plot_fig3(results: dict) -> dict:
    """Per parameterisation: reference, PopAlign and SFT samples with densities, and the reward accuracy."""
    cfg, by_param = results["config"], results["parameterisations"]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    for row, parameterisation in enumerate(PARAMETERISATIONS):
        for col, panel in enumerate(results["histograms"][parameterisation]):
            _histogram_panel(axes[row, col], panel)
        ax = axes[row, 3]
        for method, color in (("popalign", "C0"), ("sft", "C3")):
            acc = by_param[parameterisation][method]["reward_accuracy"]
            ax.plot(acc["steps"], acc["mean"], color=color, label=method)
            ax.fill_between(acc["steps"], acc["min"], acc["max"], color=color, alpha=0.2)
        ax.set(title=f"implied population reward accuracy ({parameterisation})", xlabel="step", ylim=(0, 1.05))
        ax.legend()
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"PopAlign vs SFT on the 1-D mixture (seed 001, Fig. 3): target {cfg['target']:.0%} G1, "
                 f"beta {cfg['beta']}, {cfg['seeds']} seed(s)")
    return {"popalign_toy": fig}


def run_targets(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    settings = [Setting(t, cfg.beta, cfg.alpha) for t in cfg.targets]
    train_seed, sample_seed = ctx.seeds(2)
    res = _sweep(cfg, settings, "popalign", "diffusion", train_seed)
    samples = _samples(res, "diffusion", cfg.n_generated, sample_seed)
    histograms = [_histogram(samples[k * cfg.seeds], res.model, k * cfg.seeds,
                             f"target {agg['target']:.0%}: G1 share {agg['g1_share']:.2f} ± {agg['g1_share_std']:.2f}")
                  for k, agg in enumerate(res.settings)]  # the first run of each target
    ref_g2 = _reference_summary(cfg.target)["g2_weight"]
    return {
        "targets": res.settings,
        "all_within_0_1": all(abs(a["g1_share"] - a["target"]) <= 0.1 for a in res.settings),
        "all_keep_half_g2": all(a["g2_weight"] >= 0.5 * ref_g2 for a in res.settings),
        "max_abs_share_error": max(abs(a["g1_share"] - a["target"]) for a in res.settings),
        "histograms": histograms,
        "figure": "popalign_toy_targets.png",
    }


def plot_targets(results: dict) -> dict:
    """Samples and densities of the first run for each target."""
    panels = results["histograms"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, panel in zip(np.atleast_1d(axes), panels):
        _histogram_panel(ax, panel)
    fig.suptitle(f"PopAlign (diffusion, beta {results['config']['beta']}) for non-uniform targets (seed 001, Fig. 11)")
    return {"popalign_toy_targets": fig}


def _monotone(values: list[float], increasing: bool) -> bool:
    diffs = np.diff(values)
    return bool((diffs >= 0).all() if increasing else (diffs <= 0).all())


def run_beta(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    settings = [Setting(cfg.target, b, cfg.alpha) for b in cfg.betas]
    res = _sweep(cfg, settings, "popalign", "diffusion", ctx.seeds(1)[0])
    aggs = res.settings
    betas = np.array(cfg.betas)
    disc = [a["discrepancy"] for a in aggs]
    best = int(np.argmin(disc))
    return {
        "betas": aggs,
        "kl_to_reference_decreasing_in_beta": _monotone([a["kl_to_reference"] for a in aggs], increasing=False),
        "g1_share_increasing_in_beta": _monotone([a["g1_share"] for a in aggs], increasing=True),
        "beta_of_min_discrepancy": float(betas[best]),
        "discrepancy_increasing_above_best_beta": _monotone(disc[best:], increasing=True),
        "discrepancy_decreasing_below_best_beta": _monotone(disc[: best + 1], increasing=False),
        "reference": _reference_summary(cfg.target),
        "figure": "popalign_toy_beta.png",
    }


def plot_beta(results: dict) -> dict:
    """G1 share, G2 weight, discrepancy and KL to the reference against beta (mean +- sd over seeds)."""
    cfg, aggs, ref = results["config"], results["betas"], results["reference"]
    betas = np.array(cfg["betas"])
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for ax, key, label in zip(axes, ("g1_share", "g2_weight", "discrepancy", "kl_to_reference"),
                              ("G1 share within G1+G3", "G2 weight", "discrepancy to target (eq. 11)",
                               "KL(P_theta || P_ref)")):
        ax.errorbar(betas, [a[key] for a in aggs], yerr=[a[f"{key}_std"] for a in aggs], fmt="o-", capsize=3)
        ax.set(xscale="log", xlabel="beta", title=label)
    axes[0].axhline(cfg['target'], color="grey", ls=":", label="target")
    axes[0].axhline(ref["g1_share"], color="k", ls="--", label="reference")
    axes[1].axhline(ref["g2_weight"], color="k", ls="--")
    axes[0].legend()
    fig.suptitle(f"Effect of beta (seed 001, Fig. 12): diffusion parameterisation, target {cfg['target']:.0%}, "
                 f"{cfg['seeds']} seed(s)")
    return {"popalign_toy_beta": fig}


def run_alpha(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    settings = [Setting(cfg.target, cfg.beta, a) for a in cfg.alphas]
    train_seed, sample_seed = ctx.seeds(2)
    results = {p: _sweep(cfg, settings, "popalign", p, train_seed) for p in PARAMETERISATIONS}
    histograms = {}  # per parameterisation, the first run of each alpha (figure rows)
    for p in PARAMETERISATIONS:
        samples = _samples(results[p], p, cfg.n_generated, sample_seed)
        histograms[p] = [_histogram(samples[k * cfg.seeds], results[p].model, k * cfg.seeds,
                                    f"{p}, alpha {agg['alpha']}: G1 {agg['g1_share']:.2f}, G2 {agg['g2_weight']:.3f}")
                         for k, agg in enumerate(results[p].settings)]
    ref_g2 = _reference_summary(cfg.target)["g2_weight"]
    out = {p: results[p].settings for p in PARAMETERISATIONS}
    # "diverges": the run abandons the preference data's support, its mass draining into the unrelated G2
    out["diverged"] = {p: {str(a["alpha"]): a["g2_weight"] > 1 - 0.5 * (1 - ref_g2) for a in results[p].settings}
                       for p in PARAMETERISATIONS}
    out["histograms"] = histograms
    out["figure"] = "popalign_toy_alpha.png"
    return out


def plot_alpha(results: dict) -> dict:
    """Samples and densities for each alpha, one row per parameterisation."""
    cfg = results["config"]
    n = len(results["histograms"][PARAMETERISATIONS[0]])
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 8), squeeze=False)
    for row, p in enumerate(PARAMETERISATIONS):
        for k, panel in enumerate(results["histograms"][p]):
            _histogram_panel(axes[row, k], panel)
    fig.suptitle(f"Effect of alpha in mu (seed 001, Fig. 13 / App. A.3): beta {cfg['beta']}, "
                 f"target {cfg['target']:.0%}")
    return {"popalign_toy_alpha": fig}


EXPERIMENTS = [
    Experiment("popalign-toy", make_config, run_fig3, plot_fig3),
    Experiment("popalign-toy-targets", make_config, run_targets, plot_targets),
    Experiment("popalign-toy-beta", make_config, run_beta, plot_beta),
    Experiment("popalign-toy-alpha", make_config, run_alpha, plot_alpha),
]
