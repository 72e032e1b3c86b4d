"""PopAlign vs SFT on the 1-D Gaussian mixture (seed 001, Sec. 4 Fig. 3; App. H Fig. 11, 12, 13).

Four experiments share this module:

- ``popalign-toy`` (Fig. 3): reference, PopAlign and SFT, in both parameterisations (density, diffusion), plus the
  numeric check of the per-sample lower bound on the preference sets actually used.
- ``popalign-toy-targets`` (Fig. 11): targets 50/50, 65/35, 80/20, 95/5.
- ``popalign-toy-beta`` (Fig. 12): beta from 0.1 to 10.
- ``popalign-toy-alpha`` (Fig. 13): alpha 0.25, 0.5, 0.75, in both parameterisations.

Every setting is trained for several independent draws of the preference data (``seeds``) and reported as mean and
standard deviation over them. ``beta_prime`` and ``beta_primes`` are beta', the coefficient of r - mu (``beta_prime``
of :func:`theory.popalign.popalign_loss`); ``bound_betas`` are eq. 8's beta.

One setting, target 50/50 with beta' = 1 and alpha = 0.5 (diffusion), appears in all four figures. It is one run:
:func:`toy.popalign_toy.sweep` keys each repeat's random streams by the run seed and the target alone, and runs in a
batch share nothing, so the four experiments train it bit-identically and show the same numbers for it.
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
    reference_mixture,
    run_mixture,
    stream_seeds,
    summarise,
    sweep,
)

PARAMETERISATIONS = ("diffusion", "density")


@dataclass(frozen=True)
class PopAlignToyConfig:
    target: float = 0.5
    beta_prime: float = 1.0  # beta' of eq. 9 (the paper's 1-D runs state beta = 0.5; see the notebook)
    alpha: float = 0.5
    seeds: int = 5
    steps: int = 3000
    lr: float = 0.02
    n_samples: int = 1000
    set_size: int = 10
    n_generated: int = 1000
    targets: tuple[float, ...] = (0.5, 0.65, 0.8, 0.95)
    beta_primes: tuple[float, ...] = (0.1, 0.25, 0.5, 0.9, 1.0, 2.0, 4.0, 10.0)
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75)
    bound_betas: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0)


def make_config(quick: bool) -> PopAlignToyConfig:
    if quick:
        return PopAlignToyConfig(seeds=2, steps=2000, beta_primes=(0.25, 0.5, 1.0, 2.0, 4.0, 10.0))
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
#: Line styles of the two methods, distinct so that overlapping curves stay apart.
METHOD_STYLE = {"popalign": dict(color="C0", ls="-", marker="o"), "sft": dict(color="C3", ls="--", marker="s")}


def _histogram(samples: np.ndarray, model, run: int, label: str, agg: dict | None = None) -> dict:
    """One histogram panel as data: the samples' density per bin of :data:`HISTOGRAM_EDGES`, the model's and the
    reference's densities on :data:`DENSITY_GRID`, and the setting's G1 share / G2 weight (mean, sd over seeds)."""
    panel = {"label": label, "histogram_edges": HISTOGRAM_EDGES,
             "histogram_density": np.histogram(samples, bins=HISTOGRAM_EDGES, density=True)[0],
             "grid": DENSITY_GRID, "model_density": _mixture_density(model, run, DENSITY_GRID),
             "reference_density": _mixture_density(reference_mixture(1), 0, DENSITY_GRID)}
    if agg is not None:
        panel.update({k: agg[k] for k in ("g1_share", "g1_share_std", "g2_weight", "g2_weight_std", "seeds")})
    return panel


def _histogram_panel(ax, panel: dict) -> None:
    ax.stairs(panel["histogram_density"], panel["histogram_edges"], fill=True, color="C0", alpha=0.4,
              label="1000 samples of seed 0")
    ax.plot(panel["grid"], panel["model_density"], color="C0", lw=1.5, label="its density")
    ax.plot(panel["grid"], panel["reference_density"], "k--", lw=1, label="reference P_ref")
    title = panel["label"]
    if "g1_share" in panel:
        title += (f"\nG1 share {panel['g1_share']:.3f} ± {panel['g1_share_std']:.3f}, "
                  f"G2 {panel['g2_weight']:.3f} ± {panel['g2_weight_std']:.3f}")
    ax.set_title(title, fontsize=9)
    ax.set(xlabel="x (unitless)", ylabel="density (1/x)", ylim=(0, 0.45), xticks=[-10, -7, 0, 7, 10])


def _samples(result: SweepResult, k: int, parameterisation: str, n: int, seed: int) -> np.ndarray:
    """Seed 0 of setting k, sampled from a stream keyed like its training (:func:`toy.popalign_toy.stream_seeds`):
    a setting shared by several experiments shows the same samples in each."""
    target = result.settings[k]["target"]
    generator = torch.Generator().manual_seed(stream_seeds(seed, target, 1)[0])
    return generate(run_mixture(result.model, k * result.seeds), n, parameterisation, generator=generator)[0].numpy()


def _reference_summary(target: float) -> dict:
    return summarise(reference_mixture(1), torch.tensor([target], dtype=torch.float64))[0]


def _bound_check(cfg: PopAlignToyConfig, result: SweepResult) -> dict:
    """Theorem 1 and 2 of theory/notes/popalign_bound.md on the preference sets the trained models were fit to.

    The exact log-ratios rho = log P_theta - log P_ref of the trained seed-0 model on its own preference sets, with mu
    the batch normaliser (alpha).
    """
    rho_w, rho_l = (rho[0] for rho in log_ratio_sets(result.model, reference_mixture(result.data.n_runs),
                                                     result.data))
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


def _shared_setting(cfg: PopAlignToyConfig, aggs: list[dict]) -> dict:
    """The shared setting (cfg.target, cfg.beta_prime, cfg.alpha) as this experiment measured it."""
    for agg in aggs:
        if (agg["target"], agg["beta_prime"], agg["alpha"]) == (cfg.target, cfg.beta_prime, cfg.alpha):
            return {k: agg[k] for k in ("target", "beta_prime", "alpha", "g1_share", "g1_share_std", "g2_weight",
                                        "g2_weight_std", "discrepancy", "discrepancy_std")}
    raise ValueError(f"the shared setting (target {cfg.target}, beta' {cfg.beta_prime}, alpha {cfg.alpha}) is not "
                     f"among this experiment's settings; keep it in targets, beta_primes and alphas")


def run_fig3(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    setting = [Setting(cfg.target, cfg.beta_prime, cfg.alpha)]
    # keyed streams: every method and parameterisation sees the same data and noise (a paired comparison)
    train_seed, sample_seed = ctx.seeds(2)
    trained = {(p, m): _sweep(cfg, setting, m, p, train_seed) for p in PARAMETERISATIONS for m in ("popalign", "sft")}
    reference = _reference_summary(cfg.target)

    ref_samples = reference_mixture(1).sample(cfg.n_generated, torch.Generator().manual_seed(sample_seed))[0].numpy()
    histograms = {}  # per parameterisation: the reference's, PopAlign's and SFT's samples (figure rows)
    for parameterisation in PARAMETERISATIONS:
        histograms[parameterisation] = [_histogram(ref_samples, reference_mixture(1), 0, "reference P_ref")]
        histograms[parameterisation][0].update({"g1_share": reference["g1_share"], "g1_share_std": 0.0,
                                                "g2_weight": reference["g2_weight"], "g2_weight_std": 0.0})
        for method, name in (("popalign", "PopAlign"), ("sft", "SFT")):
            res = trained[(parameterisation, method)]
            histograms[parameterisation].append(_histogram(
                _samples(res, 0, parameterisation, cfg.n_generated, sample_seed), res.model, 0,
                f"{name} ({parameterisation})", res.settings[0]))

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
        "shared_setting": _shared_setting(cfg, [by_param["diffusion"]["popalign"]]),
        "reproduces_fig3": {p: fig3_holds(by_param[p]) for p in PARAMETERISATIONS},
        "bound_check": {p: _bound_check(cfg, trained[(p, "popalign")]) for p in PARAMETERISATIONS},
        "histograms": histograms,
        "figure": "popalign_toy.png",
    }


def _legend_above(fig, ax) -> None:
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, frameon=False)


def plot_fig3(results: dict) -> dict:
    """Per parameterisation: reference, PopAlign and SFT samples with densities, and the reward accuracy."""
    cfg, by_param = results["config"], results["parameterisations"]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5), layout="constrained")
    for row, parameterisation in enumerate(PARAMETERISATIONS):
        for col, panel in enumerate(results["histograms"][parameterisation]):
            _histogram_panel(axes[row, col], panel)
        ax = axes[row, 3]
        for method, name in (("popalign", "PopAlign"), ("sft", "SFT")):
            acc = by_param[parameterisation][method]["reward_accuracy"]
            mean, sd = np.array(acc["mean"]), np.array(acc["sd"])
            style = METHOD_STYLE[method]
            ax.plot(acc["steps"], mean, color=style["color"], ls=style["ls"], label=f"{name} (mean ± sd)")
            ax.fill_between(acc["steps"], mean - sd, mean + sd, color=style["color"], alpha=0.2)
        ax.set_title(f"implied population reward accuracy ({parameterisation})", fontsize=9)
        ax.set(xlabel="training step (iterations)", ylabel="accuracy (share of set pairs)", ylim=(0, 1.05))
        ax.legend(loc="lower right", fontsize=8)
    _legend_above(fig, axes[0, 0])
    fig.suptitle(f"paper 001 Fig. 3 on the 1-D mixture: PopAlign vs SFT, target {cfg['target']:.0%} G1, "
                 f"beta' {cfg['beta_prime']}, alpha {cfg['alpha']}; mean ± sd over {cfg['seeds']} seeds")
    return {"popalign_toy": fig}


def run_targets(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    settings = [Setting(t, cfg.beta_prime, cfg.alpha) for t in cfg.targets]
    train_seed, sample_seed = ctx.seeds(2)
    res = _sweep(cfg, settings, "popalign", "diffusion", train_seed)
    histograms = [_histogram(_samples(res, k, "diffusion", cfg.n_generated, sample_seed), res.model, k * cfg.seeds,
                             f"target {agg['target']:.0%} G1", agg) for k, agg in enumerate(res.settings)]
    ref_g2 = _reference_summary(cfg.target)["g2_weight"]
    return {
        "targets": res.settings,
        "shared_setting": _shared_setting(cfg, res.settings),
        "all_within_0_1": all(abs(a["g1_share"] - a["target"]) <= 0.1 for a in res.settings),
        "all_keep_half_g2": all(a["g2_weight"] >= 0.5 * ref_g2 for a in res.settings),
        "max_abs_share_error": max(abs(a["g1_share"] - a["target"]) for a in res.settings),
        "reference": _reference_summary(cfg.target),
        "histograms": histograms,
        "figure": "popalign_toy_targets.png",
    }


def plot_targets(results: dict) -> dict:
    """Samples and densities of seed 0 for each target, and the achieved G1 share against the target."""
    panels, aggs, cfg = results["histograms"], results["targets"], results["config"]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 4.4), layout="constrained")
    for ax, panel in zip(axes, panels):
        _histogram_panel(ax, panel)
    _legend_above(fig, axes[0])
    ax = axes[-1]
    targets = np.array([a["target"] for a in aggs])
    ax.plot([0.4, 1.0], [0.4, 1.0], color="grey", ls=":", label="achieved = target")
    ax.errorbar(targets, [a["g1_share"] for a in aggs], yerr=[a["g1_share_std"] for a in aggs], fmt="o", capsize=3,
                label=f"PopAlign (mean ± sd, {cfg['seeds']} seeds)")
    ax.axhline(results["reference"]["g1_share"], color="k", ls="--", lw=1, label="reference")
    ax.set(xlabel="target G1 share (share)", ylabel="achieved G1 share within G1+G3 (share)",
           title="achieved vs target")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"paper 001 Fig. 11 on the 1-D mixture: PopAlign (diffusion, beta' {cfg['beta_prime']}) for "
                 f"non-uniform targets")
    return {"popalign_toy_targets": fig}


def _monotone(values: list[float], increasing: bool) -> bool:
    diffs = np.diff(values)
    return bool((diffs >= 0).all() if increasing else (diffs <= 0).all())


def run_beta(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    settings = [Setting(cfg.target, b, cfg.alpha) for b in cfg.beta_primes]
    res = _sweep(cfg, settings, "popalign", "diffusion", ctx.seeds(1)[0])
    aggs = res.settings
    beta_primes = np.array(cfg.beta_primes)
    disc = [a["discrepancy"] for a in aggs]
    best = int(np.argmin(disc))
    return {
        "beta_primes": aggs,
        "shared_setting": _shared_setting(cfg, aggs),
        "kl_to_reference_decreasing_in_beta": _monotone([a["kl_to_reference"] for a in aggs], increasing=False),
        "g1_share_increasing_in_beta": _monotone([a["g1_share"] for a in aggs], increasing=True),
        "beta_prime_of_min_discrepancy": float(beta_primes[best]),
        "discrepancy_increasing_above_best_beta": _monotone(disc[best:], increasing=True),
        "discrepancy_decreasing_below_best_beta": _monotone(disc[: best + 1], increasing=False),
        "reference": _reference_summary(cfg.target),
        "figure": "popalign_toy_beta.png",
    }


def plot_beta(results: dict) -> dict:
    """G1 share, G2 weight, discrepancy and KL to the reference against beta' (mean +- sd over seeds)."""
    cfg, aggs, ref = results["config"], results["beta_primes"], results["reference"]
    beta_primes = np.array(cfg["beta_primes"])
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4), layout="constrained")
    panels = (("g1_share", "G1 share within G1+G3 (share)"), ("g2_weight", "G2 weight (share)"),
              ("discrepancy", "discrepancy to target, eq. 11 (unitless)"),
              ("kl_to_reference", "KL(P_theta || P_ref) (nats)"))
    for ax, (key, label) in zip(axes, panels):
        ax.errorbar(beta_primes, [a[key] for a in aggs], yerr=[a[f"{key}_std"] for a in aggs], fmt="o-", capsize=3,
                    label=f"PopAlign (mean ± sd, {cfg['seeds']} seeds)")
        ax.axvline(cfg["beta_prime"], color="C2", ls=":", lw=1, label=f"beta' {cfg['beta_prime']} used elsewhere")
        ax.set(xscale="log", xlabel="beta' (unitless, log scale)", ylabel=label)
    axes[0].axhline(cfg["target"], color="grey", ls="-.", label="target")
    axes[0].axhline(ref["g1_share"], color="k", ls="--", label="reference")
    axes[1].axhline(ref["g2_weight"], color="k", ls="--")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(f"paper 001 Fig. 12 on the 1-D mixture: effect of beta' (diffusion, target {cfg['target']:.0%})")
    return {"popalign_toy_beta": fig}


