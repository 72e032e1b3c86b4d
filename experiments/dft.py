"""Direct finetuning through the sampler (seed 000, [0110]-[0117], Algorithm A.1, Fig. 6a/6b).

- ``dft-eq9``: eq. 9 (-sum_t A_t B_t d eps_t/d theta) against autograd's dz_0/dtheta through the whole chain.
- ``dft-bt-scale`` (Fig. 6b): ||R A_t B_t g_t||, ||R A_t g_t||, ||R g_t|| over t on the SD noise schedule, 20 runs.
- ``dft-training`` (Fig. 6a): finetuning toward a fixed target with the exact, adjusted and unstandardised gradients.
- ``dft-dal-toy``: the DAL (theory.dal.dal_loss) with the adjusted gradient on a prompt-conditioned mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.experiment import Experiment, RunContext, spawn_seeds  # noqa: E402
from theory.dal import dal_loss  # noqa: E402
from theory.ddpm import ddpm_coefficients  # noqa: E402
from theory.sampler_gradient import GRADIENT_MODES, AdjustedGradient, run_sampler  # noqa: E402
from theory.schedules import alphas_cumprod, scaled_linear_betas  # noqa: E402
from toy.denoisers import LinearDenoiser, MixtureDenoiser, MLPDenoiser, PromptMixtureDenoiser  # noqa: E402
from toy.sampler_chain import (  # noqa: E402
    GRADIENT_TERMS,
    eps_model_for,
    eq9_relative_error,
    finetune,
    gradient_scales,
    make_sampler,
)

SD_BETAS = scaled_linear_betas(1000).numpy()


def _gmm(d: int, seed: int, spread: float = 2.0, std: float = 0.3) -> MixtureDenoiser:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(3, d, generator=gen, dtype=torch.float64) * spread
    return MixtureDenoiser(torch.tensor([0.5, 0.3, 0.2]), means, torch.full((3,), std))


def _mlp(d: int, seed: int, steps: int) -> MLPDenoiser:
    """An MLP trained (briefly) on samples of the same mixture (``_gmm(d, seed)``): an imperfect, generic network.

    Its training data, initial weights and batches come from streams spawned from ``seed`` (not ``seed`` itself,
    which already drew the mixture's means)."""
    teacher = _gmm(d, seed)
    data_seed, init_seed, fit_seed = spawn_seeds(seed, 3)
    gen = torch.Generator().manual_seed(data_seed)
    comp = torch.multinomial(torch.softmax(teacher.logits.detach(), 0), 4000, replacement=True, generator=gen)
    data = teacher.means.detach()[comp] + torch.exp(teacher.log_stds.detach())[comp, None] * torch.randn(
        4000, d, generator=gen, dtype=torch.float64)
    mlp = MLPDenoiser(d, hidden=16, seed=init_seed)
    if steps:
        mlp.fit(data, alphas_cumprod(torch.as_tensor(SD_BETAS)), steps=steps, seed=fit_seed)
    return mlp


# ---------------------------------------------------------------------------------------------------- dft-eq9
@dataclass(frozen=True)
class Eq9Config:
    dims: tuple[int, ...] = (1, 2, 4)
    samplers: tuple[tuple[str, int], ...] = (("ddpm", 1000), ("ddim", 20), ("ddim", 50), ("dpmsolver++", 20))
    mlp_train_steps: int = 300


def run_eq9(cfg: Eq9Config, ctx: RunContext) -> dict:
    rows = []
    streams = ctx.seeds(2 * len(cfg.dims))  # per dimension: the models (2i), the chains' noises (2i + 1)
    for i, d in enumerate(cfg.dims):
        gen = torch.Generator().manual_seed(streams[2 * i + 1])
        model_seed = streams[2 * i]
        for model_name, model in (("mixture", _gmm(d, model_seed)), ("mlp", _mlp(d, model_seed, cfg.mlp_train_steps))):
            for kind, n in cfg.samplers:
                noises = [torch.randn(1, d, generator=gen, dtype=torch.float64) for _ in range(n)] if kind == "ddpm" else None
                sampler = make_sampler(kind, SD_BETAS, n, noises=noises)
                z_T = torch.randn(1, d, generator=gen, dtype=torch.float64)
                rows.append({"dim": d, "model": model_name, "sampler": kind, "steps": n,
                             "rel_error": eq9_relative_error(model, sampler, z_T)})
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['model']}\nd={r['dim']}\n{r['sampler']}{r['steps']}" for r in rows]
    ax.bar(range(len(rows)), [max(r["rel_error"], 1e-18) for r in rows])
    ax.axhline(1e-10, color="r", ls="--", label="1e-10 target")
    ax.set(yscale="log", ylabel="max |eq. 9 - autograd| / max |autograd|", title="Eq. 9 of seed 000 vs autograd (float64)")
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.legend()
    figure = ctx.save_figure(fig, "dft_eq9")
    plt.close(fig)
    return {"max_rel_error": max(r["rel_error"] for r in rows), "rows": rows, "figure": figure}


