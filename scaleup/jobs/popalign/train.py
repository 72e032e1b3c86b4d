"""Stage 3: PopAlign (seed 001, Sec. 3.3, eq. 9) or the SFT baseline on SD 1.5 / SDXL, with accelerate.

- Full U-Net finetune (the public SDXL recipe: ``configs/sdxl_full.yaml``): the reference is a frozen copy of the
  pretrained U-Net in the weight dtype; 8-bit AdamW where bitsandbytes imports (on a GPU), torch AdamW otherwise.
- LoRA on the U-Net's attention projections: the reference is the same U-Net with its adapter disabled
  (:func:`scaleup.models.adapters.adapters_disabled`), no second copy.
- Checkpoints, resume, JSONL log and the iteration loop are :mod:`scaleup.training`'s (a resumed run equals an
  uninterrupted one; a LoRA run's checkpoints hold the adapter, not the frozen base); the trained weights are saved diffusers-loadable: ``OUT/unet`` (``save_pretrained``, load with
  ``UNet2DConditionModel.from_pretrained``) or ``OUT/lora`` (``pipe.load_lora_weights``).
- At the end, the implied population reward accuracy of App. E over whole set pairs: the share of pairs with
  A(X^w) = sum_i r(x^w_i) > A(X^l), each r a one-timestep estimate with the pair's shared noise and timestep.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from scaleup.atomic_write import atomic_write_text
from scaleup.job_config import config_to_dict
from scaleup.jobs.popalign.conditioning import encode_captions, encode_latents, is_sdxl
from scaleup.jobs.popalign.config import TrainConfig
from scaleup.jobs.popalign.preference_data import (PreferencePair, batch_indices, load_pixels,
                                                   read_preference_pairs, set_pairs)
from scaleup.jobs.popalign.step import lora_reference, noised_pairs, popalign_step, sft_step, unet_predictor
from scaleup.setting_ranges import check_ranges
from scaleup.training.checkpoints import TrainingProgress, load_checkpoint, resolve_resume
from scaleup.training.launch_precision import check_launch_precision
from scaleup.training.run_folder import BUDGET_FREE_SCHEDULES, run_folder_for
from scaleup.training.trackers import check_report_to, log_with, start_trackers
from scaleup.training.log import JsonlLog
from scaleup.training.loop import run_training
from theory.popalign import diffusion_log_ratio, implied_reward_accuracy

RESULTS_FILE = "train_results.json"
_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def validate(config: TrainConfig) -> None:
    """Refuse bad settings before anything loads, naming the setting and what is expected."""
    choices = {"loss": ("popalign", "sft"), "finetune": ("full", "lora"), "mixed_precision": tuple(_DTYPES)}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(config, name)!r}")
    check_ranges(config)  # every numeric setting against the range declared on its field
    if config.resolution is not None and config.resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 (or None for the pipeline's size); got "
                         f"{config.resolution!r}")
    if config.family not in (None, "sd15", "sdxl"):
        raise ValueError(f"family must be sd15 or sdxl (or None to read it from the folder); got {config.family!r}")


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, 8-bit (bitsandbytes) when asked for and usable; returns the optimiser and what was used."""
    kwargs = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb

            if torch.cuda.is_available():
                return bnb.optim.AdamW8bit(params, **kwargs), "bitsandbytes AdamW8bit"
            note = "use_8bit_adam: no GPU, torch AdamW used"
        except ImportError:
            note = "use_8bit_adam: bitsandbytes does not import here, torch AdamW used"
    else:
        note = "torch AdamW"
    return torch.optim.AdamW(params, **kwargs), note