def diverged_run(run: dict, ref_g2: float) -> bool:
    """A run "diverges" when it abandons the preference data's support: its mass drains into the unrelated G2 (more
    than half of the reference's G1 + G3 mass lost), or a parameter is not finite."""
    finite = all(np.isfinite(run[k]).all() for k in ("weights", "means", "stds"))
    return not finite or run["g2_weight"] > 1 - 0.5 * (1 - ref_g2)


def run_alpha(cfg: PopAlignToyConfig, ctx: RunContext) -> dict:
    settings = [Setting(cfg.target, cfg.beta_prime, a) for a in cfg.alphas]
    train_seed, sample_seed = ctx.seeds(2)
    results = {p: _sweep(cfg, settings, "popalign", p, train_seed) for p in PARAMETERISATIONS}
    ref_g2 = _reference_summary(cfg.target)["g2_weight"]
    histograms = {}  # per parameterisation, seed 0 of each alpha (figure rows)
    for p in PARAMETERISATIONS:
        histograms[p] = [_histogram(_samples(results[p], k, p, cfg.n_generated, sample_seed), results[p].model,
                                    k * cfg.seeds, f"{p}, alpha {agg['alpha']}", agg)
                         for k, agg in enumerate(results[p].settings)]
        for agg in results[p].settings:
            agg["diverged_runs"] = [diverged_run(run, ref_g2) for run in agg["runs"]]
    out = {p: results[p].settings for p in PARAMETERISATIONS}
    out["shared_setting"] = _shared_setting(cfg, results["diffusion"].settings)
    # a setting diverges when most of its seeds do
    out["diverged"] = {p: {str(a["alpha"]): sum(a["diverged_runs"]) > len(a["diverged_runs"]) / 2
                           for a in results[p].settings} for p in PARAMETERISATIONS}
    out["reference"] = _reference_summary(cfg.target)
    out["histograms"] = histograms
    out["figure"] = "popalign_toy_alpha.png"
    return out


