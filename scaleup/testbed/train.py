"""Train the testbed (the training stages of ``python -m scaleup.testbed``, :mod:`scaleup.testbed.build`).

Two stages, as Stable Diffusion was built (Rombach et al. 2022): an ``AutoencoderKL`` on the coloured digits (MSE +
a small KL), its latents rescaled to unit variance (SD's ``scaling_factor``), then the ``CLIPTextModel`` and the
``UNet2DConditionModel`` trained jointly with the epsilon-prediction loss (:func:`theory.denoising.denoising_loss`,
seed 001 eq. 2) on captioned latents, with 10 % empty captions for classifier-free guidance and an EMA of the
weights. The result is a ``StableDiffusionPipeline`` folder written with ``save_pretrained``.

Every batch is a function of (seed, stage, iteration) alone (:func:`_batch_rng`), so a run resumed from a
checkpoint (the shared :func:`scaleup.training.loop.run_training`) draws exactly the batches the uninterrupted run
draws. The thread count is fixed (``--threads``, default 1 as every experiment here) so the weights do not depend on
the machine's cores or load.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from scaleup.atomic_write import atomic_write_text
from scaleup.testbed import data
from scaleup.testbed.model import (testbed_scheduler, testbed_text_encoder, testbed_tokenizer, testbed_unet,
                                   testbed_vae)


@dataclass(frozen=True)
class TestbedConfig:
    """Settings of the testbed's training (each also a ``--flag``)."""

    output_dir: str = "runs/testbed"
    seed: int = 0
    vae_steps: int = 1500
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    max_grad_norm: float = 1.0
    checkpoint_every: int = 500
    threads: int = 1
    resume: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})

    def __post_init__(self) -> None:
        for name in ("vae_steps", "steps", "batch_size", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        for name in ("vae_lr", "learning_rate"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1); got {self.ema_decay!r}")


#: Settings that may differ when a run is resumed: they do not change the weights of the iterations already done.
RESUMABLE_CHANGES = ("output_dir", "resume", "steps", "checkpoint_every")


def claim_output_dir(config: TestbedConfig) -> None:
    """One run per folder: a new run refuses a folder holding another (unless resuming), and a resumed run refuses
    settings that differ from the stored ones, naming them (only :data:`RESUMABLE_CHANGES` may change)."""
    out = Path(config.output_dir)
    stored_path = out / "run.json"
    settings = {k: getattr(config, k) for k in config.__dataclass_fields__}
    if stored_path.is_file():
        if not config.resume:
            raise ValueError(f"{out} holds a testbed run already; pass --resume latest to continue it, or choose "
                             "another --output-dir")
        stored = json.loads(stored_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if k not in RESUMABLE_CHANGES and stored.get(k) != settings[k])
        if changed:
            raise ValueError(f"cannot resume {out} with other settings: "
                             + ", ".join(f"{k} {stored.get(k)!r} -> {settings[k]!r}" for k in changed)
                             + f" (only {', '.join(RESUMABLE_CHANGES)} may change on resume)")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stored_path, json.dumps(settings, indent=2) + "\n")


def _batch_rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


