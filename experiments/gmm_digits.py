"""``gmm-digits``: GAMMA-FACE on a real DDPM trained on CPU on scikit-learn's 8x8 digits (seed 002, Sec. 3-4, 6).

Digits 2, 3, 6, 7 form a 2 x 2 design: protected attribute A_p = "digit >= 5" (group 0: 2, 3; group 1: 6, 7), target
attribute A_t = "even" (2, 6). A diffusers ``UNet2DModel`` DDPM is trained on a set that is 80/20 over A_p
(checkpointed under the output folder, so a re-run resumes). Then, as in the seed:

1. latents x_t of 1000 reverse chains at several steps t; diagonal GMMs for K = 1..10 with BIC (no PCA: d = 64);
   t is the noisiest step at which BIC picks K >= 2 (:func:`scaleup.latent_mixture.choose_step`);
2. equally many x_t per component — the component mean as the noise mean (seed's variant, headline) and the full
   component — finished by the DDPM; A_p shares of plain and GMM samples by a classifier trained on the real data,
   and seed 000's bias of those shares;
3. downstream: an A_t classifier trained on a small set (balanced over A_t, 80/20 over A_p), then on the same number
   of images mixing generated ones (pseudo-labelled by the real-data classifier) and originals at %Gen/%Org =
   100/0, 70/30, 50/50, 30/70; Bias (eq. 12), BA (eq. 14, A_p = group 1), BPC (eq. 13, against the original-only
   classifier), KL (eq. 15, on the A_t-positive test images) and accuracy on a held-out balanced real test set,
   averaged over repeated draws (mean and sd over repeats; BPC, a ratio of means, with a bootstrap sd over
   repeats; every metric also as a paired difference from the original-only classifier of the same repeat).
   Plainly sampled generated data is the control.

The spreads of the generated balance are bootstrap sds over the generated images (the DDPM and the GMM fit are one
training and one fit, not repeated: a second DDPM costs minutes on CPU).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from experiments.gmm_toy import legend_below, plot_bias_against_t, plot_bic_curves  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from scaleup.digits import biased_split, fit_digit_classifier, load_digit_images  # noqa: E402
from scaleup.gamma_face_ddpm import (  # noqa: E402
    collect_latents,
    continue_sampling,
    latent_timestep,
    noise_std,
    tiny_unet,
    train_ddpm,
)
from scaleup.latent_mixture import choose_step, fit_latent_mixture  # noqa: E402
from theory.metrics import (  # noqa: E402
    bias_amplification,
    bias_performance_coefficient,
    class_frequencies,
    frequency_bias,
    symmetric_score_kl,
    tpr_bias,
    true_positive_rate,
)


@dataclass(frozen=True)
class GMMDigitsConfig:
    digits: tuple[int, ...] = (2, 3, 6, 7)
    protected_group: tuple[int, ...] = (0, 0, 1, 1)  # A_p of each digit above; group 1 is the minority
    target: tuple[int, ...] = (1, 0, 1, 0)  # A_t ("even") of each digit above
    minority_share: float = 0.2
    n_test_per_digit: int = 40
    block_out_channels: tuple[int, ...] = (16, 32)
    train_steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    num_inference_steps: int = 100
    step_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)  # latents after this fraction of the denoising steps
    n_latents: int = 1000
    n_generated: int = 600
    k_max: int = 10
    n_small: int = 40
    mixing_ratios: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3)  # share of generated images
    repeats: int = 20
    n_bootstrap: int = 1000  # resamples for the spreads of the generated balance and of BPC


def make_config(quick: bool) -> GMMDigitsConfig:
    if quick:
        return GMMDigitsConfig(train_steps=60, num_inference_steps=10, step_fractions=(0.3, 0.6), n_latents=160,
                               n_generated=80, k_max=4, repeats=3, n_bootstrap=200)
    return GMMDigitsConfig()


def _ddpm_key(cfg: GMMDigitsConfig, seed: int) -> str:
    fields = {k: v for k, v in asdict(cfg).items() if k in {"digits", "protected_group", "minority_share",
                                                           "n_test_per_digit", "block_out_channels", "batch_size",
                                                           "lr"}}
    # "spawned streams": the data split, init and batches derive from the seed by RunContext.seeds; a checkpoint
    # from the time they were the seed itself belongs to another training and must not be resumed
    return hashlib.sha256(json.dumps([fields, seed, "spawned streams"]).encode()).hexdigest()[:12]


def _downstream_metrics(clf, x_test, y_test, ap_test) -> dict:
    pred = clf.predict(x_test).astype(int)
    scores = clf.predict_proba(x_test)[:, 1]
    pos = y_test == 1
    row = {"accuracy": float((pred == y_test).mean()), "tpr": true_positive_rate(y_test, pred)}
    row["bias"] = tpr_bias(y_test, pred, ap_test)
    try:
        row["ba"] = bias_amplification(y_test, pred, ap_test == 1)
    except ValueError:  # no group-1 image predicted positive: eq. 14 is undefined
        row["ba"] = None
    row["kl"] = symmetric_score_kl(scores[pos], ap_test[pos] == 1)
    return row


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None]
    return float(np.mean(vals)) if vals else None


def bootstrap_sd(statistic, n: int, n_bootstrap: int, rng: np.random.Generator) -> float:
    """The sd of ``statistic(idx)`` over ``n_bootstrap`` resamples ``idx`` of range(n) with replacement (ddof = 1).

    Written out because scipy.stats.bootstrap needs a statistic of the data arrays and vectorises poorly over the
    paired, ratio-of-means BPC; this is the plain nonparametric bootstrap (Efron & Tibshirani 1993, ch. 6).
    """
    vals = [statistic(rng.integers(0, n, n)) for _ in range(n_bootstrap)]
    return float(np.std(vals, ddof=1))


@dataclass(frozen=True)
class _Design:
    """The 2 x 2 design: A_p and A_t of each digit, and the real-data digit classifier that labels generated images."""

    cfg: GMMDigitsConfig
    classifier: object

    def protected(self, digits: np.ndarray) -> np.ndarray:
        return np.vectorize(dict(zip(self.cfg.digits, self.cfg.protected_group)).get, otypes=[int])(digits)

    def target(self, digits: np.ndarray) -> np.ndarray:
        return np.vectorize(dict(zip(self.cfg.digits, self.cfg.target)).get, otypes=[int])(digits)

    def digits_of(self, x0: np.ndarray) -> np.ndarray:
        return self.classifier.predict(x0.reshape(len(x0), -1))

    def ap_shares(self, x0: np.ndarray) -> tuple[float, list[float], dict]:
        """Seed 000's bias of the A_p shares of ``x0``, the shares, and the share of each digit."""
        digits = self.digits_of(x0)
        freq = class_frequencies(self.protected(digits), 2)
        return frequency_bias(freq), freq.tolist(), {int(d): float((digits == d).mean()) for d in self.cfg.digits}

    def ap_bias_sd(self, x0: np.ndarray, rng: np.random.Generator) -> float:
        """Bootstrap sd of seed 000's bias of the A_p shares of ``x0``, resampling the images."""
        groups = self.protected(self.digits_of(x0))
        return bootstrap_sd(lambda idx: frequency_bias(class_frequencies(groups[idx], 2)), len(groups),
                            self.cfg.n_bootstrap, rng)


