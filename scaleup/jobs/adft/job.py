"""The aDFT job: checks, models, optimiser, checkpoints, the iteration loop, exports, evaluation (seed 000 [0121]).

``run_job(config)`` runs (or resumes) one finetuning run into ``config.output_dir``::

    output_dir/run.json              the resolved settings, models used, versions, processes (written at start)
    output_dir/log.jsonl             one line per iteration: every loss term, class frequencies, skipped steps
    output_dir/checkpoint-N/         the full state (model, optimiser, LR schedule, EMA, RNG, data position)
                        export/      the weights as diffusers loads them (scaleup.jobs.adft.export)
    output_dir/evaluations.jsonl     held-out bias per evaluated checkpoint; best/ the best export
    output_dir/final/                the weights after the last iteration
    output_dir/results.json          summary: last iteration, evaluations, checks

Under ``accelerate launch`` every process holds the models and N / P images of each iteration; only the trained
parameters' gradients are exchanged (summed), so no model is wrapped in DistributedDataParallel and the gradient
accumulation over sub-batches needs no ``no_sync``. The trained parameters, the LR schedule, the EMA and the
position are saved with each checkpoint as safetensors + JSON (:mod:`scaleup.training.checkpoints`: nothing is
pickled); the optimiser is prepared by accelerate.
"""

from __future__ import annotations

import datetime
import json
import time
from importlib import metadata
from pathlib import Path

import torch

from scaleup.jobs.adft.components import Components, build_components
from scaleup.jobs.adft.config import AdftConfig, JobPlan, plan_job
from scaleup.jobs.adft.export import evaluate_export, export_weights, read_evaluations, record_evaluation
from scaleup.jobs.adft.step import AdftStep
from scaleup.job_config import config_to_dict
from scaleup.prompts import prompts_cut, warn_prompts_cut
from scaleup.training.checkpoints import TrainingProgress, load_checkpoint, resolve_resume
from scaleup.training.launch_precision import check_launch_precision
from scaleup.training.run_folder import BUDGET_FREE_SCHEDULES, run_folder_for
from scaleup.training.trackers import log_with, start_trackers
from scaleup.training.log import JsonlLog
from scaleup.training.loop import run_training


class ParameterState:
    """The trained parameters as an object accelerate saves with a checkpoint and loads back in place."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]]) -> None:
        self.named = named

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.named}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name, _ in self.named if name not in state]
        if missing:
            raise ValueError(f"the checkpoint lacks trained parameters {missing[:3]}...: it was written by a run "
                             "with another adapter; resume with the same --adapter and ranks")
        with torch.no_grad():
            for name, p in self.named:
                p.copy_(state[name].to(p.device, p.dtype))


def pooled_prompts(plan: JobPlan) -> list[str]:
    """The prompts of all the run's prompt sets, in set and file order ([0134]: several families at once)."""
    from scaleup.prompts import load_prompt_set

    return [p for name in plan.prompts for p in load_prompt_set(name).prompts]


def parameters_identical_across_processes(accelerator, params: list[torch.nn.Parameter]) -> bool:
    """Whether every process holds bit-identical trained parameters (they must: the same summed gradient)."""
    if accelerator.num_processes == 1:
        return True
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])[None]
    gathered = accelerator.gather(flat)
    return bool(all(torch.equal(gathered[0], row) for row in gathered))


def _versions() -> dict:
    found = {}
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _write_json(path: Path, payload: dict) -> None:
    from scaleup.atomic_write import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def run_job(config: AdftConfig, *, components: Components | None = None, timer=None) -> dict:
    """Run or resume the job of ``config`` (module docstring); returns the summary written to results.json (main
    process; ``{}`` elsewhere). ``components`` replaces the models loaded from ``config`` (tests, benchmarks)."""
    from scaleup.processes import make_accelerator

    started = time.perf_counter()
    accelerator = make_accelerator(log_with=log_with(config.report_to), project_dir=config.output_dir)
    plan = plan_job(config, num_processes=accelerator.num_processes, check_models=components is None)
    check_launch_precision(config.mixed_precision)
    with run_folder_for(accelerator, config.output_dir, job="scaleup.jobs.adft", config_settings=config_to_dict(config),
                        resume=config.resume, start_over=config.start_over, may_change=may_change_on_resume(config)):
        return _run_claimed(config, plan, accelerator, components, timer, started)


def may_change_on_resume(config: AdftConfig) -> tuple[str, ...]:
    """The settings a resumed run may change (:mod:`scaleup.training.run_folder`): where it stops, how it
    checkpoints, reports and evaluates its checkpoints (the evaluation draws from its own seeded generators, so the
    weights do not depend on it: the ``adft-sd`` experiment resumes with it on and matches an uninterrupted run
    without it bit for bit); the iteration budget only under a learning-rate schedule that does not stretch over it."""
    free = ("output_dir", "resume", "start_over", "until", "checkpoint_every", "checkpoints_total_limit", "progress",
            "report_to", "evaluate_checkpoints", "test_prompts", "eval_attribute", "eval_classifier",
            "eval_detector", "eval_images_per_prompt", "eval_max_prompts", "eval_batch_size")
    return free + (("iterations",) if config.lr_scheduler in BUDGET_FREE_SCHEDULES else ())