def word_embeddings(words: list[str], width: int, seed: int) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding of each word (384-d, unit norm), projected to ``width`` dimensions by a
    fixed random Gaussian matrix (Johnson-Lindenstrauss: inner products kept up to O(1/sqrt(width)))."""
    from scaleup.text_embeddings import minilm_encoder

    e = torch.from_numpy(np.asarray(minilm_encoder().encode(words), dtype=np.float64))
    projection = torch.from_numpy(np.random.default_rng([seed, 99]).standard_normal((e.shape[1], width)))
    return (e @ projection).float()  # unit-norm rows stay about unit-norm per coordinate after the projection


def _render_batch(digits: data.Digits, rng: np.random.Generator, batch: int, *, blends: bool) -> torch.Tensor:
    idx = rng.integers(len(digits.digits), size=batch)
    m = rng.integers(0, 2, size=batch).astype(np.float32)
    if blends:  # half the batch in a blend of the inks, so the autoencoder can draw what a finetune may draw
        mixed = rng.random(batch) < 0.5
        m[mixed] = rng.random(int(mixed.sum()))
    jitter = torch.from_numpy(rng.normal(0.0, 0.03, size=(batch, 3)).astype(np.float32))
    return data.render(torch.from_numpy(digits.ink[idx]), torch.from_numpy(m), jitter=jitter)


def train_vae(config: TestbedConfig, digits: data.Digits, *, progress: bool = True):
    """Stage 1: the autoencoder (images in [-1, 1], as SD's VAE), then its scaling factor 1 / std(latents)."""
    vae = testbed_vae(config.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    for step in tqdm(range(config.vae_steps), desc="autoencoder", disable=not progress):
        rng = _batch_rng(config.seed, 1, step)
        x = _render_batch(digits, rng, config.batch_size, blends=True) * 2 - 1
        posterior = vae.encode(x).latent_dist
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        loss = torch.nn.functional.mse_loss(vae.decode(z).sample, x) + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    vae.eval()
    with torch.no_grad():
        x = _render_batch(digits, _batch_rng(config.seed, 3, 0), 1024, blends=False) * 2 - 1
        std = float(vae.encode(x).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae.requires_grad_(False)


def _latents_per_ink(vae, digits: data.Digits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Posterior mean and std of every image in each pure ink, scaled: the diffusion stage samples from them."""
    out = {}
    with torch.no_grad():
        for k, ink in enumerate(data.INKS):
            x = data.render(torch.from_numpy(digits.ink), torch.full((len(digits.ink),), float(k))) * 2 - 1
            posterior = vae.encode(x).latent_dist
            s = vae.config.scaling_factor
            out[ink] = (posterior.mean * s, posterior.std * s)
    return out


def train(config: TestbedConfig, *, progress: bool = True) -> dict:
    """Train (or resume) the testbed into ``config.output_dir``; returns the summary written to ``training.json``."""
    from accelerate import Accelerator
    from diffusers import StableDiffusionPipeline
    from diffusers.training_utils import EMAModel

    from scaleup.testbed.model import TEXT_WIDTH
    from scaleup.training.checkpoints import TrainingProgress, load_checkpoint, resolve_resume
    from scaleup.training.log import JsonlLog
    from scaleup.training.loop import run_training
    from theory.denoising import denoising_loss
    from theory.schedules import alphas_cumprod, scaled_linear_betas

    torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    claim_output_dir(config)
    started = time.process_time()
    digits = data.load_digits_16()
    vae_dir = out / "stage-1-vae"
    if (vae_dir / "config.json").is_file() and config.resume:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False)
    else:
        wall, cpu = time.perf_counter(), time.process_time()
        vae = train_vae(config, digits, progress=progress)
        vae.save_pretrained(vae_dir)
        atomic_write_text(vae_dir / "timing.json", json.dumps(
            {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}) + "\n")
    latents = _latents_per_ink(vae, digits)

    tokenizer = testbed_tokenizer(out / "tokenizer-files")
    text_encoder = testbed_text_encoder(len(tokenizer), config.seed)
    words = data.vocabulary()
    ids = [tokenizer.convert_tokens_to_ids(w + "</w>") for w in words]
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[ids] = word_embeddings(words, TEXT_WIDTH, config.seed)
    text_encoder.get_input_embeddings().requires_grad_(False)
    unet = testbed_unet(config.seed)
    trainable = [p for m in (text_encoder, unet) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=1e-4)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    ema = EMAModel(trainable, decay=config.ema_decay)
    accelerator = Accelerator(cpu=True)
    unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    progress_state = TrainingProgress()
    states = {"progress": progress_state, "ema": ema}
    resume_from = resolve_resume(out, config.resume)
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from, states)
    alpha_bar = alphas_cumprod(scaled_linear_betas()).float()
    captions = _caption_ids(tokenizer)

    def step_fn(state: TrainingProgress) -> dict:
        rng = _batch_rng(config.seed, 2, state.step)
        idx = rng.integers(len(digits.digits), size=config.batch_size)
        words_ = [data.DIGIT_WORDS[d] for d in digits.digits[idx]]
        red = rng.random(config.batch_size) < np.array([data.P_RED[w] for w in words_])
        inks = np.where(red, "red", "blue")
        texts = [data.caption(w, ink, rng) for w, ink in zip(words_, inks)]
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        mean = torch.where(torch.from_numpy(red)[:, None, None, None], latents["red"][0][idx], latents["blue"][0][idx])
        std = torch.where(torch.from_numpy(red)[:, None, None, None], latents["red"][1][idx], latents["blue"][1][idx])
        x0 = mean + std * torch.randn(mean.shape, generator=generator)
        t = torch.randint(0, len(alpha_bar), (config.batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        a = alpha_bar[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        states = text_encoder(torch.stack([captions[c] for c in texts]))[0]
        loss = denoising_loss(eps, unet(xt, t, states).sample)
        accelerator.backward(loss)
        state.data_position += config.batch_size
        return {"loss": float(loss.detach())}

    log = JsonlLog(out / "log.jsonl", resume_step=progress_state.step if resume_from is not None else None)
    unet.train(), text_encoder.train()
    run_training(accelerator, step_fn=step_fn, parameters=trainable, optimizer=optimizer, progress=progress_state,
                 n_iterations=config.steps, output_dir=out, log=log, lr_scheduler=lr_scheduler,
                 max_grad_norm=config.max_grad_norm, ema=ema, checkpoint_every=config.checkpoint_every,
                 total_limit=1, show_progress=progress, states=states)
    unet, text_encoder = accelerator.unwrap_model(unet), accelerator.unwrap_model(text_encoder)
    ema.copy_to(trainable)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=testbed_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out / "pipeline")
    losses = [row["loss"] for row in log.read()]
    vae_timing = vae_dir / "timing.json"
    summary = {"config": {k: getattr(config, k) for k in config.__dataclass_fields__},
               "cpu_seconds_this_process": time.process_time() - started,
               "autoencoder_stage": json.loads(vae_timing.read_text(encoding="utf-8")) if vae_timing.is_file() else None,
               "final_loss_mean_last_100": float(np.mean(losses[-100:])) if losses else None,
               "torch_threads": torch.get_num_threads()}
    atomic_write_text(out / "training.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _caption_ids(tokenizer) -> dict[str, torch.Tensor]:
    """Token ids of every caption the data can produce (they are few), padded to the 16-token context."""
    texts = {""}
    for d in data.DIGIT_WORDS:
        for template in data.TRAINING_TEMPLATES:
            for described in (False, True):
                base = template.format(d) + (f", a {data.SHAPE[d]} {data.PARITY[d]} digit" if described else "")
                texts.update([base] + [data.ink_prompt(base, ink) for ink in data.INKS])
    texts = sorted(texts)
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return dict(zip(texts, ids))