# ---------------------------------------------------------------------------------------------------- dft-bt-scale
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
        return _gmm(d, seed, spread=2.0, std=0.1)
    if name == "mlp-trained":
        return _mlp(d, seed, train_steps)
    if name == "mlp-untrained":
        return _mlp(d, seed, 0)
    if name == "linear-negative":
        return LinearDenoiser(d, -1.0)
    raise ValueError(f"unknown model {name!r}")


def run_bt_scale(cfg: BtScaleConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddpm", SD_BETAS, 1000)
    c = ddpm_coefficients(SD_BETAS)["c"][::-1]  # sampling order
    t_axis = np.arange(1000, 0, -1)
    draw_seed, model_seed = ctx.seeds(2)
    rng = np.random.default_rng(draw_seed)
    fig, axes = plt.subplots(1, len(cfg.models), figsize=(5 * len(cfg.models), 4), squeeze=False)
    out = {}
    for ax, name in zip(axes[0], cfg.models):
        model = _bt_model(name, cfg.dim, model_seed, cfg.mlp_train_steps)
        z_T = torch.as_tensor(rng.standard_normal((cfg.runs, cfg.dim)))
        r = rng.normal(0.0, cfg.r_std, (cfg.runs, cfg.dim))
        scales = gradient_scales(model, sampler, z_T, r)
        eigs = scales["jacobian_eigs"]  # (runs, n, d)
        growing = np.abs(1 - c[None, :, None] * eigs) > 1  # the condition of the seed for B_t to grow
        entry = {"fraction_steps_with_growing_direction": float(growing.any(axis=2).mean()),
                 "min_jacobian_eig": float(eigs.min()), "max_jacobian_eig": float(eigs.max())}
        for key, color in zip(GRADIENT_TERMS, ("C0", "C1", "C2")):
            v = scales[key]
            lo, mid, hi = np.quantile(v, 0.05, axis=0), v.mean(axis=0), np.quantile(v, 0.95, axis=0)
            ax.plot(t_axis, mid, color=color, label=GRADIENT_TERMS[key])
            ax.fill_between(t_axis, lo, hi, color=color, alpha=0.2)
            entry[key] = {"t": t_axis[::50].tolist(), "mean": mid[::50].tolist(), "q05": lo[::50].tolist(),
                          "q95": hi[::50].tolist()}
        b_norm = scales["B_norm"]
        entry["B_norm_mean_at_t"] = {str(t): float(b_norm[:, 1000 - t].mean()) for t in (1, 10, 100, 500, 900, 1000)}
        entry["ratio_exact_over_without_B_at_T"] = float(
            (scales["exact_term"][:, 0] / scales["term_without_B"][:, 0]).mean())
        entry["explodes_towards_T"] = bool(entry["B_norm_mean_at_t"]["1000"] > 10 * entry["B_norm_mean_at_t"]["10"])
        out[name] = entry
        ax.set(yscale="log", xlabel="t", title=f"{name}: ||B_T|| = {entry['B_norm_mean_at_t']['1000']:.2g}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Scale of the gradient terms over t (seed 000, Fig. 6b): SD schedule, DDPM T = 1000, d = {cfg.dim}, "
                 f"{cfg.runs} runs, mean and 90% band")
    figure = ctx.save_figure(fig, "dft_bt_scale")
    plt.close(fig)
    return {"models": out, "figure": figure}


# ---------------------------------------------------------------------------------------------------- dft-training
@dataclass(frozen=True)
class TrainingConfig:
    dim: int = 2
    sampler: str = "ddim"
    steps: int = 20
    iterations: int = 150
    batch: int = 32
    lr: float = 0.02
    seeds: int = 5  # repeats, each with its own mixture and batches; the headline is mean and sd over them
    target: tuple[float, ...] = (1.5, -1.0)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the per-seed values."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def run_training(cfg: TrainingConfig, ctx: RunContext) -> dict:
    sampler = make_sampler(cfg.sampler, SD_BETAS, cfg.steps)
    target = torch.tensor(cfg.target, dtype=torch.float64)
    streams = ctx.seeds(2 * cfg.seeds)  # repeat r: its mixture's means from stream 2r, its batches from 2r + 1
    curves = {}
    for mode in GRADIENT_MODES:  # every mode sees the same mixtures and batches: a paired comparison
        curves[mode] = [finetune(_gmm(cfg.dim, streams[2 * r]), sampler,
                                 lambda z0: (z0 - target).square().sum(1).mean(), mode, dim=cfg.dim, iterations=cfg.iterations,
                                 batch=cfg.batch, lr=cfg.lr, seed=streams[2 * r + 1])
                        for r in range(cfg.seeds)]
    tail = max(1, cfg.iterations // 10)
    per_seed = {m: [float(np.mean(c[-tail:])) for c in curves[m]] for m in GRADIENT_MODES}
    final = {m: _mean_sd(per_seed[m]) for m in GRADIENT_MODES}
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, color in zip(GRADIENT_MODES, ("C3", "C0", "C2")):
        arr = np.array(curves[mode])
        ax.plot(arr.mean(0), color=color, label=f"{mode}: final {final[mode][0]:.3g} +- {final[mode][1]:.2g}")
        ax.fill_between(np.arange(arr.shape[1]), arr.min(0), arr.max(0), color=color, alpha=0.2)
    ax.set(yscale="log", xlabel="iteration", ylabel="E ||z_0 - target||^2",
           title=f"Finetuning through {cfg.sampler} ({cfg.steps} steps), mean and range over {cfg.seeds} seeds "
                 f"(seed 000, Fig. 6a)")
    ax.legend(fontsize=8)
    figure = ctx.save_figure(fig, "dft_training")
    plt.close(fig)
    return {"final_loss": {m: final[m][0] for m in GRADIENT_MODES},
            "final_loss_sd": {m: final[m][1] for m in GRADIENT_MODES},
            "final_loss_per_seed": per_seed,
            "initial_loss": float(np.mean([c[0] for c in curves["exact"]])),
            "curves": {m: np.array(curves[m]).mean(0).tolist() for m in GRADIENT_MODES}, "figure": figure}


# ---------------------------------------------------------------------------------------------------- dft-dal-toy
@dataclass(frozen=True)
class DalToyConfig:
    targets: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.75, 0.25))
    bias: float = 0.85  # initial share of attribute class 0
    content_share: float = 0.6  # initial share of content type 0, which the attribute does not touch
    steps: int = 20
    iterations: int = 200
    batch: int = 24  # seed 000 uses N = 24 for gender
    threshold: float = 0.8
    lr: float = 0.05
    n_eval: int = 2000
    seeds: int = 5  # repeats (training batches and evaluation draws); the headline is mean and sd over them


