"""``bbb-audit``: a biased alignment scorer prefers a biased generator; subclass-score and average-then-score (seed 003).

Feature model of ``toy.audit_features``: the neutral prompt of profession 0 leans to group 0 ("man") with strength
``stereotype``; the subclass prompts leak a fraction ``leak`` of that stereotype. For each leak and each scorer
(plain cosine, subclass-score, average-then-score) it reports

- Q(only group 0) - Q(balanced 50/50), the mean raw score of two generators of profession-0 images (> 0: the
  auditor ranks the biased generator first), with its standard error, and for the plain scorer the exact identity
  <e/||e||, mu_0 - (mu_0 + mu_1)/2> of theory.alignment_audit evaluated on the same images;
- the multi-accuracy and multi-calibration gaps over the two groups of the score calibrated (Platt) on the pooled
  audit set (images of profession 0, true alignment 1, and of a distractor profession, true alignment 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.alignment_audit import biased_minus_balanced_score, generator_score  # noqa: E402
from theory.fairness_criteria import multiaccuracy_gap, multicalibration_gap  # noqa: E402
from toy.audit_features import FeatureModel, platt_calibrate, raw_scores  # noqa: E402

SCORERS = ("plain", "subclass", "average")


@dataclass(frozen=True)
class AuditConfig:
    n_per_cell: int = 5000  # images per (profession, group)
    stereotype: float = 0.6
    leaks: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    dim: int = 32
    gamma: float = 0.8
    tau: float = 2.0
    kappa: float = 0.8
    n_bins: int = 10


def make_config(quick: bool) -> AuditConfig:
    return AuditConfig(n_per_cell=2000, leaks=(0.0, 0.5, 1.0)) if quick else AuditConfig()


def audit_one(cfg: AuditConfig, leak: float, rng: np.random.Generator) -> dict:
    model = FeatureModel(dim=cfg.dim, gamma=cfg.gamma, tau=cfg.tau, kappa=cfg.kappa, leak=leak)
    n = cfg.n_per_cell
    professions = np.repeat([0, 0, 1, 1], n)
    groups = np.repeat([0, 1, 0, 1], n)
    features = model.image_features(professions, groups, rng)
    truth = (professions == 0).astype(float)
    target = professions == 0
    out = {"leak": leak}
    for name, raw in raw_scores(model, features, 0, cfg.stereotype).items():
        men, women = raw[target & (groups == 0)], raw[target & (groups == 1)]
        # Q(only men) - Q(half men, half women) = (mean_men - mean_women) / 2 for equal-size balanced generators
        diff = generator_score(men) - 0.5 * (generator_score(men) + generator_score(women))
        se = 0.5 * np.sqrt(men.var(ddof=1) / men.size + women.var(ddof=1) / women.size)
        calibrated = platt_calibrate(raw, truth)
        out[name] = {
            "biased_minus_balanced": float(diff), "stderr": float(se),
            "ranks_biased_first": bool(diff > 3 * se),
            "multiaccuracy_gap": multiaccuracy_gap(calibrated, truth, groups),
            "multicalibration_gap": multicalibration_gap(calibrated, truth, groups, cfg.n_bins),
        }
    means = np.array([features[target & (groups == g)].mean(axis=0) for g in (0, 1)])
    out["plain"]["identity_biased_minus_balanced"] = biased_minus_balanced_score(
        model.neutral_prompt(0, cfg.stereotype), means)
    return out


def run(cfg: AuditConfig, ctx: RunContext) -> dict:
    rng = np.random.default_rng(ctx.seed)
    rows = [audit_one(cfg, leak, rng) for leak in cfg.leaks]
    zero = rows[0]
    return {
        "plain_ranks_biased_first": all(r["plain"]["ranks_biased_first"] for r in rows),
        "repaired_at_zero_leak": {name: not zero[name]["ranks_biased_first"] for name in ("subclass", "average")},
        "rows": rows,
        "figure": "bbb_audit.png",
    }


def plot(results: dict) -> dict:
    """The auditor's preference, multi-accuracy and multi-calibration gaps against the leak, from ``results``."""
    rows, cfg = results["rows"], results["config"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    leaks = np.array([r["leak"] for r in rows])
    for name in SCORERS:
        axes[0].errorbar(leaks, [r[name]["biased_minus_balanced"] for r in rows],
                         yerr=[2 * r[name]["stderr"] for r in rows], fmt="o-", ms=4, label=name)
        axes[1].plot(leaks, [r[name]["multiaccuracy_gap"] for r in rows], "o-", ms=4, label=name)
        axes[2].plot(leaks, [r[name]["multicalibration_gap"] for r in rows], "o-", ms=4, label=name)
    axes[0].axhline(0, color="grey", lw=1)
    axes[0].set(xlabel="stereotype leaked into subclass prompts", ylabel="Q(only men) - Q(balanced)",
                title="auditor's preference for the biased generator")
    axes[1].set(xlabel="stereotype leaked into subclass prompts", ylabel="max_g |E[y - s | g]|", title="multi-accuracy gap")
    axes[2].set(xlabel="stereotype leaked into subclass prompts", ylabel="max_(g,v) |E[(y-s)1(s in v) | g]|",
                title=f"multi-calibration gap ({cfg['n_bins']} bins)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"Alignment auditing with a biased prompt embedding (seed 003), stereotype b = {cfg['stereotype']}")
    return {"bbb_audit": fig}


EXPERIMENTS = [Experiment("bbb-audit", make_config, run, plot)]
