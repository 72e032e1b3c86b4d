"""``dft-bt-scale`` (paper 000, Fig. 6b, [0117]): ||R A_t B_t g_t||, ||R A_t g_t||, ||R g_t|| over t on the SD noise
schedule, DDPM T = 1000, R ~ N(0, 1e-4 I), for exact, trained, untrained and expanding toy noise predictors and a small
diffusers UNet trained on the 8x8 digits (the case closest to Stable Diffusion that runs on a CPU).

A panel "explodes" when the mean over runs of ||R A_t B_t g_t|| / ||R A_t g_t|| (= ||R B_t g_t|| / ||R g_t||; 1 at
t = 1, where B_1 = I) exceeds :data:`EXPLOSION_FACTOR` at some t >= 0.9 T: the paper's "explodes as t -> 1000". The
cause is the growth of B_t, the product of the factors (I - c_s J_s) (theory/notes/sampler_gradient.md), recorded as
||B_t||_2 for the toys and as ||R B_t|| / ||R|| for the UNet, whose 64 x 64 products are not formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.dft_models import SD_BETAS, mixture_model, trained_mlp  # noqa: E402
from experiments.digits_unet import step_indexed_unet, trained_digits_unet  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from scaleup.gradient_terms import term_norms  # noqa: E402
from theory.ddpm import ddpm_coefficients  # noqa: E402
from theory.sampler_gradient import ddpm_a_coefficients  # noqa: E402
from toy.denoisers import LinearDenoiser, MixtureDenoiser  # noqa: E402
from toy.sampler_chain import GRADIENT_TERMS, gradient_scales, make_sampler  # noqa: E402

#: The rule for "explodes": the mean ratio ||R A_t B_t g_t|| / ||R A_t g_t|| above this at some t >= 0.9 T.
EXPLOSION_FACTOR = 10.0
UNET_MODELS = ("unet-digits",)


@dataclass(frozen=True)
class BtScaleConfig:
    runs: int = 20
    dim: int = 2
    r_std: float = 1e-2  # R ~ N(0, 1e-4 I), as in the seed
    models: tuple[str, ...] = ("gaussian", "mixture", "mlp-trained", "mlp-untrained", "linear-negative", "unet-digits")
    mlp_train_steps: int = 500
    # the digits UNet (experiments.digits_unet): 8x8x1 = 64 dimensions, block channels (16, 32), 164k parameters
    unet_train_steps: int = 1500
    unet_runs: int = 20  # chains, as the paper's 20 runs
    unet_every: int = 10  # the three norms at every 10th t (100 values); the adjoint itself covers every t


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


def _term_entry(terms: dict[str, np.ndarray], t_axis: np.ndarray) -> tuple[dict, dict]:
    """Summaries of the three norms (runs, n_t) at the t of ``t_axis``: the curves for the figure (mean and 90% band
    over runs, as the paper's Fig. 6b) and the ratio behind the explosion rule."""
    entry, curves = {}, {"t": t_axis.tolist()}
    stride = max(1, len(t_axis) // 20)
    for key in GRADIENT_TERMS:
        v = terms[key]
        lo, mid, hi = np.quantile(v, 0.05, axis=0), v.mean(axis=0), np.quantile(v, 0.95, axis=0)
        entry[key] = {"t": t_axis[::stride].tolist(), "mean": mid[::stride].tolist(), "q05": lo[::stride].tolist(),
                      "q95": hi[::stride].tolist()}
        curves[key] = {"mean": mid, "q05": lo, "q95": hi}
    ratio = (terms["exact_term"] / terms["term_without_B"]).mean(axis=0)  # mean over runs, per t
    late = t_axis >= 0.9 * t_axis.max()
    entry["ratio_exact_over_without_B_at_T"] = float(ratio[np.argmax(t_axis)])
    entry["max_ratio_late"] = float(ratio[late].max())
    entry["explodes"] = bool(entry["max_ratio_late"] > EXPLOSION_FACTOR)
    curves["ratio_mean"] = ratio
    return entry, curves


def run_bt_scale(cfg: BtScaleConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddpm", SD_BETAS, 1000)
    c = ddpm_coefficients(SD_BETAS)["c"][::-1]  # sampling order
    t_axis = np.arange(1000, 0, -1)
    # spawned children are the same for any count, so adding the UNet's streams leaves the toys' draws as they were
    draw_seed, model_seed, unet_seed, unet_draw_seed = ctx.seeds(4)
    rng = np.random.default_rng(draw_seed)
    out, all_curves = {}, {}
    for name in cfg.models:
        if name in UNET_MODELS:
            out[name], all_curves[name] = _unet_case(cfg, unet_seed, unet_draw_seed, progress=not ctx.quick)
            continue
        model = _bt_model(name, cfg.dim, model_seed, cfg.mlp_train_steps)
        z_T = torch.as_tensor(rng.standard_normal((cfg.runs, cfg.dim)))
        r = rng.normal(0.0, cfg.r_std, (cfg.runs, cfg.dim))
        scales = gradient_scales(model, sampler, z_T, r)
        eigs = scales["jacobian_eigs"]  # (runs, n, d)
        growing = np.abs(1 - c[None, :, None] * eigs) > 1  # the condition of the seed for B_t to grow
        entry, curves = _term_entry(scales, t_axis)
        entry.update({"kind": "toy", "dim": cfg.dim, "runs": cfg.runs,
                      "fraction_steps_with_growing_direction": float(growing.any(axis=2).mean()),
                      "min_jacobian_eig": float(eigs.min()), "max_jacobian_eig": float(eigs.max())})
        b_norm = scales["B_norm"]
        entry["growth_measure"] = "||B_t||_2"
        entry["growth_mean_at_t"] = {str(t): float(b_norm[:, 1000 - t].mean()) for t in (1, 10, 100, 500, 900, 1000)}
        curves["growth_mean"] = b_norm.mean(axis=0)
        out[name] = entry
        all_curves[name] = curves
    return {"models": out, "t": t_axis, "curves": all_curves, "explosion_factor": EXPLOSION_FACTOR,
            "figure": "dft_bt_scale.png"}


def _unet_case(cfg: BtScaleConfig, seed: int, draw_seed: int, progress: bool) -> tuple[dict, dict]:
    """The digits UNet: trained, then ``unet_runs`` chains of T = 1000 DDPM steps, float64, one adjoint pass each
    batch (:func:`scaleup.gradient_terms.term_norms`)."""
    unet, losses = trained_digits_unet(seed, cfg.unet_train_steps, progress=progress)
    gen = torch.Generator().manual_seed(draw_seed)
    shape = (cfg.unet_runs, 1, 8, 8)
    z_T = torch.randn(shape, generator=gen, dtype=torch.float64)
    r = torch.randn(shape, generator=gen, dtype=torch.float64) * cfg.r_std
    noises = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(len(SD_BETAS))]
    terms = term_norms(step_indexed_unet(unet), SD_BETAS, z_T, r, noises, every=cfg.unet_every)
    entry, curves = _term_entry(terms, terms["t"])
    a = np.abs(ddpm_a_coefficients(SD_BETAS))  # index t - 1
    growth = terms["RB_growth_all"]  # (runs, T): ||R B_t|| / ||R|| at every t, sampling order
    entry.update({"kind": "unet", "dim": 64, "runs": cfg.unet_runs, "train_steps": cfg.unet_train_steps,
                  "parameters": int(sum(p.numel() for p in unet.parameters())),
                  "train_loss_last100": float(np.mean(losses[-100:])) if losses else None,
                  "growth_measure": "||R B_t|| / ||R||",
                  "growth_mean_at_t": {str(t): float(growth[:, 1000 - t].mean()) for t in (1, 10, 100, 500, 900, 1000)},
                  "A_t_at_T": float(a[-1]), "A_t_at_1": float(a[0])})
    curves["growth_mean"] = growth.mean(axis=0)
    return entry, curves


def plot(results: dict) -> dict:
    """Mean and 90% band of the three gradient terms over t, one panel per model, explosion marked, from ``results``."""
    t_all = np.asarray(results["t"])
    names = list(results["models"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.7 * rows), squeeze=False, layout="constrained")
    styles = {"exact_term": ("C0", "-"), "term_without_B": ("C1", "--"), "adjusted_term": ("C2", ":")}
    for ax, name in zip(axes.flat, names):
        entry, curves = results["models"][name], results["curves"][name]
        t = np.asarray(curves.get("t", t_all))
        for key, (color, ls) in styles.items():
            ax.plot(t, curves[key]["mean"], color=color, ls=ls, lw=1.5, label=GRADIENT_TERMS[key])
            ax.fill_between(t, curves[key]["q05"], curves[key]["q95"], color=color, alpha=0.18, lw=0)
        g = entry["growth_mean_at_t"]
        verdict = "EXPLODES" if entry["explodes"] else "no explosion"
        # the numbers behind the verdict go in the title: a box inside the axes would cover the curves
        ax.set(yscale="log", xlabel="t (DDPM step)", ylabel="gradient norm (unitless)")
        ax.set_title(f"{name} (d = {entry['dim']}, {entry['runs']} runs): {verdict}\n"
                     f"max ratio exact/without-B at t ≥ 900: {entry['max_ratio_late']:.2g}; "
                     f"{entry['growth_measure']} at t = T: {g['1000']:.2g}", fontsize=9,
                     color="C3" if entry["explodes"] else "black")
        ax.set_xticks([1, 250, 500, 750, 1000])
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9,
               title="mean over runs (line) and 5-95% band over runs (shaded); g_t = d eps_t / d theta, "
                     "R ~ N(0, 1e-4 I)", title_fontsize=9)
    fig.suptitle(f"paper 000, Fig. 6b: scale of the gradient terms over t (SD schedule, DDPM T = 1000)\n"
                 f"explodes = mean ratio ||R A_t B_t g_t|| / ||R A_t g_t|| > {results['explosion_factor']:g} at some "
                 f"t ≥ 900; the ratio grows only where B_t grows (its size at t = T in each title)", fontsize=10)
    return {"dft_bt_scale": fig}


def make_config(quick: bool) -> BtScaleConfig:
    if quick:
        return BtScaleConfig(runs=4, models=("gaussian", "linear-negative", "unet-digits"), unet_train_steps=20,
                             unet_runs=1, unet_every=100)
    return BtScaleConfig()


EXPERIMENTS = [Experiment("dft-bt-scale", make_config, run_bt_scale, plot)]