# components: (attribute, content) = (0,0), (0,1), (1,0), (1,1); attribute along x, content along y
_MEANS = torch.tensor([[-3.0, -3.0], [-3.0, 3.0], [3.0, -3.0], [3.0, 3.0]], dtype=torch.float64)
_ATTRIBUTE = torch.tensor([0, 0, 1, 1])


def _prompt_model(cfg: DalToyConfig) -> PromptMixtureDenoiser:
    weights = torch.tensor([cfg.bias * cfg.content_share, cfg.bias * (1 - cfg.content_share),
                            (1 - cfg.bias) * cfg.content_share, (1 - cfg.bias) * (1 - cfg.content_share)],
                           dtype=torch.float64)
    projection = torch.eye(4, dtype=torch.float64)  # prompt embedding -> component logits
    return PromptMixtureDenoiser(projection, torch.zeros(4), weights.log(), _MEANS, torch.full((4,), 0.7))


def attribute_logits(model: MixtureDenoiser, z0: torch.Tensor) -> torch.Tensor:
    """The exact attribute classifier: log p(attribute | z_0) with equal priors over the four clean components."""
    reference = MixtureDenoiser(torch.full((4,), 0.25), _MEANS, torch.exp(model.log_stds.detach()))
    log_joint = torch.log(reference.posterior(z0))  # (B, 4), uniform prior
    return torch.stack([torch.logsumexp(log_joint[:, _ATTRIBUTE == a], dim=1) for a in (0, 1)], dim=1)


