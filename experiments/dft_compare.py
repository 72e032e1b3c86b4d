"""``dft-compare``: SFT vs PopAlign (seed 001) vs DAL + adjusted DFT (seed 000) on the PopAlign 1-D mixture toy:
discrepancy to the target G1 share and the unrelated G2 mass kept, mean and sd over seeds.

SFT and PopAlign are the runs of ``popalign-toy`` (same config, same keyed streams of
:func:`toy.popalign_toy.sweep`), so the two experiments report the same numbers for them."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.dal import dal_loss  # noqa: E402
from toy.attribute_classifiers import g1_g3_logits  # noqa: E402
from toy.denoisers import MixtureAsDenoiser  # noqa: E402
from toy.sampler_chain import finetune, make_sampler  # noqa: E402


@dataclass(frozen=True)
class CompareConfig:
    target: float = 0.5
    beta_prime: float = 1.0  # PopAlign's beta' (eq. 9), the setting of popalign-toy
    popalign_steps: int = 3000
    dal_iterations: int = 300
    dal_steps: int = 20
    batch: int = 24
    threshold: float = 0.8
    lr: float = 0.02
    seeds: int = 5


def run_compare(cfg: CompareConfig, ctx: RunContext) -> dict:
    from theory.schedules import linear_betas
    from toy.popalign_toy import G2, Setting, TrainConfig, reference_mixture, summarise, sweep

    target = torch.tensor([cfg.target], dtype=torch.float64)
    # SFT and PopAlign share keyed data streams (paired); the first child is popalign-toy's training seed
    sweep_seed, *dal_seeds = ctx.seeds(1 + cfg.seeds)
    rows = {}
    for method in ("sft", "popalign"):
        res = sweep([Setting(cfg.target, cfg.beta_prime)], cfg.seeds,
                    TrainConfig(method=method, parameterisation="diffusion", steps=cfg.popalign_steps), seed=sweep_seed)
        rows[method] = res.settings[0]
    sampler = make_sampler("ddim", linear_betas(1000).numpy(), cfg.dal_steps)
    reference_model = reference_mixture(1)
    dal_target = [cfg.target, 1 - cfg.target]

    def dal_everywhere(z0: torch.Tensor) -> torch.Tensor:
        return dal_loss(g1_g3_logits(z0), dal_target, cfg.threshold)

    def dal_on_detected(z0: torch.Tensor) -> torch.Tensor:
        # the seed applies the DAL only to images with a face ([0108]); here: samples the reference assigns to G1/G3
        with torch.no_grad():
            detected = reference_model.posterior(z0.T.detach())[0, :, G2] < 0.5
        if int(detected.sum()) < 2:
            return z0.sum() * 0.0
        return dal_loss(g1_g3_logits(z0[detected]), dal_target, cfg.threshold) * detected.double().mean()

    for name, loss_fn in (("dal_adft", dal_everywhere), ("dal_adft_detected", dal_on_detected)):
        runs = []
        for dal_seed in dal_seeds:
            mixture = reference_mixture(1)
            finetune(MixtureAsDenoiser(mixture), sampler, loss_fn, "adjusted", dim=1, iterations=cfg.dal_iterations,
                     batch=cfg.batch, lr=cfg.lr, seed=dal_seed)
            runs.append(summarise(mixture, target)[0])
        rows[name] = {key: float(np.mean([r[key] for r in runs])) for key in ("g1_share", "g2_weight", "discrepancy")}
        rows[name].update({f"{key}_std": float(np.std([r[key] for r in runs], ddof=1)) if cfg.seeds > 1 else 0.0
                           for key in ("g1_share", "g2_weight", "discrepancy")})
        rows[name]["runs"] = runs
    reference = summarise(reference_model, target)[0]
    table = []
    for m in METHODS:
        kept = [r["g2_weight"] / reference["g2_weight"] for r in rows[m]["runs"]]
        table.append({"method": m, "g1_share": rows[m]["g1_share"], "g1_share_std": rows[m]["g1_share_std"],
                      "g2_weight": rows[m]["g2_weight"], "g2_weight_std": rows[m]["g2_weight_std"],
                      "g2_kept_fraction": float(np.mean(kept)),
                      "g2_kept_fraction_std": float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0,
                      "discrepancy": rows[m]["discrepancy"], "discrepancy_std": rows[m]["discrepancy_std"]})
    return {"target_g1_share": cfg.target, "reference": reference, "table": table, "methods": rows,
            "figure": "dft_compare.png"}


#: The methods in table order and their names on the figure (horizontal bars: long names stay readable).
METHODS = ("sft", "popalign", "dal_adft", "dal_adft_detected")
METHOD_NAMES = {"sft": "SFT (paper 001)", "popalign": "PopAlign (paper 001)",
                "dal_adft": "DAL + aDFT, all samples (paper 000)",
                "dal_adft_detected": "DAL + aDFT, detected G1/G3 only (paper 000)"}


def plot(results: dict) -> dict:
    """Discrepancy to the target and unrelated G2 mass kept per method (mean +- sd over seeds), from ``results``."""
    cfg, table = results["config"], results["table"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained", sharey=True)
    y = np.arange(len(table))[::-1]
    names = [METHOD_NAMES.get(r["method"], r["method"]) for r in table]
    axes[0].barh(y, [r["discrepancy"] for r in table], xerr=[r["discrepancy_std"] for r in table], capsize=3,
                 color="C0")
    axes[0].set(yticks=y, yticklabels=names, xlabel="discrepancy to target, eq. 11 (unitless; lower is better)",
                title=f"discrepancy to target {cfg['target']:.0%} G1")
    axes[1].barh(y, [r["g2_kept_fraction"] for r in table], xerr=[r["g2_kept_fraction_std"] for r in table],
                 capsize=3, color="C2")
    axes[1].axvline(1.0, color="k", ls="--", lw=1, label="reference's G2 mass")
    axes[1].set(xlabel="G2 mass kept (fraction of the reference's; 1 = kept)", title="unrelated G2 mass kept")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"SFT vs PopAlign vs DAL + aDFT on the paper 001 1-D mixture toy: mean ± sd over {cfg['seeds']} "
                 f"seeds")
    return {"dft_compare": fig}


def make_config(quick: bool) -> CompareConfig:
    return CompareConfig(popalign_steps=2000, dal_iterations=150, seeds=2) if quick else CompareConfig()


EXPERIMENTS = [Experiment("dft-compare", make_config, run_compare, plot)]
