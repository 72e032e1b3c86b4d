"""``ot-targets``: the expected OT targets of the DAL (seed 000, [0105]-[0106]) — exact, closed form and Monte Carlo.

For a biased batch of N = 24 images (p_i1 ~ Beta(2, 5): the generator favours class 2) it plots q_i1 against p_i1
for the targets 50/50 and 75/25, computed three ways (K = 2 closed form, exact enumeration of the class counts,
Monte Carlo with its standard error) beside the hard targets of the fixed split that [0105] sets aside (one OT to
exactly N d_k images per class), checks a K = 3 target exact against Monte Carlo, and times the methods side by
side. ``benchmarks/ot_targets.py`` runs the same timing over the full grid of N and K.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from experiments.timing import seconds_per_call, timed_call  # noqa: E402
from theory.optimal_transport import (  # noqa: E402
    EXACT_MAX_COUNT_VECTORS,
    capacitated_assignment,
    expected_ot_targets,
    n_count_vectors,
    ot_cost_matrix,
)

#: Exact enumeration is timed only up to this many count vectors (N = 32, K = 4 has 6545), to keep runs short.
TIMED_EXACT_MAX_COUNT_VECTORS = 10_000


@dataclass(frozen=True)
class OTTargetsConfig:
    n_images: int = 24
    binary_targets: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.75, 0.25))
    multiclass_target: tuple[float, ...] = (0.5, 0.3, 0.2)
    probs_beta: tuple[float, float] = (2.0, 5.0)
    mc_samples: int = 1000
    threshold: float = 0.8
    timing_sizes: tuple[int, ...] = (24, 32, 160)
    timing_classes: tuple[int, ...] = (2, 4)
    timing_repeats: int = 5


def make_config(quick: bool) -> OTTargetsConfig:
    if quick:
        return OTTargetsConfig(timing_sizes=(24,), timing_classes=(2,), timing_repeats=3)
    return OTTargetsConfig()


def biased_batch(n: int, k: int, rng: np.random.Generator, beta: tuple[float, float] = (2.0, 5.0)) -> np.ndarray:
    """Classifier probabilities of a batch biased away from class 1: p_i1 ~ Beta(beta), the rest Dirichlet-split."""
    p1 = rng.beta(*beta, size=n)
    rest = rng.dirichlet(np.ones(k - 1), size=n) * (1.0 - p1)[:, None]
    return np.column_stack([p1, rest])


def method_timings(n: int, k: int, *, mc_samples: int, seed: int, repeats: int = 5) -> dict:
    """Seconds per call of each method on one biased batch of N images and K classes, measured side by side.

    Also reports the max |MC - exact| where exact enumeration is timed. Methods that do not apply (the closed form
    for K > 2) or that the exact method would refuse are ``None``.
    """
    rng = np.random.default_rng(seed)
    probs = biased_batch(n, k, rng)
    target = np.full(k, 1.0 / k)
    row: dict = {"n": n, "k": k, "mc_samples": mc_samples, "count_vectors": n_count_vectors(n, k)}
    cost = ot_cost_matrix(probs)
    counts = rng.multinomial(n, target)
    row["one_assignment_s"] = seconds_per_call(lambda: capacitated_assignment(cost, counts), repeats=repeats)
    row["closed_form_s"] = (
        seconds_per_call(lambda: expected_ot_targets(probs, target, method="binary"), repeats=repeats) if k == 2 else None
    )
    q_mc, row["mc_s"] = timed_call(
        lambda: expected_ot_targets(probs, target, method="mc", n_samples=mc_samples, seed=seed), repeats=repeats
    )
    if row["count_vectors"] <= min(TIMED_EXACT_MAX_COUNT_VECTORS, EXACT_MAX_COUNT_VECTORS):
        q_exact, row["exact_s"] = timed_call(lambda: expected_ot_targets(probs, target, method="exact"),
                                             repeats=repeats)
        row["max_abs_error_mc_vs_exact"] = float(np.abs(q_mc - q_exact).max())
    else:
        row["exact_s"] = None
        row["max_abs_error_mc_vs_exact"] = None
    if row["closed_form_s"] is not None:
        row["speedup_closed_form_vs_mc"] = row["mc_s"] / row["closed_form_s"]
        row["speedup_closed_form_vs_one_assignment"] = row["one_assignment_s"] / row["closed_form_s"]
    return row


def _binomial_pvalues(q_mc: np.ndarray, q_exact: np.ndarray, n_samples: int) -> np.ndarray:
    """Two-sided exact binomial p-value of each Monte Carlo entry given the exact probability.

    Each entry of q_mc is the mean of ``n_samples`` indicators with success probability q_exact (no tied images
    here), so its count is Binomial(n_samples, q_exact) when both are right. An exact test, rather than a z-score,
    because many entries are rare events (q ~ 1e-6) for which the normal approximation fails.
    """
    counts = np.rint(q_mc * n_samples).astype(int).ravel()
    return np.array([binomtest(int(c), n_samples, float(min(max(p, 0.0), 1.0))).pvalue
                     for c, p in zip(counts, q_exact.ravel())])


def run(cfg: OTTargetsConfig, ctx: RunContext) -> dict:
    # independent streams for the batches, each Monte Carlo estimate and the timings (RunContext.seeds)
    data_seed, multiclass_mc_seed, timing_seed, *binary_mc_seeds = ctx.seeds(3 + len(cfg.binary_targets))
    rng = np.random.default_rng(data_seed)
    probs = biased_batch(cfg.n_images, 2, rng, cfg.probs_beta)
    panels, errors, pvalues = [], [], []
    for target, mc_seed in zip(cfg.binary_targets, binary_mc_seeds):
        d = np.asarray(target)
        q_closed = expected_ot_targets(probs, d, method="binary")
        q_exact = expected_ot_targets(probs, d, method="exact")
        q_mc, se_mc = expected_ot_targets(probs, d, method="mc", n_samples=cfg.mc_samples, seed=mc_seed,
                                          return_stderr=True)
        # [0105]'s alternative: a fixed set of u's, exactly N d_k of class k (rounded), i.e. one OT, hard targets
        fixed_counts = np.rint(cfg.n_images * d).astype(int)
        fixed_class = capacitated_assignment(ot_cost_matrix(probs), fixed_counts)
        errors.append(np.abs(q_mc - q_exact).max())
        pvalues.append(_binomial_pvalues(q_mc, q_exact, cfg.mc_samples))
        panels.append({
            "target": list(target), "p1": probs[:, 0], "q1_closed_form": q_closed[:, 0], "q1_exact": q_exact[:, 0],
            "q1_mc": q_mc[:, 0], "q1_mc_stderr": se_mc[:, 0],
            "q1_fixed_split": (fixed_class == 0).astype(float), "fixed_split_counts": fixed_counts,
            "max_abs_error_closed_form_vs_exact": float(np.abs(q_closed - q_exact).max()),
            "max_abs_error_mc_vs_exact": float(errors[-1]),
            "sum_q1_minus_n_d1": float(q_exact[:, 0].sum() - cfg.n_images * d[0]),
            "fraction_confident": float((q_exact.max(axis=1) >= cfg.threshold).mean()),
            "_arrays": (q_closed, q_exact, q_mc, se_mc),
        })

    k3 = len(cfg.multiclass_target)
    probs3 = biased_batch(cfg.n_images, k3, rng, cfg.probs_beta)
    q3_exact = expected_ot_targets(probs3, cfg.multiclass_target, method="exact")
    q3_mc, se3 = expected_ot_targets(probs3, cfg.multiclass_target, method="mc", n_samples=cfg.mc_samples,
                                     seed=multiclass_mc_seed, return_stderr=True)
    errors.append(np.abs(q3_mc - q3_exact).max())
    pvalues.append(_binomial_pvalues(q3_mc, q3_exact, cfg.mc_samples))

    timings = [method_timings(n, k, mc_samples=cfg.mc_samples, seed=timing_seed, repeats=cfg.timing_repeats)
               for k in cfg.timing_classes for n in cfg.timing_sizes]
    n24 = next(r for r in timings if r["n"] == 24 and r["k"] == 2)

    for panel in panels:
        panel.pop("_arrays")  # their first columns are the panel's q1_* lists, which the plot reads

    return {
        "max_abs_error_mc_vs_exact": float(max(errors)),
        # Bonferroni-corrected smallest p-value of the exact binomial test of every MC entry against the exact one
        "mc_vs_exact_min_pvalue_bonferroni": float(min(1.0, np.concatenate(pvalues).min() * sum(map(len, pvalues)))),
        "speedup_closed_form_vs_mc_n24": float(n24["speedup_closed_form_vs_mc"]),
        "speedup_closed_form_vs_one_assignment_n24": float(n24["speedup_closed_form_vs_one_assignment"]),
        "binary_panels": panels,
        "multiclass": {"target": list(cfg.multiclass_target), "max_abs_error_mc_vs_exact": float(errors[-1]),
                       "sum_q_minus_n_d": (q3_exact.sum(axis=0) - cfg.n_images * np.asarray(cfg.multiclass_target)),
                       "q_exact": q3_exact, "q_mc": q3_mc, "q_mc_stderr": se3},
        "timings": timings,
        "figure": "ot_targets.png",
    }


def plot(results: dict) -> dict:
    """Three figures from ``results`` (seed 000, [0105]-[0106]): ``ot_targets``, the expected targets q_i1 against
    p_i1 for the binary targets (closed form, exact, MC, and the fixed split's hard targets); ``ot_targets_multiclass``,
    MC against exact for K = 3; ``ot_targets_cost``, the seconds per call of each method."""
    return {"ot_targets": _binary_figure(results), "ot_targets_multiclass": _multiclass_figure(results),
            "ot_targets_cost": _cost_figure(results)}


def _binary_figure(results: dict):
    cfg, panels = results["config"], results["binary_panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), layout="constrained", sharey=True,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        p1 = np.asarray(panel["p1"])
        order = np.argsort(p1)
        ax.step(p1[order], np.asarray(panel["q1_fixed_split"])[order], where="mid", color="0.6", lw=1.2, ls="--",
                label=f"fixed split (one OT, {'/'.join(map(str, panel['fixed_split_counts']))} images)")
        ax.plot(p1[order], np.asarray(panel["q1_closed_form"])[order], "-", color="C0", lw=1.5,
                label="closed form P(M >= r_i)")
        ax.plot(p1, panel["q1_exact"], "x", color="k", ms=7, label="exact enumeration")
        ax.errorbar(p1, panel["q1_mc"], yerr=2 * np.asarray(panel["q1_mc_stderr"]), fmt="o", ms=3, color="C1",
                    alpha=0.8, label=f"Monte Carlo ± 2 s.e. ({cfg['mc_samples']} draws)")
        for level in (cfg["threshold"], 1 - cfg["threshold"]):
            ax.axhline(level, color="C2", ls=":", lw=1)
        ax.set(xlabel="classifier probability p_i1 (probability)", ylim=(-0.05, 1.05),
               title=f"target {panel['target'][0]:.0%}/{panel['target'][1]:.0%}: "
                     f"{panel['fraction_confident']:.0%} of images pass C = {cfg['threshold']}")
    axes[0, 0].set_ylabel("expected OT target q_i1 (probability)")
    axes[0, 0].plot([], [], color="C2", ls=":", lw=1, label=f"confidence threshold C = {cfg['threshold']} (and 1 - C)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(f"Expected OT targets of the DAL (paper 000, [0105]-[0106]): N = {cfg['n_images']}, "
                 f"p_i1 ~ Beta{tuple(cfg['probs_beta'])}")
    return fig


def _multiclass_figure(results: dict):
    cfg, multi = results["config"], results["multiclass"]
    q_exact, q_mc, se = (np.asarray(multi[k]) for k in ("q_exact", "q_mc", "q_mc_stderr"))
    fig, ax = plt.subplots(figsize=(5.2, 5.0), layout="constrained")
    for k, marker in zip(range(q_exact.shape[1]), "os^D"):
        ax.errorbar(q_exact[:, k], q_mc[:, k], yerr=2 * se[:, k], fmt=marker, ms=4, alpha=0.8, capsize=2,
                    label=f"class {k + 1} (d = {multi['target'][k]})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="MC = exact")
    ax.set(xlabel="exact q_ik (probability)", ylabel="Monte Carlo q_ik ± 2 s.e. (probability)", aspect="equal",
           xlim=(-0.03, 1.03), ylim=(-0.03, 1.03),
           title=f"K = {len(multi['target'])}, N = {cfg['n_images']}: max |MC - exact| = "
                 f"{multi['max_abs_error_mc_vs_exact']:.3f}\n(Bonferroni binomial p = "
                 f"{results['mc_vs_exact_min_pvalue_bonferroni']:.2f}, all panels)")
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Expected OT targets (paper 000, [0105]): exact enumeration vs Monte Carlo", fontsize=10)
    return fig


def _cost_figure(results: dict):
    cfg, timings = results["config"], results["timings"]
    fig, ax = plt.subplots(figsize=(8, 4.6), layout="constrained")
    xs = np.arange(len(timings))
    methods = (("closed_form_s", "closed form (K = 2 only)", "C0", ""),
               ("one_assignment_s", "one OT assignment", "C7", "//"),
               ("exact_s", f"exact enumeration (timed up to {TIMED_EXACT_MAX_COUNT_VECTORS} count vectors)", "k", ""),
               ("mc_s", f"Monte Carlo ({cfg['mc_samples']} draws)", "C1", ".."))
    width = 0.2
    floor = min(r[key] for r in timings for key, *_ in methods if r[key] is not None) / 3
    for j, (key, name, colour, hatch) in enumerate(methods):
        offset = (j - 1.5) * width
        vals = np.array([r[key] if r[key] is not None else np.nan for r in timings])
        ax.bar(xs + offset, vals, width=width, color=colour, hatch=hatch, edgecolor="white", label=name)
        for x in xs[np.isnan(vals)]:  # a method that does not apply is said, not left as a silent gap
            ax.text(x + offset, floor * 1.3, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.minorticks_off()  # log-axis minor ticks cost most of the redraw time and add nothing readable here
    ax.set_ylim(bottom=floor)
    ax.set_xticks(xs, [f"N = {r['n']}\nK = {r['k']}" for r in timings], fontsize=8)
    ax.set(ylabel=f"seconds per call (s; min of {cfg['timing_repeats']} repeats)",
           title=f"closed form vs Monte Carlo at N = 24, K = 2: {results['speedup_closed_form_vs_mc_n24']:.0f}x faster")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("Cost of the expected OT targets (paper 000, [0105]): measured side by side on this machine",
                 fontsize=10)
    return fig


EXPERIMENTS = [Experiment("ot-targets", make_config, run, plot)]