def _place(module: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    # a dtype cast only when needed: diffusers warns on every .to(dtype=...) of its models
    if next(module.parameters()).dtype != dtype:
        module.to(dtype=dtype)
    return module.to(device)


LORA_STATE_FILE = "unet_lora.safetensors"


def _checkpoint_lora_only(accelerator, unet: torch.nn.Module) -> None:
    """Checkpoints of a LoRA run hold the adapter, not the frozen base U-Net (5 GB for SDXL), as diffusers' LoRA
    training scripts do with these same accelerate hooks; the base is reloaded from the pipeline on resume."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    def is_unet(model) -> bool:
        return accelerator.unwrap_model(model) is unet

    def save_hook(models, weights, output_dir):
        for i in reversed(range(len(models))):
            if is_unet(models[i]):
                if accelerator.is_main_process:
                    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
                    save_file(state, str(Path(output_dir) / LORA_STATE_FILE))
                weights.pop(i)

    def load_hook(models, input_dir):
        for i in reversed(range(len(models))):
            if is_unet(models[i]):
                models.pop(i)
                result = set_peft_model_state_dict(unet, load_file(str(Path(input_dir) / LORA_STATE_FILE)))
                if getattr(result, "unexpected_keys", None):
                    raise ValueError(f"checkpoint {input_dir}: LoRA keys that this U-Net lacks: "
                                     f"{result.unexpected_keys[:3]}")

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


class PopAlignTrainer:
    """The models, data and step of one training run (built by :func:`run_train`)."""

    def __init__(self, config: TrainConfig, accelerator, pipe, pairs: list[PreferencePair]):
        from diffusers import DDPMScheduler

        self.config, self.accelerator, self.pipe, self.pairs = config, accelerator, pipe, pairs
        device = accelerator.device
        self.weight_dtype = _DTYPES[config.mixed_precision]
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.resolution = config.resolution or int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
        for name in ("text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                _place(module.requires_grad_(False).eval(), device, self.weight_dtype)
        # SDXL's VAE overflows in float16: it stays float32 when its config asks for the upcast.
        vae_dtype = torch.float32 if getattr(pipe.vae.config, "force_upcast", False) else self.weight_dtype
        _place(pipe.vae.requires_grad_(False).eval(), device, vae_dtype)
        unet = pipe.unet
        if config.finetune == "lora":
            from scaleup.models.adapters import add_unet_lora

            _place(unet, device, self.weight_dtype)
            self.parameters = add_unet_lora(unet, config.lora_rank, trainable_dtype=torch.float32)
            self.reference = lora_reference(unet)
        else:
            reference_unet = _place(copy.deepcopy(unet).requires_grad_(False).eval(), device, self.weight_dtype)
            self.reference = unet_predictor(reference_unet)
            self.reference_unet = reference_unet
            _place(unet.requires_grad_(True), device, torch.float32)
            self.parameters = list(unet.parameters())
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        self.optimizer, self.optimizer_note = make_optimizer(self.parameters, config)
        from diffusers.optimization import get_scheduler

        # accelerate steps a prepared scheduler once per process per iteration, hence the factor
        self.lr_scheduler = get_scheduler(config.lr_scheduler, self.optimizer,
                                          num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                          num_training_steps=config.max_train_steps * accelerator.num_processes)
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(unet, self.optimizer, self.lr_scheduler)
        self.model = unet_predictor(self.unet)
        if config.finetune == "lora":
            _checkpoint_lora_only(accelerator, unet)

    def reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, "mean")

    def batch(self, indices: list[int], generator: torch.Generator | None = None):
        """Latents of the winners and losers of the pairs ``indices`` and their conditioning (for 2B rows)."""
        chosen = [self.pairs[i] for i in indices]
        pixels_w, sizes_w, corners_w = load_pixels([p.winner for p in chosen], self.resolution)
        pixels_l, sizes_l, corners_l = load_pixels([p.loser for p in chosen], self.resolution)
        latents = encode_latents(self.pipe.vae, torch.cat([pixels_w, pixels_l]), generator=generator)
        latents = latents.to(self.weight_dtype if self.config.finetune == "lora" else torch.float32)
        captions = [p.caption for p in chosen] * 2
        cond = encode_captions(self.pipe, captions, device=self.accelerator.device, dtype=self.weight_dtype,
                               original_sizes=sizes_w + sizes_l, crop_top_lefts=corners_w + corners_l,
                               target_size=(self.resolution, self.resolution))
        half = len(chosen)
        return latents[:half], latents[half:], cond

    def step(self, progress: TrainingProgress) -> dict:
        """One iteration's loss and backward (the ``step_fn`` of :func:`scaleup.training.run_training`)."""
        acc, config = self.accelerator, self.config
        indices = batch_indices(len(self.pairs), config.pairs_per_device, acc.num_processes, acc.process_index,
                                progress.data_position, config.seed)
        progress.data_position += 1
        latents_w, latents_l, cond = self.batch(indices)
        noise = torch.randn_like(latents_w)  # the global RNG: saved and restored with every checkpoint
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents_w.shape[0],),
                                  device=latents_w.device)
        noisy, target, t = noised_pairs(self.noise_scheduler, latents_w, latents_l, noise, timesteps)
        with acc.autocast():
            if config.loss == "sft":
                half = latents_w.shape[0]
                result = sft_step(self.model, noisy[:half], target[:half], t[:half], cond.select(slice(0, half)))
            else:
                result = popalign_step(self.model, self.reference, noisy, target, t, cond, beta_prime=config.beta_prime,
                                       alpha=config.alpha, reduce_mean=self.reduce_mean)
        acc.backward(result.loss)
        metrics = dict(result.metrics, lr=self.lr_scheduler.get_last_lr()[0])
        if config.loss == "popalign":
            # every process's winner and loser means, so the log shows what mu was formed from
            local = torch.tensor([[metrics["r_winner"], metrics["r_loser"]]], device=acc.device)
            metrics["r_means_per_process"] = acc.gather(local).cpu().tolist()
        return metrics

    @torch.no_grad()
    def set_reward_accuracy(self, max_sets: int) -> dict | None:
        """App. E over whole set pairs (module docstring); draws from its own seeded generator."""
        grouped = set_pairs(self.pairs)
        chosen = sorted(grouped)[:max_sets]
        if not chosen:
            return None
        generator = torch.Generator("cpu").manual_seed(self.config.seed)
        unwrapped = unet_predictor(self.accelerator.unwrap_model(self.unet))
        sums_w, sums_l = [], []
        for set_id in chosen:
            members = grouped[set_id]
            latents_w, latents_l, cond = self.batch([self.pairs.index(p) for p in members], generator)
            noise = torch.randn(latents_w.shape, generator=generator).to(latents_w)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents_w.shape[0],),
                                      generator=generator).to(latents_w.device)
            noisy, target, t = noised_pairs(self.noise_scheduler, latents_w, latents_l, noise, timesteps)
            with self.accelerator.autocast():
                r = diffusion_log_ratio(target.float(), unwrapped(noisy, t, cond).float(),
                                        self.reference(noisy, t, cond).float()).double()
            half = latents_w.shape[0]
            sums_w.append(r[:half].sum())
            sums_l.append(r[half:].sum())
        a_w, a_l = torch.stack(sums_w)[:, None].cpu(), torch.stack(sums_l)[:, None].cpu()
        return {"accuracy": implied_reward_accuracy(a_w, a_l), "set_pairs": len(chosen),
                "mean_A_winner": float(a_w.mean()), "mean_A_loser": float(a_l.mean())}

    def save_weights(self, out: Path) -> dict:
        """The trained weights, diffusers-loadable (main process writes)."""
        unet = self.accelerator.unwrap_model(self.unet)
        if self.config.finetune == "lora":
            from scaleup.models.adapters import save_lora

            path = save_lora(self.pipe, out / "lora", is_main_process=self.accelerator.is_main_process)
            return {"lora": str(path)}
        if self.accelerator.is_main_process:
            unet.save_pretrained(out / "unet")
        return {"unet": str(out / "unet")}


