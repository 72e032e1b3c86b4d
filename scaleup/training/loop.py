"""The iteration loop every job shares: skip non-finite steps, clip, step, log, checkpoint, stop anywhere.

A job supplies ``step_fn(progress) -> dict`` that computes its loss for iteration ``progress.step`` (drawing its
batch at ``progress.data_position`` and advancing it), calls ``accelerator.backward`` (once, or once per sub-batch
for gradient accumulation) and returns the numbers to log. Everything else (the order of zero_grad / step /
scheduler / EMA, the finite-gradient check across processes, checkpoints) is here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from scaleup.training.checkpoints import TrainingProgress, save_checkpoint
from scaleup.training.log import JsonlLog


def _on_every_process(accelerator, local: bool) -> bool:
    """``local`` and-ed over every process, so that all of them take the same branch."""
    flag = torch.tensor([1.0 if local else 0.0], device=accelerator.device)
    return bool(accelerator.gather(flag).min() > 0)


def gradients_finite(accelerator, parameters: Iterable[torch.nn.Parameter]) -> bool:
    """True when every gradient on every process is finite (one process's inf must skip the step everywhere)."""
    return _on_every_process(accelerator, all(bool(torch.isfinite(p.grad).all()) for p in parameters
                                              if p.grad is not None))


#: Consecutive non-finite steps after which a run stops: a few are the fp16 loss scale finding its level, this many
#: are a diverged run whose next checkpoint would be worthless.
MAX_SKIPS_IN_A_ROW = 10


class NonFiniteTrainingError(RuntimeError):
    """Training produced non-finite gradients too often, or non-finite parameters; nothing more is written."""


def parameters_finite(accelerator, parameters: Iterable[torch.nn.Parameter]) -> bool:
    """True when every trained parameter on every process is finite."""
    return _on_every_process(accelerator, all(bool(torch.isfinite(p).all()) for p in parameters))


def _last_checkpoint(output_dir: str | Path) -> str:
    from scaleup.training.checkpoints import complete_checkpoints

    done = complete_checkpoints(output_dir)
    return f"the last good checkpoint is {done[-1][1]}" if done else "no checkpoint was written"


def run_training(accelerator, *, step_fn: Callable[[TrainingProgress], dict], parameters: list[torch.nn.Parameter],
                 optimizer, progress: TrainingProgress, n_iterations: int, output_dir: str | Path,
                 log: JsonlLog, lr_scheduler=None, max_grad_norm: float | None = None, ema=None,
                 checkpoint_every: int = 0, total_limit: int | None = None, until: int | None = None,
                 on_checkpoint: Callable[[Path, int], None] | None = None, show_progress: bool = True,
                 max_skips_in_a_row: int = MAX_SKIPS_IN_A_ROW, states: dict | None = None) -> int:
    """Run iterations ``progress.step .. n_iterations - 1`` (or up to ``until``); returns the iterations done.

    A step whose gradients are not all finite is skipped cleanly (no optimiser, scheduler or EMA update) and logged
    with ``skipped: true``; it still counts as an iteration, so a resumed run stays aligned with an uninterrupted one.
    ``max_skips_in_a_row`` skipped steps in a row, or an update that leaves a parameter non-finite, stop the run with
    :class:`NonFiniteTrainingError` before anything more is written (no checkpoint, no export). ``states``: the
    job's stateful objects saved with each checkpoint (:func:`scaleup.training.checkpoints.save_checkpoint`).
    """
    skips_in_a_row = 0
    stop = n_iterations if until is None else min(until, n_iterations)
    bar = tqdm(range(progress.step, stop), initial=progress.step, total=n_iterations, desc="iterations",
               disable=not (show_progress and accelerator.is_main_process))
    for _ in bar:
        optimizer.zero_grad(set_to_none=True)
        metrics = step_fn(progress)
        finite = gradients_finite(accelerator, parameters)
        if finite:
            if max_grad_norm is not None:
                accelerator.clip_grad_norm_(parameters, max_grad_norm)
            optimizer.step()
            if not parameters_finite(accelerator, parameters):
                raise NonFiniteTrainingError(
                    f"iteration {progress.step + 1}: the update left trained parameters non-finite (is the learning "
                    f"rate too high?); nothing of it was saved, {_last_checkpoint(output_dir)}")
            if lr_scheduler is not None:
                lr_scheduler.step()
            if ema is not None:
                ema.step(parameters)
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        if accelerator.is_main_process:
            log.write(progress.step, skipped=not finite, **metrics)
        if accelerator.trackers:  # --report-to: the same numbers as log.jsonl, to every started tracker
            accelerator.log({k: float(v) for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=progress.step)
        skips_in_a_row = 0 if finite else skips_in_a_row + 1
        if skips_in_a_row >= max_skips_in_a_row:
            raise NonFiniteTrainingError(
                f"iterations {progress.step - skips_in_a_row + 1}-{progress.step}: {skips_in_a_row} steps in a row "
                f"had non-finite gradients (each skipped, see log.jsonl); the run has diverged and stops, "
                f"{_last_checkpoint(output_dir)}")
        if checkpoint_every and progress.step % checkpoint_every == 0:
            path = save_checkpoint(accelerator, output_dir, progress.step, total_limit=total_limit, states=states)
            if on_checkpoint is not None:
                on_checkpoint(path, progress.step)
    return progress.step