def _shares(model: PromptMixtureDenoiser, sampler, n: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z0 = run_sampler(eps_model_for(model, sampler), torch.randn(n, 2, generator=gen, dtype=torch.float64),
                         sampler.step, sampler.n_steps, AdjustedGradient("exact"))
    w = model.weights.detach()
    return {"attribute0_freq": float((attribute_logits(model, z0).argmax(1) == 0).double().mean()),
            "content0_freq": float((z0[:, 1] < 0).double().mean()),
            "attribute0_mass": float(w[_ATTRIBUTE == 0].sum()),
            "content0_mass": float(w[0] + w[2]),
            "content0_within_attribute": [float(w[0] / (w[0] + w[1])), float(w[2] / (w[2] + w[3]))]}


def run_dal_toy(cfg: DalToyConfig, ctx: RunContext) -> dict:
    sampler = make_sampler("ddim", SD_BETAS, cfg.steps)
    # stream 0 evaluates the (deterministic) initial model; run (k, r) trains on 1 + 2 (k R + r), evaluates on the next
    streams = ctx.seeds(1 + 2 * len(cfg.targets) * cfg.seeds)
    before = _shares(_prompt_model(cfg), sampler, cfg.n_eval, streams[0])
    runs = []
    fig, axes = plt.subplots(1, len(cfg.targets) + 1, figsize=(5 * (len(cfg.targets) + 1), 4.5))
    for k, target in enumerate(cfg.targets):
        per_seed = []
        for r in range(cfg.seeds):
            train_seed, eval_seed = streams[1 + 2 * (k * cfg.seeds + r)], streams[2 + 2 * (k * cfg.seeds + r)]
            model = _prompt_model(cfg)
            losses = finetune(model, sampler, lambda z0, t=target, m=model: dal_loss(attribute_logits(m, z0), list(t),
                                                                                        cfg.threshold),
                              "adjusted", dim=2, iterations=cfg.iterations, batch=cfg.batch, lr=cfg.lr, seed=train_seed)
            per_seed.append({"after": _shares(model, sampler, cfg.n_eval, eval_seed), "loss": losses})
        freq_after, freq_after_sd = _mean_sd([s["after"]["attribute0_freq"] for s in per_seed])
        content_after, content_after_sd = _mean_sd([s["after"]["content0_freq"] for s in per_seed])
        loss_curves = np.array([s["loss"] for s in per_seed])
        runs.append({"target": list(target), "freq_before": before["attribute0_freq"], "freq_after": freq_after,
                     "freq_after_sd": freq_after_sd, "content0_freq_after": content_after,
                     "content0_freq_after_sd": content_after_sd, "before": before,
                     "after_per_seed": [s["after"] for s in per_seed], "loss": loss_curves.mean(0).tolist()})
        ax = axes[k]
        ax.plot(loss_curves.mean(0), color="C0")
        ax.fill_between(np.arange(loss_curves.shape[1]), loss_curves.min(0), loss_curves.max(0), color="C0", alpha=0.2)
        ax.set(title=f"target {target[0]:.0%}: {before['attribute0_freq']:.2f} -> {freq_after:.3f} +- "
                     f"{freq_after_sd:.3f}", xlabel="iteration", ylabel=f"DAL (mean, range over {cfg.seeds} seeds)")
    ax = axes[-1]
    x = np.arange(len(runs))
    ax.bar(x - 0.2, [r["freq_before"] for r in runs], 0.4, label="attribute 0 before")
    ax.bar(x + 0.2, [r["freq_after"] for r in runs], 0.4, yerr=[r["freq_after_sd"] for r in runs], capsize=4,
           label=f"attribute 0 after (mean +- sd, {cfg.seeds} seeds)")
    ax.plot(x, [r["target"][0] for r in runs], "k*", ms=12, label="target")
    ax.errorbar(x + 0.2, [r["content0_freq_after"] for r in runs], yerr=[r["content0_freq_after_sd"] for r in runs],
                fmt="rs", capsize=3, label=f"content 0 after (was {before['content0_freq']:.2f})")
    ax.set_xticks(x, [f"{r['target'][0]:.0%}/{r['target'][1]:.0%}" for r in runs])
    ax.legend(fontsize=8)
    fig.suptitle("DAL + adjusted DFT on a prompt-conditioned mixture (soft prompt, DDIM 20 steps)")
    figure = ctx.save_figure(fig, "dft_dal_toy")
    plt.close(fig)
    return {"runs": runs, "figure": figure}


EXPERIMENTS = [
    Experiment("dft-eq9", lambda quick: Eq9Config(dims=(1,), samplers=(("ddim", 20), ("ddpm", 1000), ("dpmsolver++", 20)),
                                                  mlp_train_steps=100) if quick else Eq9Config(), run_eq9),
    Experiment("dft-bt-scale", lambda quick: BtScaleConfig(runs=4, models=("gaussian", "linear-negative"))
               if quick else BtScaleConfig(), run_bt_scale),
    Experiment("dft-training", lambda quick: TrainingConfig(iterations=40, seeds=2) if quick else TrainingConfig(),
               run_training),
    Experiment("dft-dal-toy", lambda quick: DalToyConfig(iterations=60, n_eval=1000, seeds=2) if quick
               else DalToyConfig(), run_dal_toy),
]


# ---------------------------------------------------------------------------------------------------- dft-compare
@dataclass(frozen=True)
class CompareConfig:
    target: float = 0.5
    beta: float = 1.0  # PopAlign's chosen setting (popalign-toy-beta)
    popalign_steps: int = 3000
    dal_iterations: int = 300
    dal_steps: int = 20
    batch: int = 24
    threshold: float = 0.8
    lr: float = 0.02
    seeds: int = 3


class _MixtureAsDenoiser(torch.nn.Module):
    """A batch-of-one 1-D GaussianMixture1D seen as eps(z (B, 1), abar): the PopAlign toy's model in the sampler."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        abar = torch.as_tensor(abar, dtype=z.dtype).expand(z.shape[0])
        return self.mixture.noise_prediction(z.T, abar[None]).T


#: The exact G1-vs-G3 log-odds at x = -7 is 98: its softmax is exactly 1.0 in float64 for every G1 sample, all G1
#: images tie, tied images share their OT target (theory.optimal_transport), and no target is confident. A
#: temperature keeps the classifier's ranking of the images (the only thing the K = 2 targets use) visible.
CLASSIFIER_TEMPERATURE = 10.0


def _g1_g3_logits(z0: torch.Tensor) -> torch.Tensor:
    """G1-vs-G3 classifier of the PopAlign toy: log N(x; m_k, s_k) of the reference's G1 and G3 (equal priors),
    divided by :data:`CLASSIFIER_TEMPERATURE`."""
    from toy.popalign_toy import G1, G3, REFERENCE_MEANS, REFERENCE_STDS

    x = z0[:, 0]
    return torch.stack([-0.5 * ((x - REFERENCE_MEANS[k]) / REFERENCE_STDS[k]) ** 2 for k in (G1, G3)],
                       dim=1) / CLASSIFIER_TEMPERATURE


def run_compare(cfg: CompareConfig, ctx: RunContext) -> dict:
    from theory.schedules import linear_betas
    from toy.popalign_toy import G2, Setting, TrainConfig, reference_mixture, summarise, sweep

    target = torch.tensor([cfg.target], dtype=torch.float64)
    sweep_seed, *dal_seeds = ctx.seeds(1 + cfg.seeds)  # SFT and PopAlign share one data stream (paired)
    rows = {}
    for method in ("sft", "popalign"):
        res = sweep([Setting(cfg.target, cfg.beta)], cfg.seeds,
                    TrainConfig(method=method, parameterisation="diffusion", steps=cfg.popalign_steps), seed=sweep_seed)
        rows[method] = res.settings[0]
    sampler = make_sampler("ddim", linear_betas(1000).numpy(), cfg.dal_steps)
    reference_model = reference_mixture(1)
    dal_target = [cfg.target, 1 - cfg.target]

    def dal_everywhere(z0: torch.Tensor) -> torch.Tensor:
        return dal_loss(_g1_g3_logits(z0), dal_target, cfg.threshold)

    def dal_on_detected(z0: torch.Tensor) -> torch.Tensor:
        # the seed applies the DAL only to images with a face ([0108]); here: samples the reference assigns to G1/G3
        with torch.no_grad():
            detected = reference_model.posterior(z0.T.detach())[0, :, G2] < 0.5
        if int(detected.sum()) < 2:
            return z0.sum() * 0.0
        return dal_loss(_g1_g3_logits(z0[detected]), dal_target, cfg.threshold) * detected.double().mean()

    for name, loss_fn in (("dal_adft", dal_everywhere), ("dal_adft_detected", dal_on_detected)):
        runs = []
        for dal_seed in dal_seeds:
            mixture = reference_mixture(1)
            finetune(_MixtureAsDenoiser(mixture), sampler, loss_fn, "adjusted", dim=1, iterations=cfg.dal_iterations,
                     batch=cfg.batch, lr=cfg.lr, seed=dal_seed)
            runs.append(summarise(mixture, target)[0])
        rows[name] = {key: float(np.mean([r[key] for r in runs])) for key in ("g1_share", "g2_weight", "discrepancy")}
        rows[name].update({f"{key}_std": float(np.std([r[key] for r in runs], ddof=1)) if cfg.seeds > 1 else 0.0
                           for key in ("g1_share", "g2_weight", "discrepancy")})
        rows[name]["runs"] = runs
    reference = summarise(reference_model, target)[0]
    table = [{"method": m, "g1_share": rows[m]["g1_share"], "g2_weight": rows[m]["g2_weight"],
              "g2_kept_fraction": rows[m]["g2_weight"] / reference["g2_weight"],
              "discrepancy": rows[m]["discrepancy"]} for m in ("sft", "popalign", "dal_adft", "dal_adft_detected")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["method"] for r in table]
    axes[0].bar(names, [r["discrepancy"] for r in table])
    axes[0].set(title=f"discrepancy to target {cfg.target:.0%} (eq. 11)")
    axes[1].bar(names, [r["g2_kept_fraction"] for r in table])
    axes[1].axhline(1.0, color="k", ls="--")
    axes[1].set(title="unrelated G2 mass kept (fraction of the reference's)")
    fig.suptitle(f"SFT vs PopAlign vs DAL + aDFT on the 1-D mixture toy, {cfg.seeds} seed(s)")
    figure = ctx.save_figure(fig, "dft_compare")
    plt.close(fig)
    return {"target_g1_share": cfg.target, "reference": reference, "table": table, "methods": rows, "figure": figure}


EXPERIMENTS.append(Experiment(
    "dft-compare",
    lambda quick: CompareConfig(popalign_steps=2000, dal_iterations=150, seeds=1) if quick else CompareConfig(),
    run_compare,
))