def run_train(config: TrainConfig, *, pipe=None, progress: bool = True, return_trainer: bool = False):
    """Train (or resume) as configured; returns the results (also ``OUT/train_results.json`` when finished).

    ``pipe``: an already-loaded pipeline, whose U-Net is trained in place (tests, experiments); None loads
    ``config.pipeline`` in float32. ``return_trainer``: also return the :class:`PopAlignTrainer` (its models).
    """
    from scaleup.processes import make_accelerator

    validate(config)
    check_launch_precision(config.mixed_precision)
    check_report_to(config.report_to)
    pairs = read_preference_pairs(config.data)  # a table naming missing images fails here, before any model
    accelerator = make_accelerator(mixed_precision=config.mixed_precision, log_with=log_with(config.report_to),
                              project_dir=config.out)
    with run_folder_for(accelerator, config.out, job="scaleup.jobs.popalign train",
                        config_settings=config_to_dict(config), resume=config.resume, start_over=config.start_over,
                        may_change=may_change_on_resume(config), option="--out"):
        return _train_claimed(config, accelerator, pairs, pipe, progress, return_trainer)


def may_change_on_resume(config: TrainConfig) -> tuple[str, ...]:
    """The settings a resumed run may change (:mod:`scaleup.training.run_folder`): where it stops, how it
    checkpoints, the end-of-run measurement; the step budget only under a schedule that does not stretch over it."""
    free = ("out", "resume", "start_over", "until", "checkpoint_every", "checkpoints_total_limit",
            "reward_accuracy_sets", "report_to")
    return free + (("max_train_steps",) if config.lr_scheduler in BUDGET_FREE_SCHEDULES else ())


