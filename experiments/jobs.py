"""``run all --jobs N``: several experiments side by side, each in its own process, largest expected first.

Each experiment runs through :func:`experiments.runner.run`, which fixes the thread count (:data:`THREADS`), so a
run's numbers are the same whether it ran alone, beside another or in a sequential ``--jobs 1`` loop. With more than
one job every experiment gets a fresh process (``spawn``: torch is not fork-safe), in a process pool of its own, so
nothing global an experiment sets leaks into the next, and a process that dies takes only its own experiment with it. ``--jobs 1`` runs them one after the other in this process, as
``run all`` always did.

Standard library only at import: the command line imports this module only when it runs experiments.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import resource
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from experiments import registry
from experiments.runner import DEFAULT_OUT, RunRefused, run
from scaleup.errors import CheckpointError, ModelUnavailableError

#: Failures whose message says all there is to say; any other exception also gets its traceback printed.
CLEAR_FAILURES: tuple[type[Exception], ...] = (RunRefused, ModelUnavailableError, CheckpointError)


@dataclass(frozen=True)
class Outcome:
    """One experiment's run: its name, ``figures`` and ``missing_models`` when it finished, else ``error`` (one
    line) and, for an unexpected failure, ``traceback``; wall and CPU seconds of the attempt (imports, compute and
    drawing; CPU of the process and of the subprocesses it waited for)."""

    name: str
    figures: list[str] = field(default_factory=list)
    missing_models: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def attempt(name: str, entry: registry.Entry, options: dict) -> Outcome:
    """Run experiment ``name`` (:func:`~experiments.runner.run` with ``options``) and report how it went; never
    raises for a failing experiment. ``entry`` is the caller's catalogue line for it, so that a process started
    for this one experiment resolves the name as the caller does."""
    if registry.EXPERIMENTS.get(name) != entry:
        registry.EXPERIMENTS[name] = entry
    wall, cpu = time.perf_counter(), _cpu_seconds()
    try:
        results = run(name, **options)
    except CLEAR_FAILURES as err:
        outcome = Outcome(name, error=str(err))
    except Exception as err:  # noqa: BLE001 - `run all` goes on; the traceback goes into the bug report
        outcome = Outcome(name, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    else:
        outcome = Outcome(name, figures=list(results["figures"]), missing_models=list(results["missing_models"]))
    return replace(outcome, wall_seconds=time.perf_counter() - wall, cpu_seconds=_cpu_seconds() - cpu)


def expected_seconds(name: str, out_dir: Path) -> float:
    """How long experiment ``name`` is expected to take: ``wall_seconds`` of its last results in ``out_dir``, else
    of the committed full run; infinite (run it first) when neither is known."""
    for path in (Path(out_dir) / "results.json", DEFAULT_OUT / name / "results.json"):
        try:
            return float(json.loads(path.read_text())["wall_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return math.inf


def largest_first(out_dirs: dict[str, Path]) -> list[str]:
    """The names of ``out_dirs`` by expected seconds, longest first (unknown ones first, then by name): the long
    ones start early, so the last to finish is a short one."""
    return sorted(out_dirs, key=lambda name: (-expected_seconds(name, out_dirs[name]), name))


def run_jobs(out_dirs: dict[str, Path], options: dict, *, jobs: int) -> Iterator[Outcome]:
    """Run the experiments of ``out_dirs`` (their output folders, already checked) with ``options`` for
    :func:`~experiments.runner.run`, ``jobs`` at a time, longest expected first; yields each :class:`Outcome` as it
    finishes. ``jobs`` = 1 runs them here, one after the other; more, each in a process of its own."""
    names = largest_first(out_dirs)
    if jobs <= 1 or len(names) <= 1:
        for name in names:
            yield attempt(name, registry.EXPERIMENTS[name], options)
        return
    context = multiprocessing.get_context("spawn")  # torch + fork is unsafe
    queue = list(names)
    running: dict[Future, tuple[str, ProcessPoolExecutor]] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                # one pool, one process per experiment: nothing global leaks into the next, and a process that dies
                # (killed, out of memory) takes only its own experiment with it
                name = queue.pop(0)
                pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
                running[pool.submit(attempt, name, registry.EXPERIMENTS[name], options)] = (name, pool)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: names.index(running[f][0])):
                name, pool = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - the process died (BrokenProcessPool) or its report was lost
                    outcome = Outcome(name, error=f"{type(err).__name__}: {err} (its process ended without a report)")
                pool.shutdown(wait=True)
                yield outcome
    finally:  # interrupted, or the caller stopped reading: stop what still runs
        for _, pool in running.values():
            pool.shutdown(wait=False, cancel_futures=True)
