"""Diffusers DDPMs for GAMMA-FACE: latents x_t at an intermediate step and sampling continued from them (seed 002).

The seed's pipeline (Sec. 3.2-3.4) on any diffusers ``UNet2DModel`` + ``DDPMScheduler`` (the components of a
``DDPMPipeline``, e.g. ``google/ddpm-celebahq-256``):

- :func:`collect_latents` runs the ancestral chain (eq. 6) from x_T ~ N(0, I) down to the step ``timesteps[index]``
  and returns those x_t (and, from the same chains, the finished x_0 if asked: the plain samples).
- :func:`continue_sampling` runs the rest of the chain from given x_t, e.g. latents drawn from one GMM component
  (:mod:`scaleup.latent_mixture`).
- :func:`train_ddpm` trains a small UNet with the loss of eq. 5 (tqdm progress, atomic checkpoints, exact resume;
  an unreadable checkpoint is one :class:`~scaleup.errors.CheckpointError` naming the file).
- :func:`load_ddpm` loads a pipeline's UNet and scheduler by model id or local path, offline unless allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from scaleup.atomic_write import atomic_write
from scaleup.errors import CheckpointError, ModelUnavailableError
from scaleup.hub import download_allowed
from theory.denoising import denoising_loss

CELEBAHQ_ID = "google/ddpm-celebahq-256"
#: What a local DDPMPipeline folder holds (what :func:`load_ddpm` loads; ``DDPMPipeline.save_pretrained`` writes it).
DDPM_PIPELINE_LAYOUT = ("a saved DDPMPipeline: model_index.json, unet/ (config.json, "
                        "diffusion_pytorch_model.safetensors) and scheduler/scheduler_config.json")


def load_ddpm(model_id_or_path: str = CELEBAHQ_ID, *, allow_download: bool = False,
              device: str = "cpu") -> tuple[UNet2DModel, DDPMScheduler]:
    """The UNet and DDPM scheduler of a ``DDPMPipeline`` by hub id (local cache only, unless allowed) or folder.

    Raises
    ------
    ModelUnavailableError
        When the weights are not on this machine; the message names the id and how to pass a local path.
    """
    if not isinstance(model_id_or_path, (str, os.PathLike)) or not str(model_id_or_path):
        raise ValueError(f"model_id_or_path must be a hub id such as {CELEBAHQ_ID!r} or a local folder; "
                         f"got {model_id_or_path!r}")
    local = Path(model_id_or_path).is_dir()
    download, offline_reason = download_allowed(allow_download) if not local else (False, None)
    try:
        pipe = DDPMPipeline.from_pretrained(str(model_id_or_path), local_files_only=not download)
    except Exception as err:  # OSError/ValueError when absent; KeyError, TypeError, ... for a broken folder
        hub = f"; the hub cannot be used ({offline_reason})" if offline_reason else ""
        raise ModelUnavailableError(
            f"DDPM weights {str(model_id_or_path)!r} are not available on this machine ({type(err).__name__}{hub}). "
            f"As model_id_or_path, pass the local folder of {DDPM_PIPELINE_LAYOUT} (e.g. a snapshot of "
            f"{CELEBAHQ_ID}), or set allow_download=True where the hub is reachable") from err
    scheduler = pipe.scheduler
    if not isinstance(scheduler, DDPMScheduler):
        scheduler = DDPMScheduler.from_config(scheduler.config)
    return pipe.unet.to(device).eval(), scheduler


def tiny_unet(sample_size: int = 8, channels: int = 1, block_out_channels: Sequence[int] = (32, 64),
              layers_per_block: int = 1, norm_num_groups: int = 8) -> UNet2DModel:
    """A small randomly initialised ``UNet2DModel`` (no attention) for CPU runs and offline tests."""
    if sample_size < 2 ** (len(block_out_channels) - 1) or channels < 1:
        raise ValueError(f"sample_size must be at least 2^(levels - 1) = {2 ** (len(block_out_channels) - 1)} and "
                         f"channels >= 1; got sample_size={sample_size}, channels={channels}")
    levels = len(block_out_channels)
    return UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                       block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                       down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                       norm_num_groups=norm_num_groups)


def _check_steps(scheduler: DDPMScheduler, num_inference_steps: int, index: int) -> None:
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or \
            not 1 <= num_inference_steps <= scheduler.config.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be an integer in [1, {scheduler.config.num_train_timesteps}]; "
                         f"got {num_inference_steps!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_inference_steps:
        raise ValueError(f"the step index must be an integer in [0, {num_inference_steps}) (0 is x_T, larger is "
                         f"less noisy); got {index!r}")


def latent_timestep(scheduler: DDPMScheduler, num_inference_steps: int, index: int) -> int:
    """The DDPM step t of the latent reached after ``index`` denoising steps (x_t is the input of step ``index``)."""
    _check_steps(scheduler, num_inference_steps, index)
    scheduler.set_timesteps(num_inference_steps)
    return int(scheduler.timesteps[index])


def noise_std(scheduler: DDPMScheduler, t: int) -> float:
    """sqrt(1 - abar_t): the forward-process noise scale of x_t (seed 002, below eq. 5)."""
    return float(torch.sqrt(1.0 - scheduler.alphas_cumprod[int(t)]))


@torch.no_grad()
def _run_chain(unet: UNet2DModel, scheduler: DDPMScheduler, x: torch.Tensor, timesteps: torch.Tensor,
               generator: torch.Generator | None) -> torch.Tensor:
    for t in timesteps:
        eps = unet(x, t).sample
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


@torch.no_grad()
def collect_latents(unet: UNet2DModel, scheduler: DDPMScheduler, n: int, *, indices: Sequence[int],
                    num_inference_steps: int, seed: int = 0, batch_size: int = 256, finish: bool = True,
                    progress: bool = False) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Latents x_t of n ancestral chains at each step index in ``indices``, and their finished x_0.

    Returns ``({index: array (n, C, H, W)}, x_0 (n, C, H, W) or None)``; the x_0 are plain samples of the model.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer number of chains; got {n!r}")
    indices = sorted(set(indices))
    if not indices:
        raise ValueError("indices must name at least one step index at which to keep the latents")
    for i in indices:
        _check_steps(scheduler, num_inference_steps, i)
    scheduler.set_timesteps(num_inference_steps)
    steps = scheduler.timesteps
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    dtype = next(unet.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    kept: dict[int, list[np.ndarray]] = {i: [] for i in indices}
    finished: list[np.ndarray] = []
    stop = num_inference_steps if finish else indices[-1]
    for start in tqdm(range(0, n, batch_size), desc="collect latents", disable=not progress):
        x = torch.randn((min(batch_size, n - start), *shape), generator=generator, dtype=dtype)
        for i in range(stop + 1):
            if i in kept:
                kept[i].append(x.cpu().numpy().astype(np.float64))
            if i == stop:
                break
            x = _run_chain(unet, scheduler, x, steps[i:i + 1], generator)
        if finish:
            finished.append(x.cpu().numpy().astype(np.float64))
    return {i: np.concatenate(v) for i, v in kept.items()}, (np.concatenate(finished) if finish else None)


@torch.no_grad()
def continue_sampling(unet: UNet2DModel, scheduler: DDPMScheduler, latents: np.ndarray | torch.Tensor, *,
                      index: int, num_inference_steps: int, seed: int = 0, batch_size: int = 256,
                      progress: bool = False) -> np.ndarray:
    """Finish the ancestral chain from latents x_t at step index ``index``: x_0 of shape (N, C, H, W)."""
    _check_steps(scheduler, num_inference_steps, index)
    x_all = torch.as_tensor(np.asarray(latents), dtype=next(unet.parameters()).dtype)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    if x_all.ndim != 4 or tuple(x_all.shape[1:]) != shape:
        raise ValueError(f"latents must have shape (N, {shape[0]}, {shape[1]}, {shape[2]}) for this UNet; "
                         f"got {tuple(x_all.shape)}")
    scheduler.set_timesteps(num_inference_steps)
    steps = scheduler.timesteps[index:]
    generator = torch.Generator().manual_seed(seed)
    out = [_run_chain(unet, scheduler, x_all[s:s + batch_size], steps, generator).numpy().astype(np.float64)
           for s in tqdm(range(0, x_all.shape[0], batch_size), desc="continue sampling", disable=not progress)]
    return np.concatenate(out)


def _save_checkpoint(state: dict, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def _load_checkpoint(path: Path, unet: UNet2DModel, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator) -> tuple[int, list[float]]:
    """Restore model, optimiser and generator from ``path``; returns (steps done, losses so far).

    ``weights_only=True``: a checkpoint holds tensors and plain containers only, so nothing in it may run code.
    """
    ways_on = ("delete it to train from scratch, or pass restart=True (command line: --restart), which trains "
               "afresh and replaces it")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # empty: EOFError; truncated: RuntimeError; garbled: UnpicklingError; and others
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: it is empty, truncated or "
                              f"not a checkpoint of train_ddpm); {ways_on}") from None
    try:
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        return int(state["step"]), [float(v) for v in state["losses"]]
    except Exception as err:  # a dict from elsewhere, or another architecture's weights
        raise CheckpointError(f"checkpoint {path} does not fit this model and optimiser ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'missing entry'}); {ways_on}") from None


def train_ddpm(unet: UNet2DModel, scheduler: DDPMScheduler, images: np.ndarray, *, steps: int,
               batch_size: int = 64, lr: float = 1e-3, seed: int = 0, checkpoint: str | os.PathLike | None = None,
               checkpoint_every: int | None = None, restart: bool = False, progress: bool = True) -> list[float]:
    """Train ``unet`` in place with L_DM = E ||eps - eps_theta(x_t, t)||^2 (seed 002, eq. 5); returns the losses.

    With ``checkpoint``, model, optimiser, step, losses and the random generator's state are written there
    atomically (:func:`scaleup.atomic_write.atomic_write`) every ``checkpoint_every`` steps (default: a tenth of
    ``steps``, so short runs checkpoint too) and at the end, and a re-run resumes from it; because the batches and
    noises come from the saved generator, an interrupted and resumed run gives the same weights as an uninterrupted
    one. ``restart=True`` ignores an existing checkpoint and replaces it.

    Raises
    ------
    CheckpointError
        When the checkpoint exists but cannot be read or does not fit; the message names the file and the ways on.
    """
    x0 = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    expected = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    if x0.ndim != 4 or tuple(x0.shape[1:]) != expected or x0.shape[0] < 1:
        raise ValueError(f"images must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}) for this UNet; "
                         f"got {tuple(x0.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps must be a non-negative integer, batch_size >= 1 and lr > 0; "
                         f"got steps={steps!r}, batch_size={batch_size!r}, lr={lr!r}")
    if checkpoint_every is None:
        checkpoint_every = max(1, steps // 10)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer number of steps; got {checkpoint_every!r}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
    losses: list[float] = []
    done = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists() and not restart:
        done, losses = _load_checkpoint(path, unet, optimizer, generator)
        if done > steps:
            raise ValueError(f"checkpoint {path} holds {done} steps, more than the {steps} asked for; "
                             f"delete it, pass restart=True (command line: --restart), or ask for at least {done}")
    n_train = scheduler.config.num_train_timesteps
    unet.train()
    with tqdm(total=steps, initial=done, desc="train DDPM", disable=not progress) as bar:
        for step in range(done, steps):
            idx = torch.randint(0, x0.shape[0], (min(batch_size, x0.shape[0]),), generator=generator)
            batch = x0[idx]
            noise = torch.randn(batch.shape, generator=generator)
            t = torch.randint(0, n_train, (batch.shape[0],), generator=generator)
            # x_t by the scheduler's own add_noise (its float32 abar table); the loss of eq. 5 from theory
            loss = denoising_loss(noise, unet(scheduler.add_noise(batch, noise, t), t).sample)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            if path is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                _save_checkpoint({"unet": unet.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                              "losses": losses, "generator": generator.get_state()}, path)
    unet.eval()
    return losses