def _train_claimed(config: TrainConfig, accelerator, pairs, pipe, progress: bool, return_trainer: bool):
    from accelerate.utils import set_seed

    out = Path(config.out)
    resume = resolve_resume(out, config.resume)
    set_seed(config.seed, device_specific=True)  # each process its own noise; the checkpoints keep every stream
    if pipe is None:
        from scaleup.models.loading import load_pipeline

        pipe = load_pipeline(config.pipeline, family=config.family, torch_dtype=torch.float32, scheduler=None)
    trainer = PopAlignTrainer(config, accelerator, pipe, pairs)
    state = TrainingProgress()
    if resume is not None:
        load_checkpoint(accelerator, resume, {"progress": state})
    log = JsonlLog(out / "log.jsonl", resume_step=state.step if resume is not None else None,
                   enabled=accelerator.is_main_process)
    tracking = start_trackers(accelerator, config.report_to, "popalign", config_to_dict(config))
    run_training(accelerator, step_fn=trainer.step, parameters=trainer.parameters, optimizer=trainer.optimizer,
                 progress=state, n_iterations=config.max_train_steps, output_dir=out, log=log,
                 lr_scheduler=trainer.lr_scheduler, max_grad_norm=config.max_grad_norm,
                 checkpoint_every=config.checkpoint_every, total_limit=config.checkpoints_total_limit,
                 until=config.until, show_progress=progress, states={"progress": state})
    if tracking:
        accelerator.end_training()
    results = {"config": config_to_dict(config), "iterations_done": state.step, "resumed_from": str(resume) if
               resume is not None else None, "optimizer": trainer.optimizer_note, "sdxl": is_sdxl(pipe),
               "trainable_parameters": sum(p.numel() for p in trainer.parameters), "pairs": len(pairs),
               "finished": state.step >= config.max_train_steps}
    if not results["finished"]:
        accelerator.wait_for_everyone()
        return (results, trainer) if return_trainer else results
    trainer.unet.eval()
    results["set_reward_accuracy"] = (trainer.set_reward_accuracy(config.reward_accuracy_sets)
                                      if config.reward_accuracy_sets else None)
    results["weights"] = trainer.save_weights(out)
    if accelerator.is_main_process:
        lines = log.read()
        results["last_log"] = lines[-1] if lines else None
        results["skipped_steps"] = [e["step"] for e in lines if e.get("skipped")]  # as the aDFT job counts them
        atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return (results, trainer) if return_trainer else results
