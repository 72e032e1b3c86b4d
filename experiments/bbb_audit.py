"""``bbb-audit``: a biased alignment scorer prefers a biased generator; subclass-score and average-then-score (seed 003).

Feature model of ``toy.audit_features``: the neutral prompt of profession 0 leans to group 0 ("man") with strength
``stereotype``; the subclass prompts leak a fraction ``leak`` of that stereotype. For each leak and each scorer
(plain cosine, subclass-score, average-then-score) it reports

- Q(only group 0) - Q(balanced 50/50), the mean raw score of two generators of profession-0 images (> 0: the
  auditor ranks the biased generator first), and for the plain scorer the exact identity
  <e/||e||, mu_0 - (mu_0 + mu_1)/2> of theory.alignment_audit evaluated on the same images;
- the multi-accuracy and multi-calibration gaps over the two groups of the score calibrated (Platt) on the pooled
  audit set (images of profession 0, true alignment 1, and of a distractor profession, true alignment 0).

Each quantity is measured on ``n_repeats`` independent image sets (streams of ``SeedSequence(seed).spawn``) and
reported as mean and standard deviation over them; "ranks the biased generator first" means a mean above three
standard errors of the mean.
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
    n_repeats: int = 10  # independent image sets: the spread drawn as error bars


def make_config(quick: bool) -> AuditConfig:
    return AuditConfig(n_per_cell=2000, leaks=(0.0, 0.5, 1.0), n_repeats=4) if quick else AuditConfig()


def audit_one(cfg: AuditConfig, leak: float, rng: np.random.Generator) -> dict:
    """One image set at one leak: per scorer the biased-minus-balanced preference and the two gaps."""
    model = FeatureModel(dim=cfg.dim, gamma=cfg.gamma, tau=cfg.tau, kappa=cfg.kappa, leak=leak)
    n = cfg.n_per_cell
    professions = np.repeat([0, 0, 1, 1], n)
    groups = np.repeat([0, 1, 0, 1], n)
    features = model.image_features(professions, groups, rng)
    truth = (professions == 0).astype(float)
    target = professions == 0
    out = {}
    for name, raw in raw_scores(model, features, 0, cfg.stereotype).items():
        men, women = raw[target & (groups == 0)], raw[target & (groups == 1)]
        # Q(only men) - Q(half men, half women) = (mean_men - mean_women) / 2 for equal-size balanced generators
        diff = generator_score(men) - 0.5 * (generator_score(men) + generator_score(women))
        calibrated = platt_calibrate(raw, truth)
        out[name] = {
            "biased_minus_balanced": float(diff),
            "multiaccuracy_gap": multiaccuracy_gap(calibrated, truth, groups),
            "multicalibration_gap": multicalibration_gap(calibrated, truth, groups, cfg.n_bins),
        }
    means = np.array([features[target & (groups == g)].mean(axis=0) for g in (0, 1)])
    out["plain"]["identity_biased_minus_balanced"] = biased_minus_balanced_score(
        model.neutral_prompt(0, cfg.stereotype), means)
    return out


def summarise_leak(leak: float, repeats: list[dict]) -> dict:
    """Mean and sd over the repeats of one leak, and the per-repeat values (``*_runs``)."""
    row: dict = {"leak": leak}
    for name in SCORERS:
        entry: dict = {}
        for key in ("biased_minus_balanced", "multiaccuracy_gap", "multicalibration_gap"):
            values = np.array([r[name][key] for r in repeats])
            entry[key], entry[f"{key}_sd"], entry[f"{key}_runs"] = float(values.mean()), float(values.std(ddof=1)), values
        sem = entry["biased_minus_balanced_sd"] / np.sqrt(len(repeats))
        entry["ranks_biased_first"] = bool(entry["biased_minus_balanced"] > 3 * sem)
        row[name] = entry
    row["plain"]["identity_biased_minus_balanced_runs"] = np.array(
        [r["plain"]["identity_biased_minus_balanced"] for r in repeats])
    return row


def run(cfg: AuditConfig, ctx: RunContext) -> dict:
    if cfg.n_repeats < 2:
        raise ValueError(f"n_repeats must be at least 2 (a standard deviation needs two image sets); got {cfg.n_repeats}")
    rngs = [np.random.default_rng(s) for s in ctx.seeds(cfg.n_repeats)]
    rows = [summarise_leak(leak, [audit_one(cfg, leak, rng) for rng in rngs]) for leak in cfg.leaks]
    zero = rows[0]
    return {
        "plain_ranks_biased_first": all(r["plain"]["ranks_biased_first"] for r in rows),
        "repaired_at_zero_leak": {name: not zero[name]["ranks_biased_first"] for name in ("subclass", "average")},
        "rows": rows,
        "figure": "bbb_audit.png",
    }


def plot(results: dict) -> dict:
    """The auditor's preference, multi-accuracy and multi-calibration gaps against the leak (mean ± sd over the
    repeats), from ``results`` (seed 003, "alignment auditing": subclass-score and average-then-score)."""
    rows, cfg = results["rows"], results["config"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    leaks = np.array([r["leak"] for r in rows])
    styles = {"plain": ("o", "-"), "subclass": ("s", "--"), "average": ("^", ":")}
    labels = {"plain": "plain cosine score", "subclass": "subclass-score", "average": "average-then-score"}
    offsets = {"plain": -0.012, "subclass": 0.0, "average": 0.012}  # so that overlapping error bars stay apart
    for name in SCORERS:
        marker, ls = styles[name]
        for ax, key in zip(axes, ("biased_minus_balanced", "multiaccuracy_gap", "multicalibration_gap")):
            ax.errorbar(leaks + offsets[name], [r[name][key] for r in rows], yerr=[r[name][f"{key}_sd"] for r in rows],
                        marker=marker, ls=ls, ms=5, capsize=3, label=labels[name])
    axes[0].axhline(0, color="grey", lw=1)
    leak_label = "stereotype leaked into the subclass prompts (share)"
    axes[0].set(xlabel=leak_label, ylabel="Q(only men) - Q(balanced) (cosine score)",
                title="auditor's preference for the biased generator")
    axes[1].set(xlabel=leak_label, ylabel="max_g |E[y - s | g]| (probability)", title="multi-accuracy gap")
    axes[2].set(xlabel=leak_label, ylabel="max_(g,v) |E[(y - s) 1(s in v) | g]| (probability)",
                title=f"multi-calibration gap ({cfg['n_bins']} score bins)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=3, fontsize=9,
               title=f"mean ± sd over {cfg['n_repeats']} image sets of {cfg['n_per_cell']} per (profession, group)")
    fig.suptitle(f"Alignment auditing with a biased prompt embedding (paper 003), feature-model toy, "
                 f"stereotype b = {cfg['stereotype']}")
    return {"bbb_audit": fig}


EXPERIMENTS = [Experiment("bbb-audit", make_config, run, plot)]