def train_model(cfg: GMMDigitsConfig, ctx: RunContext, split, train_seed: int):
    """The DDPM, resumed from its checkpoint when one exists for this data and architecture:
    (unet, scheduler, losses, checkpoint path)."""
    unet = tiny_unet(sample_size=8, channels=1, block_out_channels=cfg.block_out_channels)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    checkpoint = ctx.out_dir / f"ddpm_digits_{_ddpm_key(cfg, ctx.seed)}.pt"
    losses = train_ddpm(unet, scheduler, split.train_images, steps=cfg.train_steps, batch_size=cfg.batch_size,
                        lr=cfg.lr, seed=train_seed, checkpoint=checkpoint, restart=ctx.restart, progress=not ctx.quick)
    return unet, scheduler, losses, checkpoint


def latent_sweep(cfg: GMMDigitsConfig, design: _Design, unet, scheduler, latents: dict, rng: np.random.Generator,
                 fit_seed: int, finish_seed: int, boot: np.random.Generator) -> tuple[list[dict], dict]:
    """Steps 1-2 at every t: BIC-chosen GMM on x_t, equal samples per component (mean / full) finished by the DDPM.
    Returns the sweep rows (with bootstrap sds from ``boot``) and {(t, mode): (x0, component)}."""
    sweep, samples = [], {}
    for index in sorted(latents):
        t = latent_timestep(scheduler, cfg.num_inference_steps, index)
        fit = fit_latent_mixture(latents[index], k_range=range(1, cfg.k_max + 1), seed=fit_seed)
        row = {"t": t, "index": index, "chosen_k": fit.chosen_k, "bic": fit.bic}
        per_k = -(-cfg.n_generated // fit.chosen_k)
        for mode in ("mean", "full"):
            lat, comp = fit.sample_uniform(per_k, mode=mode, noise_std=noise_std(scheduler, t), rng=rng)
            x0 = continue_sampling(unet, scheduler, lat, index=index, num_inference_steps=cfg.num_inference_steps,
                                   seed=finish_seed)
            samples[(t, mode)] = (x0, comp)
            row[f"bias_gmm_{mode}"], row[f"protected_shares_gmm_{mode}"], row[f"digit_shares_gmm_{mode}"] = \
                design.ap_shares(x0)
            row[f"bias_gmm_{mode}_sd"] = design.ap_bias_sd(x0, boot)
        sweep.append(row)
    return sweep, samples


def component_balance(cfg: GMMDigitsConfig, design: _Design, gmm_x0: np.ndarray, comp: np.ndarray,
                      boot: np.random.Generator) -> list[dict]:
    """The A_p group-1 share (with its bootstrap sd over the component's images) and digit shares among the
    generated images of each GMM component."""
    comp_digits = design.digits_of(gmm_x0)
    rows = []
    for k in np.unique(comp):
        minority = design.protected(comp_digits[comp == k]) == 1
        rows.append({"component": int(k), "n": int((comp == k).sum()),
                     "protected_group1_share": float(minority.mean()),
                     "protected_group1_share_sd": bootstrap_sd(lambda idx: minority[idx].mean(), minority.size,
                                                               cfg.n_bootstrap, boot),
                     "digit_shares": {int(d): float((comp_digits[comp == k] == d).mean()) for d in cfg.digits}})
    return rows


METRICS = ("bias", "ba", "kl", "accuracy", "tpr")


def downstream_table(cfg: GMMDigitsConfig, design: _Design, split, pools: dict[str, np.ndarray],
                     rng: np.random.Generator, boot: np.random.Generator) -> tuple[list[dict], dict]:
    """Step 3: the A_t classifier trained on a small original set vs mixes with generated, pseudo-labelled data.

    Returns the table (per setting: Bias, BA, KL, accuracy, TPR as mean and sd over repeats; the paired difference
    from the original-only classifier of the same repeat, mean and sd; BPC against the original-only classifier
    from the means, seed 002 eq. 13, with a paired bootstrap sd over repeats) and every repeat's metrics by setting
    ("data/generated_percent")."""
    y_test, ap_test = design.target(split.test_digits), design.protected(split.test_digits)
    x_test = split.test_images.reshape(len(split.test_images), -1)
    train_x = split.train_images.reshape(len(split.train_images), -1)
    train_y = design.target(split.train_digits)
    pools = {name: x.reshape(len(x), -1) for name, x in pools.items()}
    pseudo = {name: design.target(design.classifier.predict(x)) for name, x in pools.items()}
    results_by_setting: dict[tuple[str, float], list[dict]] = {}
    for repeat in range(cfg.repeats):
        half = cfg.n_small // 2
        small = np.concatenate([rng.choice(np.flatnonzero(train_y == c), half, replace=False) for c in (0, 1)])
        settings = [("original", 0.0)] + [(src, g) for src in ("gmm", "plain") for g in cfg.mixing_ratios]
        for src, g in settings:
            n_gen = int(round(g * cfg.n_small))
            orig = small[rng.permutation(small.size)[: cfg.n_small - n_gen]]
            x_parts, y_parts = [train_x[orig]], [train_y[orig]]
            if n_gen:
                pick = rng.choice(len(pools[src]), n_gen, replace=False)
                x_parts.append(pools[src][pick])
                y_parts.append(pseudo[src][pick])
            y = np.concatenate(y_parts)
            if np.unique(y).size < 2:
                continue  # a draw with one A_t class cannot train a classifier
            clf = LogisticRegression(max_iter=2000, C=0.1).fit(np.concatenate(x_parts), y)
            results_by_setting.setdefault((src, g), []).append(
                {"repeat": repeat, **_downstream_metrics(clf, x_test, y_test, ap_test)})
    base = results_by_setting[("original", 0.0)]
    base_by_repeat = {r["repeat"]: r for r in base}
    base_bias, base_tpr = _mean(base, "bias"), _mean(base, "tpr")
    table = []
    for (src, g), rows in results_by_setting.items():
        entry = {"data": src, "generated_percent": round(100 * g), "original_percent": round(100 * (1 - g)),
                 "n_runs": len(rows)}
        for key in METRICS:
            entry[key] = _mean(rows, key)
            vals = [r[key] for r in rows if r[key] is not None]
            entry[f"{key}_std"] = float(np.std(vals)) if vals else None
            diffs = [r[key] - base_by_repeat[r["repeat"]][key] for r in rows
                     if r[key] is not None and r["repeat"] in base_by_repeat and base_by_repeat[r["repeat"]][key]
                     is not None]
            entry[f"{key}_diff_mean"] = float(np.mean(diffs)) if diffs else None
            entry[f"{key}_diff_std"] = float(np.std(diffs)) if diffs else None
            entry[f"{key}_n_paired"] = len(diffs)
        entry["bpc"], entry["bpc_std"] = _bpc_with_spread(base_bias, base_tpr, rows, base_by_repeat, cfg, boot)
        table.append(entry)
    runs = {f"{src}/{round(100 * g)}": rows for (src, g), rows in results_by_setting.items()}
    return table, runs


def _bpc_with_spread(base_bias: float | None, base_tpr: float | None, rows: list[dict], base_by_repeat: dict,
                     cfg: GMMDigitsConfig, boot: np.random.Generator) -> tuple[float | None, float | None]:
    """BPC of the mean Bias and TPR against the original-only means (eq. 13), and its sd over a bootstrap of the
    repeats that resamples each repeat's pair (setting, original) together; None where eq. 13 is undefined (the
    original-only Bias or TPR is 0)."""
    if not (base_bias and base_bias > 0 and base_tpr and base_tpr > 0):
        return None, None
    bpc = bias_performance_coefficient(base_bias, _mean(rows, "bias"), base_tpr, _mean(rows, "tpr"))
    pairs = [(base_by_repeat[r["repeat"]], r) for r in rows if r["repeat"] in base_by_repeat]

    def resampled(idx: np.ndarray) -> float:
        b = [pairs[i][0] for i in idx]
        d = [pairs[i][1] for i in idx]
        bias0, tpr0 = np.mean([r["bias"] for r in b]), np.mean([r["tpr"] for r in b])
        if not (bias0 > 0 and tpr0 > 0):
            return np.nan  # a resample whose original-only Bias is 0: eq. 13 is undefined there
        return bias_performance_coefficient(bias0, np.mean([r["bias"] for r in d]), tpr0,
                                            np.mean([r["tpr"] for r in d]))

    vals = np.array([resampled(boot.integers(0, len(pairs), len(pairs))) for _ in range(cfg.n_bootstrap)])
    vals = vals[np.isfinite(vals)]
    return bpc, (float(np.std(vals, ddof=1)) if vals.size > 1 else None)


#: Images per row of the samples figure (recorded in results.json).
N_SHOWN = 8


def run(cfg: GMMDigitsConfig, ctx: RunContext) -> dict:
    if not (len(cfg.digits) == len(cfg.protected_group) == len(cfg.target)):
        raise ValueError("digits, protected_group and target must have one entry per digit")
    # independent streams (RunContext.seeds): data split and draws, classifier, UNet init, training, chains, GMM
    # fits, finishing the GMM latents; scikit-learn takes them because they have 32 bits
    # (child i of the spawn is the same for every n > i: the bootstrap stream, added last, leaves the others as they
    # were, and with them the DDPM checkpoint)
    split_seed, classifier_seed, init_seed, train_seed, chain_seed, fit_seed, finish_seed, boot_seed = ctx.seeds(8)
    rng = np.random.default_rng(split_seed)
    boot = np.random.default_rng(boot_seed)
    torch.manual_seed(init_seed)

    images, labels = load_digit_images(cfg.digits)
    split = biased_split(images, labels, dict(zip(cfg.digits, cfg.protected_group)), cfg.minority_share,
                         n_test_per_digit=cfg.n_test_per_digit, rng=rng)
    design = _Design(cfg, fit_digit_classifier(split.classifier_images, split.classifier_digits, seed=classifier_seed))
    classifier_test_accuracy = float((design.digits_of(split.test_images) == split.test_digits).mean())
    unet, scheduler, losses, checkpoint = train_model(cfg, ctx, split, train_seed)

    indices = sorted({int(round(f * cfg.num_inference_steps)) for f in cfg.step_fractions})
    latents, plain_x0 = collect_latents(unet, scheduler, cfg.n_latents, indices=indices,
                                        num_inference_steps=cfg.num_inference_steps, seed=chain_seed,
                                        progress=not ctx.quick)
    bias_plain, shares_plain, digits_plain = design.ap_shares(plain_x0)
    train_shares = class_frequencies(design.protected(split.train_digits), 2).tolist()
    bias_plain_sd = design.ap_bias_sd(plain_x0, boot)
    sweep, samples = latent_sweep(cfg, design, unet, scheduler, latents, rng, fit_seed, finish_seed, boot)

    t_star = choose_step({r["t"]: r["chosen_k"] for r in sweep})
    if t_star is None:
        # BIC saw one Gaussian at every step: uniform sampling over one component is plain sampling
        chosen, gmm_x0, comp = None, plain_x0, np.zeros(len(plain_x0), dtype=int)
    else:
        chosen = next(r for r in sweep if r["t"] == t_star)
        gmm_x0, comp = samples[(t_star, "mean")]
    per_component = component_balance(cfg, design, gmm_x0, comp, boot)
    table, runs = downstream_table(cfg, design, split, {"gmm": gmm_x0, "plain": plain_x0}, rng, boot)

    bias_gmm = chosen["bias_gmm_mean"] if chosen else bias_plain
    shown = {"real": split.train_images[:N_SHOWN, 0], "plain": plain_x0[:N_SHOWN, 0],
             **{f"comp {k}": gmm_x0[comp == k][:N_SHOWN, 0] for k in np.unique(comp)}}
    return {
        "chosen_t": t_star,
        "chosen_step_index": chosen["index"] if chosen else None,
        "chosen_k": chosen["chosen_k"] if chosen else 1,
        "bias_plain_sampling": bias_plain,
        "bias_plain_sampling_sd": bias_plain_sd,
        "bias_gmm_sampling": bias_gmm,
        "bias_gmm_sampling_sd": chosen["bias_gmm_mean_sd"] if chosen else bias_plain_sd,
        "bias_gmm_full_component": chosen["bias_gmm_full"] if chosen else bias_plain,
        "halves_bias": bool(bias_gmm <= bias_plain / 2),
        "protected_shares_training_data": train_shares,
        "protected_shares_plain": shares_plain,
        "digit_shares_plain": digits_plain,
        "protected_shares_gmm": chosen["protected_shares_gmm_mean"] if chosen else shares_plain,
        "bic_curve": chosen["bic"] if chosen else None,
        "per_component_balance": per_component,
        "downstream": table,
        "downstream_runs": runs,
        "sweep": sweep,
        "real_classifier_test_accuracy": classifier_test_accuracy,
        "ddpm": {"final_loss_mean_last_100": float(np.mean(losses[-100:])) if losses else None,
                 "train_images": int(len(split.train_images)), "checkpoint": checkpoint.name,
                 "training_steps_run": len(losses)},
        "sample_images": shown,  # the first images of each source, for the samples figure
    }


def plot(results: dict) -> dict:
    """The GAMMA-FACE summary (BIC, balance against t, minority share by source), the downstream metrics by mixing
    ratio (seed 002 Tables 3-4) and the samples."""
    return {"gmm_digits": _summary_figure(results), "gmm_digits_mixing": _mixing_figure(results),
            "gmm_digits_samples": _samples_figure(results)}


def _group1_digits(cfg: dict) -> str:
    return ", ".join(str(d) for d, g in zip(cfg["digits"], cfg["protected_group"]) if g == 1)


def _summary_figure(results: dict):
    sweep, per_component, cfg = results["sweep"], results["per_component_balance"], results["config"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.8), layout="constrained", width_ratios=(1, 1, 1.1))
    plot_bic_curves(axes[0], sweep)
    axes[0].set_title("BIC of diagonal GMMs on x_t (d = 64, no PCA)")
    legend_below(axes[0], ncols=2)

    ax = axes[1]
    plot_bias_against_t(ax, [r["t"] for r in sweep], {m: [r[f"bias_gmm_{m}"] for r in sweep] for m in ("mean", "full")},
                        results["bias_plain_sampling"], results["chosen_t"],
                        sd={m: [r[f"bias_gmm_{m}_sd"] for r in sweep] for m in ("mean", "full")},
                        plain_sd=results["bias_plain_sampling_sd"], spread=" (+- bootstrap sd over images)",
                        ylabel="bias of A_p among generated, paper 000 metric (0 = balanced)")
    top = ax.secondary_xaxis("top")
    top.set_xticks([r["t"] for r in sweep], [f"K*={r['chosen_k']}" for r in sweep], fontsize=7)
    ax.set_title(f"balance against t ({cfg['n_generated']} generated per point)")
    legend_below(ax)

    ax = axes[2]
    names = ["training data", "plain DDPM", "GMM, all comps"] + \
        [f"comp {c['component']}\n(n = {c['n']})" for c in per_component]
    shares = [results["protected_shares_training_data"][1], results["protected_shares_plain"][1],
              results["protected_shares_gmm"][1]] + [c["protected_group1_share"] for c in per_component]
    errs = [0.0, np.nan, np.nan] + [c["protected_group1_share_sd"] for c in per_component]
    colors = ["grey", "k", "C0"] + ["C9"] * len(per_component)
    y = np.arange(len(names))[::-1]  # horizontal bars: long names stay readable
    ax.barh(y, shares, xerr=np.nan_to_num(errs), color=colors, capsize=3)
    for yi, share, err in zip(y, shares, np.nan_to_num(errs)):
        ax.annotate(f"{share:.2f}", (share + err, yi), xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
    ax.axvline(0.5, color="C3", ls=":", label="balanced (0.5)")
    ax.set_yticks(y, names, fontsize=8)
    ax.set(xlim=(0, 1.08), xlabel=f"share of A_p group 1 (digits {_group1_digits(cfg)}) (share)",
           title=f"minority share by source; GMM at t* = {results['chosen_t']}, K = {results['chosen_k']}")
    legend_below(ax)
    ddpm = results["ddpm"]
    fig.suptitle(f"GAMMA-FACE on an 8x8 digits DDPM trained {round(100 * (1 - cfg['minority_share']))}/"
                 f"{round(100 * cfg['minority_share'])} over A_p (paper 002, Sec. 3.3-4.3); "
                 f"{ddpm['training_steps_run']} training steps on {ddpm['train_images']} images")
    return fig


#: The downstream metrics of seed 002 Tables 3-4, with the direction that is better.
MIXING_PANELS = (("bias", "Bias", "Bias(A_t), eq. 12 (TPR gap, unitless)", "lower"),
                 ("ba", "BA", "BA(A_t), eq. 14 (unitless)", "lower"),
                 ("bpc", "BPC", "BPC, eq. 13 (unitless)", "higher"),
                 ("kl", "KL", "KL(A_t), eq. 15 (nats)", "lower"),
                 ("accuracy", "accuracy", "accuracy on the real test set (share)", "higher"))


def _mixing_figure(results: dict):
    """Bias, BA, BPC, KL and accuracy of the downstream A_t classifier by %generated/%original (seed 002 Tables
    3-4): GMM-sampled vs plainly sampled generated data, against the original-only classifier."""
    table, cfg = results["downstream"], results["config"]
    base = next(r for r in table if r["data"] == "original")
    fig, axes = plt.subplots(1, len(MIXING_PANELS), figsize=(20, 4.6), layout="constrained")
    styles = {"gmm": ("o", "-", "C0", "GMM-sampled generated data"),
              "plain": ("s", "--", "C1", "plainly sampled generated data (control)")}
    ratios = sorted({r["generated_percent"] for r in table if r["data"] != "original"}, reverse=True)
    for ax, (key, short, label, better) in zip(axes, MIXING_PANELS):
        for src, (marker, ls, color, name) in styles.items():
            rows = sorted((r for r in table if r["data"] == src), key=lambda r: -r["generated_percent"])
            x = np.array([r["generated_percent"] for r in rows], dtype=float) + (1.2 if src == "plain" else -1.2)
            vals = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
            errs = np.array([np.nan if r.get(f"{key}_std") is None else r[f"{key}_std"] for r in rows], dtype=float)
            ax.errorbar(x, vals, yerr=np.nan_to_num(errs), marker=marker, ls=ls, color=color, capsize=3, label=name)
            for xi, v in zip(x, vals):  # an undefined metric (eq. 13 or 14 divides by zero) is marked, not dropped
                if np.isnan(v):
                    ax.plot(xi, 0, "x", color="C3", ms=9, mew=2, transform=ax.get_xaxis_transform())
                    ax.annotate("undefined", (xi, 0.02), xycoords=("data", "axes fraction"), fontsize=6, color="C3")
        if base[key] is not None:
            ax.axhline(base[key], color="k", ls=":", label="original data only (+- sd band)")
            if base.get(f"{key}_std"):
                ax.axhspan(base[key] - base[f"{key}_std"], base[key] + base[f"{key}_std"], color="k", alpha=0.08,
                           lw=0)
        ax.set_xticks(ratios, [f"{g}/{100 - g}" for g in ratios])
        ax.set_xlim(max(ratios) + 10, min(ratios) - 10)  # 100 % generated on the left, as in the seed's tables
        ax.set(xlabel="% generated / % original (of 40 images)", ylabel=label, title=f"{short} ({better} is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    n = base["n_runs"]
    fig.suptitle(f"downstream A_t (even digit) classifier by mixing ratio, paper 002 Tables 3-4: mean +- sd over "
                 f"{n} repeats (BPC: +- bootstrap sd over repeats); test set {len(cfg['digits'])} x "
                 f"{cfg['n_test_per_digit']} real digits")
    return fig


def _samples_figure(results: dict):
    shown, per_component = results["sample_images"], results["per_component_balance"]
    minority = {f"comp {c['component']}": c["protected_group1_share"] for c in per_component}
    n_show = max(len(imgs) for imgs in shown.values())
    fig, axes = plt.subplots(len(shown), n_show, figsize=(n_show * 0.9 + 1.6, len(shown) * 0.95 + 0.5),
                             squeeze=False, layout="constrained")
    for r, (label, imgs) in enumerate(shown.items()):
        for c in range(n_show):
            ax = axes[r, c]
            if c < len(imgs):
                ax.imshow(np.clip(np.asarray(imgs[c]), -1, 1), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        name = {"real": "real (training)", "plain": "plain DDPM"}.get(label, label)
        if label in minority:
            name += f"\n{100 * minority[label]:.0f}% group 1"
        axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"samples (paper 002 Fig. 2 counterpart): real, plain DDPM, and per GMM component at "
                 f"t* = {results['chosen_t']}", fontsize=9)
    return fig


EXPERIMENTS = [Experiment("gmm-digits", make_config, run, plot)]