def _run_claimed(config: AdftConfig, plan: JobPlan, accelerator, components: Components | None, timer,
                 started: float) -> dict:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    out = Path(config.output_dir)
    resume_path = resolve_resume(out, config.resume)
    prompts = pooled_prompts(plan)
    if components is None:
        components = build_components(config, plan, accelerator.device)
    soft_tokens = 0 if components.soft_prompt is None else components.soft_prompt.num_tokens
    cut = prompts_cut(components.pipe.tokenizer, prompts, reserved=soft_tokens)
    if accelerator.is_main_process:
        warn_prompts_cut(cut, job="scaleup.jobs.adft")

    trainable = components.trainable
    optimizer = torch.optim.AdamW(trainable, lr=plan.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  eps=config.adam_epsilon, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=plan.iterations)
    # the scheduler is saved with the checkpoints' states, not prepared: a prepared one steps once per process
    optimizer = accelerator.prepare(optimizer)
    progress = TrainingProgress()
    states = {"parameters": ParameterState(components.named_trainable), "lr_scheduler": lr_scheduler,
              "progress": progress}
    ema = None
    if config.ema:
        ema = EMAModel(trainable, decay=config.ema_decay)
        states["ema"] = ema
    if resume_path is not None:
        load_checkpoint(accelerator, resume_path, states)
    log = JsonlLog(out / "log.jsonl", resume_step=progress.step if resume_path is not None else None,
                   enabled=accelerator.is_main_process)
    tracking = start_trackers(accelerator, config.report_to, "adft", config_to_dict(config))
    run_info = {"job": "scaleup.jobs.adft", "config": config_to_dict(config), "plan": _plan_dict(plan),
                "models": components.used, "processes": accelerator.num_processes, "prompts_cut": cut,
                "resumed_from": None if resume_path is None else str(resume_path), "versions": _versions()}
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "run.json", run_info)

    step_fn = AdftStep(accelerator, config, plan, components, prompts, timer=timer)

    def on_checkpoint(path: Path, n: int) -> None:
        if accelerator.is_main_process:
            export_weights(components, path / "export", ema=ema)
        accelerator.wait_for_everyone()
        if config.evaluate_checkpoints:
            summary = evaluate_export(config, plan, components, n, out)
            if accelerator.is_main_process:
                record_evaluation(out, summary, path / "export")
            accelerator.wait_for_everyone()

    done = run_training(accelerator, step_fn=step_fn, parameters=trainable, optimizer=optimizer, progress=progress,
                        n_iterations=plan.iterations, output_dir=out, log=log, lr_scheduler=lr_scheduler,
                        max_grad_norm=config.max_grad_norm, ema=ema, checkpoint_every=config.checkpoint_every,
                        total_limit=config.checkpoints_total_limit, until=config.until,
                        on_checkpoint=on_checkpoint, show_progress=config.progress, states=states)
    finished = done >= plan.iterations
    if finished and accelerator.is_main_process:
        export_weights(components, out / "final", ema=ema)
    identical = parameters_identical_across_processes(accelerator, trainable)
    accelerator.wait_for_everyone()
    if tracking:
        accelerator.end_training()
    if not accelerator.is_main_process:
        return {}
    entries = log.read()
    evaluations = read_evaluations(out)
    ranked = [e for e in evaluations if e.get("mean_bias") is not None]
    results = {
        **run_info, "iterations_done": done, "finished": finished,
        "skipped_steps": [e["step"] for e in entries if e.get("skipped")],
        "last": entries[-1] if entries else None, "evaluations": evaluations,
        "best": min(ranked, key=lambda e: (e["mean_bias"], e["step"])) if ranked else None,
        "parameters_identical_across_processes": identical,
        "final_weights": str(out / "final") if finished else None,
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_this_run": round(time.perf_counter() - started, 3),
    }
    _write_json(out / "results.json", results)
    return results


def _plan_dict(plan: JobPlan) -> dict:
    return {"preset": plan.preset, "paragraph": plan.paragraph, "batch_size": plan.batch_size,
            "threshold": plan.threshold, "lambda_face": plan.lambda_face, "iterations": plan.iterations,
            "learning_rate": plan.learning_rate, "loss_scale": plan.loss_scale, "prompts": list(plan.prompts),
            "test_prompts": list(plan.test_prompts), "eval_attribute": plan.eval_attribute,
            "attributes": [{"name": a.name, "classes": list(a.class_names), "target": list(a.target),
                            "lambda_img": [a.weights.agree, a.weights.outside_face, a.weights.face],
                            "conditional_on": list(a.conditional_on), "classifier": a.classifier}
                           for a in plan.attributes]}
