"""``popalign-toy-cfg``: seed 001's Table 4 (the alpha of mu, App. A.3) and Fig. 6 (classifier-free guidance, App. A.1)
on the prompt-conditioned mixture of :mod:`toy.popalign_conditional`.

PopAlign (alpha 0.25 / 0.5 / 0.75) and SFT train the person prompt of the conditional toy in the diffusion
parameterisation, with the data, beta', steps and keyed streams of ``popalign-toy`` (:func:`toy.popalign_toy.sweep`).
The reference, SFT and PopAlign are then sampled with classifier-free guidance at several scales w, against each of
the two unconditional branches (balanced / biased), and every sample is classified G1 / G2 / G3 by the nearest
reference component. Per run and setting:

- discrepancy (seed 001, eq. 11; :func:`theory.metrics.discrepancy`) of the G1/G3 samples to the target;
- prompt alignment (the toy's CLIP score): the share of the person prompt's samples that show a person (G1 or G3);
- fidelity (the toy's HPS / aesthetic score): the mean log-density, in nats, of the person samples under the
  reference's component of their class, N(m_k, 1); the reference itself scores -0.5 log(2 pi e) = -1.419 at w = 1.

Mean and standard deviation over ``seeds`` training draws (the reference: over as many sampling draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from experiments.popalign_toy import diverged_run  # noqa: E402
from theory.metrics import discrepancy  # noqa: E402
from toy.popalign_conditional import (  # noqa: E402
    EMPTY,
    G1,
    G3,
    classify,
    conditional_reference,
    guided_samples,
    person_model,
    stack_runs,
)
from toy.popalign_toy import REFERENCE_MEANS, Setting, TrainConfig, summarise, sweep  # noqa: E402


@dataclass(frozen=True)
class CfgToyConfig:
    target: float = 0.5
    beta_prime: float = 1.0
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75)
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 3.0, 4.5, 6.5)
    table_scale: float = 1.0  # Table 4 is read at this guidance scale
    main_alpha: float = 0.5  # PopAlign's alpha in the guidance figure
    seeds: int = 5
    steps: int = 3000
    lr: float = 0.02
    n_samples: int = 1000
    set_size: int = 10
    n_eval: int = 1000


def make_config(quick: bool) -> CfgToyConfig:
    if quick:
        return CfgToyConfig(seeds=2, steps=1000, guidance_scales=(1.0, 3.0, 6.5), n_eval=300)
    return CfgToyConfig()


#: The reference log-density of a sample of its own component, E log N(x; m, 1) = -0.5 log(2 pi e).
REFERENCE_FIDELITY = -0.5 * math.log(2 * math.pi * math.e)
METRICS = ("discrepancy", "g1_share", "alignment", "fidelity")


def sample_metrics(x: torch.Tensor, target: float) -> list[dict]:
    """Per run (row of x): discrepancy and G1 share of the G1/G3 samples, prompt alignment and fidelity (module
    docstring); NaN where a run produced no G1/G3 sample."""
    cls = classify(x)
    means = torch.tensor(REFERENCE_MEANS, dtype=x.dtype)
    log_density = torch.distributions.Normal(means[cls], 1.0).log_prob(x)
    out = []
    for row, labels in enumerate(cls):
        person = (labels == G1) | (labels == G3)
        if not person.any():
            out.append({"discrepancy": math.nan, "g1_share": math.nan, "alignment": 0.0, "fidelity": math.nan})
            continue
        onehot = torch.stack([labels[person] == G1, labels[person] == G3], dim=1).double().numpy()
        out.append({"discrepancy": discrepancy(onehot, [target, 1 - target]),
                    "g1_share": float(onehot[:, 0].mean()), "alignment": float(person.double().mean()),
                    "fidelity": float(log_density[row, person].mean())})
    return out


def _aggregate(runs: list[dict]) -> dict:
    agg = {"runs": runs}
    for key in METRICS:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        finite = values[np.isfinite(values)]
        agg[key] = float(finite.mean()) if finite.size else math.nan
        agg[f"{key}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        agg[f"{key}_nan_runs"] = int((~np.isfinite(values)).sum())  # counted, never silently dropped
    return agg


def run_cfg(cfg: CfgToyConfig, ctx: RunContext) -> dict:
    train_seed, eval_seed = ctx.seeds(2)
    train_config = dict(parameterisation="diffusion", steps=cfg.steps, lr=cfg.lr)
    common = dict(seed=train_seed, n_samples=cfg.n_samples, set_size=cfg.set_size, model=person_model,
                  reference=person_model)
    popalign = sweep([Setting(cfg.target, cfg.beta_prime, a) for a in cfg.alphas], cfg.seeds,
                     TrainConfig(method="popalign", **train_config), **common)
    sft = sweep([Setting(cfg.target, cfg.beta_prime, cfg.main_alpha)], cfg.seeds, TrainConfig(method="sft", **train_config),
                **common)
    ref_person = summarise(person_model(1), torch.tensor([cfg.target], dtype=torch.float64))[0]

    # every group of runs: name, setting summary (exact weights), and its rows in the stacked batch
    groups = [("reference", None)] + [("sft", sft.settings[0])] + [
        (f"popalign_alpha_{a['alpha']}", a) for a in popalign.settings]
    batch = stack_runs([conditional_reference(cfg.seeds), sft.model.conditional, popalign.model.conditional])
    evaluation = {}
    for empty, index in EMPTY.items():
        evaluation[empty] = {name: [] for name, _ in groups}
        for scale in cfg.guidance_scales:
            generator = torch.Generator().manual_seed(eval_seed)  # common random numbers across groups and scales
            per_run = sample_metrics(guided_samples(batch, index, scale, cfg.n_eval, generator=generator), cfg.target)
            for k, (name, _) in enumerate(groups):
                agg = _aggregate(per_run[k * cfg.seeds:(k + 1) * cfg.seeds])
                evaluation[empty][name].append(dict(agg, guidance_scale=scale))

    training = {}
    for name, setting in groups[1:]:
        flags = [diverged_run(run, ref_person["g2_weight"]) for run in setting["runs"]]
        training[name] = {"alpha": setting["alpha"], "method": "sft" if name == "sft" else "popalign",
                          "diverged_runs": flags, **{k: setting[k] for k in (
                              "g1_share", "g1_share_std", "g2_weight", "g2_weight_std", "discrepancy",
                              "discrepancy_std", "kl_to_reference", "kl_to_reference_std")}}
    table_index = list(cfg.guidance_scales).index(cfg.table_scale)
    table4 = [{"group": name, **{k: evaluation["balanced"][name][table_index][k] for k in
                                 [m for key in METRICS for m in (key, f"{key}_std", f"{key}_nan_runs")]},
               "diverged_runs": sum(training[name]["diverged_runs"]) if name in training else 0}
              for name, _ in groups]
    return {"groups": [name for name, _ in groups], "reference_person": ref_person, "training": training,
            "evaluation": evaluation, "table4": table4, "reference_fidelity": REFERENCE_FIDELITY}


GROUP_STYLE = {"reference": dict(color="k", ls="--", marker="s", label="reference"),
               "sft": dict(color="C3", ls="-.", marker="^", label="SFT"),
               "popalign_alpha_0.25": dict(color="C1", ls=":", marker="v", label="PopAlign alpha 0.25"),
               "popalign_alpha_0.5": dict(color="C0", ls="-", marker="o", label="PopAlign alpha 0.5"),
               "popalign_alpha_0.75": dict(color="C2", ls=(0, (5, 1)), marker="D", label="PopAlign alpha 0.75")}
METRIC_LABELS = {"discrepancy": "discrepancy to 50/50, eq. 11 (unitless; lower is better)",
                 "alignment": "prompt alignment: share showing G1/G3 (share)",
                 "fidelity": "fidelity: log N(x; m_class, 1) (nats; higher is better)"}


def _style(name: str) -> dict:
    return GROUP_STYLE.get(name, dict(color="grey", ls="-", marker=".", label=name))


def plot(results: dict) -> dict:
    """Fig. 6 (metrics against w, per unconditional branch) and Table 4 (metrics per alpha at the table's w)."""
    cfg = results["config"]
    shown = ["reference", "sft", f"popalign_alpha_{cfg['main_alpha']}"]
    fig6, axes = plt.subplots(2, 3, figsize=(16, 8.5), layout="constrained", squeeze=False)
    for row, empty in enumerate(results["evaluation"]):
        for col, key in enumerate(("discrepancy", "alignment", "fidelity")):
            ax = axes[row, col]
            for name in shown:
                rows = results["evaluation"][empty][name]
                w = np.array([r["guidance_scale"] for r in rows])
                mean, sd = np.array([r[key] for r in rows]), np.array([r[f"{key}_std"] for r in rows])
                style = _style(name)
                ax.plot(w, mean, color=style["color"], ls=style["ls"], marker=style["marker"],
                        label=f"{style['label']} (mean ± sd)")
                ax.fill_between(w, mean - sd, mean + sd, color=style["color"], alpha=0.15)
                nan_w = [r["guidance_scale"] for r in rows if r[f"{key}_nan_runs"]]
                if nan_w:
                    ax.scatter(nan_w, np.zeros(len(nan_w)), marker="x", color=style["color"], s=60)
            if key == "fidelity":
                ax.axhline(results["reference_fidelity"], color="grey", ls=":", lw=1)
            ax.set(xlabel="guidance scale w (unitless)", ylabel=METRIC_LABELS[key],
                   title=f"unconditional branch {empty}", xticks=cfg["guidance_scales"])
    fig6.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
    fig6.suptitle(f"paper 001 Fig. 6 (CFG ablation) on the conditional 1-D mixture: person prompt, PopAlign alpha "
                  f"{cfg['main_alpha']}, beta' {cfg['beta_prime']}; mean ± sd over {cfg['seeds']} seeds")

    table = results["table4"]
    fig4, axes = plt.subplots(1, 3, figsize=(16, 3.8), layout="constrained", sharey=True)
    y = np.arange(len(table))[::-1]
    for ax, key in zip(axes, ("discrepancy", "alignment", "fidelity")):
        for yi, r in zip(y, table):
            style = _style(r["group"])
            ax.errorbar(r[key], yi, xerr=r[f"{key}_std"], capsize=3, color=style["color"], marker=style["marker"],
                        ms=7, ls="none")
            if r["diverged_runs"]:
                ax.scatter([r[key]], [yi], marker="x", s=120, color="k", zorder=5)
                ax.annotate(f"diverged {r['diverged_runs']}/{cfg['seeds']}", (r[key], yi), xytext=(6, 6),
                            textcoords="offset points", fontsize=8)
        ax.set(xlabel=METRIC_LABELS[key], yticks=y, yticklabels=[_style(r["group"])["label"] for r in table],
               ylim=(-0.6, len(table) - 0.4))
        ax.grid(axis="x", alpha=0.3)
    axes[2].axvline(results["reference_fidelity"], color="grey", ls=":", lw=1, label="E log N(x; m, 1) = -1.419")
    axes[2].legend(loc="lower right", fontsize=8)
    fig4.suptitle(f"paper 001 Table 4 (alpha of mu) on the conditional 1-D mixture at w = {cfg['table_scale']}: "
                  f"mean ± sd over {cfg['seeds']} seeds")
    return {"popalign_toy_cfg": fig6, "popalign_toy_table4": fig4}


EXPERIMENTS = [Experiment("popalign-toy-cfg", make_config, run_cfg, plot)]
