"""``dft-bt-scale`` (seed 000, Fig. 6b): ||R A_t B_t g_t||, ||R A_t g_t||, ||R g_t|| over t on the SD noise schedule,
DDPM T = 1000, for exact, trained, untrained and expanding noise predictors."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.dft_models import SD_BETAS, mixture_model, trained_mlp  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.ddpm import ddpm_coefficients  # noqa: E402
from toy.denoisers import LinearDenoiser, MixtureDenoiser  # noqa: E402
from toy.sampler_chain import GRADIENT_TERMS, gradient_scales, make_sampler  # noqa: E402


@dataclass(frozen=True)
class BtScaleConfig:
    runs: int = 20
    dim: int = 2
    r_std: float = 1e-2  # R ~ N(0, 1e-4 I), as in the seed
    models: tuple[str, ...] = ("gaussian", "mixture", "mlp-trained", "mlp-untrained", "linear-negative")
    mlp_train_steps: int = 500


def _bt_model(name: str, d: int, seed: int, train_steps: int) -> torch.nn.Module:
    if name == "gaussian":
        return MixtureDenoiser(torch.tensor([1.0]), torch.full((1, d), 0.5, dtype=torch.float64), torch.tensor([0.5]))
    if name == "mixture":
        return mixture_model(d, seed, spread=2.0, std=0.1)
    if name == "mlp-trained":
        return trained_mlp(d, seed, train_steps)
    if name == "mlp-untrained":
        return trained_mlp(d, seed, 0)
    if name == "linear-negative":
        return LinearDenoiser(d, -1.0)
    raise ValueError(f"unknown model {name!r}")


def run_bt_scale(cfg: BtScaleConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddpm", SD_BETAS, 1000)
    c = ddpm_coefficients(SD_BETAS)["c"][::-1]  # sampling order
    t_axis = np.arange(1000, 0, -1)
    draw_seed, model_seed = ctx.seeds(2)
    rng = np.random.default_rng(draw_seed)
    out, all_curves = {}, {}
    for name in cfg.models:
        model = _bt_model(name, cfg.dim, model_seed, cfg.mlp_train_steps)
        z_T = torch.as_tensor(rng.standard_normal((cfg.runs, cfg.dim)))
        r = rng.normal(0.0, cfg.r_std, (cfg.runs, cfg.dim))
        scales = gradient_scales(model, sampler, z_T, r)
        eigs = scales["jacobian_eigs"]  # (runs, n, d)
        growing = np.abs(1 - c[None, :, None] * eigs) > 1  # the condition of the seed for B_t to grow
        curves = {}
        entry = {"fraction_steps_with_growing_direction": float(growing.any(axis=2).mean()),
                 "min_jacobian_eig": float(eigs.min()), "max_jacobian_eig": float(eigs.max())}
        for key, color in zip(GRADIENT_TERMS, ("C0", "C1", "C2")):
            v = scales[key]
            lo, mid, hi = np.quantile(v, 0.05, axis=0), v.mean(axis=0), np.quantile(v, 0.95, axis=0)
            entry[key] = {"t": t_axis[::50].tolist(), "mean": mid[::50].tolist(), "q05": lo[::50].tolist(),
                          "q95": hi[::50].tolist()}
            curves[key] = {"mean": mid, "q05": lo, "q95": hi}  # at every t, for the figure
        b_norm = scales["B_norm"]
        entry["B_norm_mean_at_t"] = {str(t): float(b_norm[:, 1000 - t].mean()) for t in (1, 10, 100, 500, 900, 1000)}
        entry["ratio_exact_over_without_B_at_T"] = float(
            (scales["exact_term"][:, 0] / scales["term_without_B"][:, 0]).mean())
        entry["explodes_towards_T"] = bool(entry["B_norm_mean_at_t"]["1000"] > 10 * entry["B_norm_mean_at_t"]["10"])
        out[name] = entry
        all_curves[name] = curves
    return {"models": out, "t": t_axis, "curves": all_curves, "figure": "dft_bt_scale.png"}


def plot(results: dict) -> dict:
    """Mean and 90% band of the three gradient terms over t, one panel per model, from ``results``."""
    cfg, t_axis = results["config"], results["t"]
    names = list(results["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        entry, curves = results["models"][name], results["curves"][name]
        for key, color in zip(GRADIENT_TERMS, ("C0", "C1", "C2")):
            ax.plot(t_axis, curves[key]["mean"], color=color, label=GRADIENT_TERMS[key])
            ax.fill_between(t_axis, curves[key]["q05"], curves[key]["q95"], color=color, alpha=0.2)
        ax.set(yscale="log", xlabel="t", title=f"{name}: ||B_T|| = {entry['B_norm_mean_at_t']['1000']:.2g}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Scale of the gradient terms over t (seed 000, Fig. 6b): SD schedule, DDPM T = 1000, "
                 f"d = {cfg['dim']}, {cfg['runs']} runs, mean and 90% band")
    return {"dft_bt_scale": fig}


def make_config(quick: bool) -> BtScaleConfig:
    return BtScaleConfig(runs=4, models=("gaussian", "linear-negative")) if quick else BtScaleConfig()


EXPERIMENTS = [Experiment("dft-bt-scale", make_config, run_bt_scale, plot)]
