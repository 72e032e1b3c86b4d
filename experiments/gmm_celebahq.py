"""``gmm-celebahq``: GAMMA-FACE on google/ddpm-celebahq-256 when its weights are on this machine (seed 002, Sec. 4.3).

The same path as ``gmm-digits`` on a real face DDPM: latents x_t of N reverse chains at one step, PCA to a few dozen
directions (d = 3 x 256 x 256 = 196,608 >> N), diagonal GMMs for K = 1..10 chosen by BIC, then equally many images per
component (component mean as the noise mean) finished by the DDPM and shown as a grid. No face attribute classifier
ships offline, so the A_p balance of the generated faces is not measured here.

The model loads from a local folder given in the environment variable ``FAIRDIFF_CELEBAHQ`` (a saved
``DDPMPipeline``), or by id from the local Hugging Face cache. When neither is present the run stops with
:class:`~scaleup.errors.ModelUnavailableError` saying what to set, unless it allows missing models
(``--allow-missing-models``): then it records ``weights_available: false`` and the reason. A ``FAIRDIFF_CELEBAHQ``
that does not hold a loadable pipeline is an error either way. :func:`run_on_model` is the whole path on given
components; the tests dry-run it on a tiny ``UNet2DModel``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from experiments.experiment import Experiment, RunContext  # noqa: E402
from scaleup.errors import ModelUnavailableError  # noqa: E402
from scaleup.gamma_face_ddpm import (  # noqa: E402
    CELEBAHQ_ID,
    DDPM_PIPELINE_LAYOUT,
    collect_latents,
    continue_sampling,
    latent_timestep,
    load_ddpm,
    noise_std,
)
from scaleup.latent_mixture import fit_latent_mixture  # noqa: E402

ENV_PATH = "FAIRDIFF_CELEBAHQ"


@dataclass(frozen=True)
class GMMCelebAHQConfig:
    model: str = CELEBAHQ_ID
    n_latents: int = 64
    num_inference_steps: int = 50
    step_fraction: float = 0.4
    pca_components: int = 32
    k_max: int = 10
    n_per_component: int = 4
    batch_size: int = 8


def make_config(quick: bool) -> GMMCelebAHQConfig:
    if quick:
        return GMMCelebAHQConfig(n_latents=8, num_inference_steps=4, pca_components=4, k_max=3, n_per_component=1)
    return GMMCelebAHQConfig()


def run_on_model(unet: UNet2DModel, scheduler: DDPMScheduler, cfg: GMMCelebAHQConfig, ctx: RunContext) -> dict:
    """Latents, PCA + BIC-chosen GMM, uniform component sampling and a sample grid on the given DDPM components."""
    chain_seed, fit_seed, component_seed, finish_seed = ctx.seeds(4)
    index = int(round(cfg.step_fraction * cfg.num_inference_steps))
    t = latent_timestep(scheduler, cfg.num_inference_steps, index)
    latents, _ = collect_latents(unet, scheduler, cfg.n_latents, indices=[index],
                                 num_inference_steps=cfg.num_inference_steps, seed=chain_seed,
                                 batch_size=cfg.batch_size, finish=False, progress=not ctx.quick)
    x_t = latents[index]
    pca = min(cfg.pca_components, x_t.shape[0])
    fit = fit_latent_mixture(x_t, k_range=range(1, min(cfg.k_max, x_t.shape[0]) + 1), pca_components=pca,
                             seed=fit_seed)
    lat, comp = fit.sample_uniform(cfg.n_per_component, mode="mean", noise_std=noise_std(scheduler, t),
                                   rng=np.random.default_rng(component_seed))
    x0 = continue_sampling(unet, scheduler, lat, index=index, num_inference_steps=cfg.num_inference_steps,
                           seed=finish_seed, batch_size=cfg.batch_size, progress=not ctx.quick)
    share = np.bincount(fit.predict(x_t), minlength=fit.chosen_k) / len(x_t)
    fig, axes = plt.subplots(fit.chosen_k, cfg.n_per_component, squeeze=False, layout="constrained",
                             figsize=(1.6 * cfg.n_per_component + 1.2, 1.6 * fit.chosen_k + 0.6))
    for k in range(fit.chosen_k):
        for j, img in enumerate(x0[comp == k]):
            ax = axes[k, j]
            ax.imshow(np.clip((img.transpose(1, 2, 0) + 1) / 2, 0, 1).squeeze())
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
        # the share of the collected latents the component holds: what plain sampling would give it
        axes[k, 0].set_ylabel(f"comp {k}\n{100 * share[k]:.0f}% of x_t", fontsize=7, rotation=0, ha="right",
                              va="center")
    fig.suptitle(f"paper 002 Sec. 4.3 / Fig. 2 counterpart: {cfg.n_per_component} faces per component, K = "
                 f"{fit.chosen_k} by BIC on {cfg.n_latents} latents at t = {t} (PCA to {pca} directions)", fontsize=8)
    figure = ctx.save_figure(fig, "gmm_celebahq_samples")
    plt.close(fig)
    return {"weights_available": True, "t": t, "step_index": index, "pca_components": pca,
            "pca_explained_variance": float(fit.pca.explained_variance_ratio_.sum()), "chosen_k": fit.chosen_k,
            "bic_curve": fit.bic, "component_weights": fit.gmm.weights_,
            "latents_per_component": np.bincount(fit.predict(x_t), minlength=fit.chosen_k), "figure": figure}


def load_model(cfg: GMMCelebAHQConfig, ctx: RunContext) -> tuple[UNet2DModel, DDPMScheduler, str] | None:
    """The DDPM's (UNet, scheduler, source); None when it is absent and the run allows that
    (:meth:`~experiments.experiment.RunContext.model_absent`).

    Raises
    ------
    ModelUnavailableError
        When the model is absent and the run does not allow it; and whenever ``FAIRDIFF_CELEBAHQ`` is set but does
        not hold a loadable ``DDPMPipeline`` (the variable names a model, so its absence is a mistake to report).
    """
    named = os.environ.get(ENV_PATH)
    if named:
        folder = Path(named).expanduser()
        problem = ("does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir()
                   else "has no model_index.json" if not (folder / "model_index.json").is_file() else None)
        if problem is None:
            try:
                return (*load_ddpm(str(folder)), named)
            except ModelUnavailableError as err:
                problem = f"cannot be loaded ({str(err.__cause__ or err).splitlines()[0][:200]})"
        raise ModelUnavailableError(f"{ENV_PATH}={named}: the folder {problem}; it must hold {DDPM_PIPELINE_LAYOUT} "
                                    f"(e.g. a snapshot of {CELEBAHQ_ID})")
    try:
        return (*load_ddpm(cfg.model), cfg.model)
    except ModelUnavailableError:
        ctx.model_absent(f"the DDPM {cfg.model} is not on this machine (not in the local Hugging Face cache): set "
                         f"{ENV_PATH}=/path/to/folder holding {DDPM_PIPELINE_LAYOUT}")
        return None


def run(cfg: GMMCelebAHQConfig, ctx: RunContext) -> dict:
    loaded = load_model(cfg, ctx)
    if loaded is None:
        return {"weights_available": False, "model": cfg.model, "reason": ctx.missing_models[-1]}
    unet, scheduler, source = loaded
    return {"model": source, **run_on_model(unet, scheduler, cfg, ctx)}


EXPERIMENTS = [Experiment("gmm-celebahq", make_config, run)]