def plot_alpha(results: dict) -> dict:
    """Samples and densities for each alpha, one row per parameterisation; discrepancy and G2 weight against alpha
    (mean +- sd over seeds), diverged runs marked."""
    cfg = results["config"]
    n = len(results["histograms"][PARAMETERISATIONS[0]])
    fig, axes = plt.subplots(2, n + 1, figsize=(4.4 * (n + 1), 8.5), layout="constrained", squeeze=False)
    for row, p in enumerate(PARAMETERISATIONS):
        for k, panel in enumerate(results["histograms"][p]):
            _histogram_panel(axes[row, k], panel)
    _legend_above(fig, axes[0, 0])
    for ax, key, label in ((axes[0, n], "discrepancy", "discrepancy to target, eq. 11 (unitless)"),
                           (axes[1, n], "g2_weight", "G2 weight (share)")):
        for p, style in zip(PARAMETERISATIONS, (dict(color="C0", ls="-", marker="o"),
                                                dict(color="C1", ls="--", marker="s"))):
            aggs = results[p]
            alphas = np.array([a["alpha"] for a in aggs])
            ax.errorbar(alphas, [a[key] for a in aggs], yerr=[a[f"{key}_std"] for a in aggs], capsize=3,
                        label=f"{p} (mean ± sd, {cfg['seeds']} seeds)", **style)
            for a in aggs:
                bad = [r[key] for r, d in zip(a["runs"], a["diverged_runs"]) if d]
                if bad:
                    ax.scatter([a["alpha"]] * len(bad), bad, marker="x", s=70, color="k", zorder=5)
                    ax.annotate(f"diverged {len(bad)}/{len(a['runs'])}\n({p})", (a["alpha"], max(bad)),
                                textcoords="offset points", xytext=(6, -14), fontsize=8)
        ax.set(xlabel="alpha (weight of winners in mu, unitless)", ylabel=label, xticks=cfg["alphas"])
        ax.legend(fontsize=8, loc="center right")
    axes[1, n].axhline(results["reference"]["g2_weight"], color="k", ls=":", lw=1)
    fig.suptitle(f"paper 001 Fig. 13 / App. A.3 on the 1-D mixture: effect of alpha in mu, beta' {cfg['beta_prime']}, "
                 f"target {cfg['target']:.0%} (x: diverged runs)")
    return {"popalign_toy_alpha": fig}


EXPERIMENTS = [
    Experiment("popalign-toy", make_config, run_fig3, plot_fig3),
    Experiment("popalign-toy-targets", make_config, run_targets, plot_targets),
    Experiment("popalign-toy-beta", make_config, run_beta, plot_beta),
    Experiment("popalign-toy-alpha", make_config, run_alpha, plot_alpha),
]
