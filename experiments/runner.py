"""Run an experiment and record it: ``OUT/NAME/results.json`` (results, config, seed, versions) beside its figures.

Nothing already saved is lost. Full runs at the default seed go to ``paper_figures/out`` (the committed results);
``--quick`` runs and other seeds get their own default folders (:func:`default_out`), and a run refuses, before any
compute, to replace a full run's ``results.json`` with a quick or differently seeded one, wherever ``out`` points.
Every file is written atomically (:func:`scaleup.atomic_write.atomic_write`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import operator
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from experiments.experiment import Experiment, RunContext, save_figure
from experiments.registry import EXPERIMENTS, load
from experiments.source_hash import experiment_source
from scaleup.atomic_write import atomic_write_text

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPOSITORY / "paper_figures" / "out"
DEFAULT_SEED = 0
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes at most 64 bits
#: Threads of every run: torch's intra-op threads and every BLAS / OpenMP pool (issue 21). A parallel reduction's
#: result depends on how many threads split it, so a run fixes the count, whatever the machine's cores,
#: OMP_NUM_THREADS, the caller's torch.set_num_threads or the work beside it; ``run all --jobs N`` runs N experiments
#: side by side instead. Recorded as ``threads`` in results.json.
THREADS = 1
#: Read by BLAS and OpenMP libraries when they are loaded: a library first loaded during a run (scipy's OpenBLAS,
#: scikit-learn's OpenMP, from an import inside the experiment) starts at THREADS threads.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_VERSIONED = ("fairdiff", "numpy", "scipy", "torch", "sympy", "matplotlib", "diffusers", "transformers", "scikit-learn")


class RunRefused(ValueError):
    """A run refused before any compute: unknown name, bad seed, unusable output folder, or a result it would
    replace. The message is one line naming the argument, what was wrong and what to do."""


class PlotRefused(ValueError):
    """``plot`` cannot redraw: unknown name, no ``results.json``, or one made by a version of the experiment whose
    keys the plot step cannot read. The message is one line naming the file and what to do."""


def default_out(*, quick: bool = False, seed: int | None = None) -> Path:
    """The default output root of a run: ``paper_figures/out`` for a full run at the default seed (the committed
    results), ``paper_figures/out-quick`` for ``--quick``, ``paper_figures/out-seed{S}`` (or ``out-quick-seed{S}``)
    for another seed."""
    seed = DEFAULT_SEED if seed is None else seed
    suffix = ("-quick" if quick else "") + (f"-seed{seed}" if seed != DEFAULT_SEED else "")
    return DEFAULT_OUT.with_name(DEFAULT_OUT.name + suffix)


def versions() -> dict[str, str | None]:
    """Python, platform, the installed versions of the packages the results depend on, and the git commit."""
    found: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    found["git_commit"] = commit
    return found


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (unique temporary file, fsync, rename)."""
    atomic_write_text(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def check_seed(seed: Any) -> int:
    """The seed as an int in [0, 2^64 - 1]; :class:`RunRefused` otherwise."""
    if isinstance(seed, bool):
        raise RunRefused(f"seed must be an integer in [0, 2^64 - 1]; got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise RunRefused(f"seed must be an integer in [0, 2^64 - 1]; got {seed!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise RunRefused(f"seed must be an integer in [0, 2^64 - 1] (64 bits, what torch seeds take); got {seed}")
    return seed


def prepare_output(name: str, *, quick: bool, seed: int, out: str | os.PathLike | None) -> Path:
    """Create and check ``OUT/NAME`` before any compute: a writable folder whose ``results.json``, if any, this run
    may replace. Returns the folder; raises :class:`RunRefused` with a one-line reason otherwise."""
    explicit = out is not None
    root = Path(out) if explicit else default_out(quick=quick, seed=seed)
    flag = f"--out {root}" if explicit else f"the default output folder {root}"
    for parent in (root, *root.parents):
        if parent.exists():
            if not parent.is_dir():
                raise RunRefused(f"{flag}: {parent} is a file, not a folder; pass --out a folder (it is created "
                                 f"if absent)")
            break
    out_dir = root / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as err:
        raise RunRefused(f"{flag}: cannot write to {out_dir} ({err.strerror or type(err).__name__}); pass --out "
                         f"a writable folder") from None
    _check_replaceable(out_dir / "results.json", quick=quick, seed=seed, explicit=explicit)
    return out_dir


def _check_replaceable(path: Path, *, quick: bool, seed: int, explicit: bool) -> None:
    """A quick run, or a run at another seed, never replaces a full run's results (issue 9: results never lost)."""
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text())
        previous_quick, previous_seed = bool(previous["quick"]), previous["seed"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunRefused(f"{path} exists but is not a readable results.json ({type(err).__name__}); move it away "
                         f"or pass another --out") from None
    if previous_quick:
        return
    if quick or seed != previous_seed:
        this = "a --quick run" if quick else f"a run with seed {seed}"
        if quick and seed != previous_seed:
            this = f"a --quick run with seed {seed}"
        hint = f"pass another --out (without --out this run goes to {default_out(quick=quick, seed=seed)})" \
            if explicit else "pass another --out"
        raise RunRefused(f"{path} holds a full run with seed {previous_seed}, which {this} must not replace; {hint}")


@contextlib.contextmanager
def fixed_threads(threads: int = THREADS) -> Iterator[None]:
    """Run the enclosed code at ``threads`` threads in torch and in every BLAS / OpenMP pool, with torch's
    deterministic algorithms (warn only), and restore everything afterwards.

    torch.set_num_threads (and set_num_interop_threads where torch still allows it: once per process, before any
    inter-op work; it does not change numbers), threadpoolctl's limit on every BLAS / OpenMP library already loaded
    (numpy's and torch's: both are imported first), and OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS for
    a library first loaded inside (it keeps that count afterwards). Deterministic algorithms change no number on
    CPU here (issue 21); they are asked for so that a kernel with a nondeterministic variant warns. Imports torch:
    call it in a run, never in the catalogue's path.
    """
    saved_variables = {variable: os.environ.get(variable) for variable in _THREAD_VARIABLES}
    os.environ.update({variable: str(threads) for variable in _THREAD_VARIABLES})
    try:
        import numpy  # noqa: F401 - its BLAS loaded, so that threadpool_limits reaches it
        import torch
        from threadpoolctl import threadpool_limits

        saved_threads = torch.get_num_threads()
        saved_deterministic = (torch.are_deterministic_algorithms_enabled(),
                               torch.is_deterministic_algorithms_warn_only_enabled())
        with contextlib.suppress(RuntimeError):  # allowed once per process, before any inter-op parallel work
            torch.set_num_interop_threads(threads)
        try:
            with threadpool_limits(limits=threads):
                torch.set_num_threads(threads)
                torch.use_deterministic_algorithms(True, warn_only=True)
                yield
        finally:
            torch.use_deterministic_algorithms(saved_deterministic[0], warn_only=saved_deterministic[1])
            torch.set_num_threads(saved_threads)
    finally:
        for variable, value in saved_variables.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def run(name: str, *, quick: bool = False, out: str | os.PathLike | None = None, seed: int | None = None,
        restart: bool = False, allow_missing_models: bool = False, retrain: bool = False,
        reevaluate: bool = False) -> dict:
    """Run experiment ``name`` and return the dictionary written to ``OUT/NAME/results.json``.

    Parameters
    ----------
    name : str
        An experiment of :data:`experiments.registry.EXPERIMENTS` (``python -m experiments list``).
    quick : bool
        The smaller configuration, which finishes in under a minute on 2 cores.
    out : path, optional
        Output root. Default :func:`default_out`: ``paper_figures/out`` for a full run at the default seed,
        ``paper_figures/out-quick`` / ``out-seed{S}`` otherwise. A quick or differently seeded run never replaces a
        full run's ``results.json`` (:class:`RunRefused`, before any compute).
    seed : int, optional
        Seed of every random draw of the run, in [0, 2^64 - 1]; default 0.
    restart : bool
        Train from scratch instead of resuming from a checkpoint (experiments that train, e.g. ``gmm-digits``).
    retrain : bool
        Train anew what the experiment otherwise reuses from a committed artifact (``testbed-train``: the testbed).
    reevaluate : bool
        Recompute every evaluation the experiment otherwise reuses from its committed summaries after checking a
        sample of them (``testbed-methods``).
    allow_missing_models : bool
        Run without models that are not on this machine and record their absence (``missing_models``), instead of
        stopping with :class:`~scaleup.errors.ModelUnavailableError`. A model named by an environment variable
        that cannot be loaded is an error either way.

    The experiment runs at :data:`THREADS` threads (:func:`fixed_threads`), so that its numbers do not depend on
    the machine, the environment or the caller's thread settings; ``threads`` in ``results.json`` records it.

    Raises
    ------
    RunRefused
        For an unknown name, a bad seed, an output folder that is a file or not writable, or a result this run
        must not replace; raised before any compute.
    """
    if name not in EXPERIMENTS:
        raise RunRefused(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    seed = DEFAULT_SEED if seed is None else check_seed(seed)
    out_dir = prepare_output(name, quick=quick, seed=seed, out=out)
    experiment = load(name)
    source = experiment_source(name)  # the code as loaded, before it runs (tests/test_results_fresh.py)
    ctx = RunContext(name=name, out_dir=out_dir, seed=seed, quick=quick, restart=restart,
                     allow_missing_models=allow_missing_models, retrain=retrain,
                     reevaluate=reevaluate)
    config = experiment.make_config(quick)
    with fixed_threads(THREADS):
        started = datetime.datetime.now(datetime.timezone.utc)
        results = experiment.run(config, ctx)  # the compute step draws nothing (issue 13)
        finished = datetime.datetime.now(datetime.timezone.utc)
    payload = {
        "experiment": name,
        "summary": EXPERIMENTS[name].summary,
        "seed": ctx.seed,
        "quick": quick,
        "config": config,
        "retrain": retrain,
        **results,
        "figures": sorted(ctx.figures),
        "missing_models": ctx.missing_models,
        "threads": THREADS,
        "versions": versions(),
        "source": source,
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round((finished - started).total_seconds(), 3),
    }
    # a concurrent run may have written a full result meanwhile: check again just before replacing it
    _check_replaceable(out_dir / "results.json", quick=quick, seed=seed, explicit=out is not None)
    # the results are saved before any drawing, so a failing plot step loses no compute (`plot NAME` redraws)
    write_json_atomic(out_dir / "results.json", payload)
    # the figures are drawn from the results as results.json holds them, so a redraw (`plot`) gives the same figures
    drawn = _draw(experiment, json.loads(json.dumps(_jsonable(payload), allow_nan=False)), out_dir)
    if drawn:
        payload["figures"] = sorted(set(ctx.figures) | set(drawn))
        write_json_atomic(out_dir / "results.json", payload)
    return json.loads(json.dumps(_jsonable(payload)))


def _draw(experiment: Experiment, results: dict, out_dir: Path) -> list[str]:
    """Run the plot step of ``experiment`` on ``results`` and save each figure atomically as ``out_dir/stem.png``;
    returns the file names (none for an experiment without a plot step)."""
    if experiment.plot is None:
        return []
    import matplotlib.pyplot as plt

    names = []
    for stem, fig in experiment.plot(results).items():
        try:
            names.append(save_figure(fig, out_dir, stem))
        finally:
            plt.close(fig)
    return names


def _stored(name: str, out: str | os.PathLike | None) -> tuple[Path, dict, Experiment, str]:
    """(path, results, experiment, rerun command) of an existing ``OUT/NAME/results.json``; :class:`PlotRefused`
    when it is absent, unreadable, of another experiment, or the experiment has no plot step."""
    if name not in EXPERIMENTS:
        raise PlotRefused(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    root = DEFAULT_OUT if out is None else Path(out)
    path = root / name / "results.json"
    rerun = f"python -m experiments run {name}" + ("" if out is None else f" --out {root}")
    if not path.is_file():
        raise PlotRefused(f"no results to plot: {path} does not exist; compute them first with `{rerun}`")
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PlotRefused(f"{path} is not a readable results.json ({type(err).__name__}); recompute it with "
                          f"`{rerun}`") from None
    if not isinstance(results, dict) or results.get("experiment") != name:
        found = results.get("experiment") if isinstance(results, dict) else None
        raise PlotRefused(f"{path} holds results of {found!r}, not {name!r}; recompute it with `{rerun}`")
    experiment = load(name)
    if experiment.plot is None:
        raise PlotRefused(f"experiment {name!r} has no plot step; its figures are drawn only by `{rerun}`")
    return path, results, experiment, rerun


def _unreadable(name: str, path: Path, rerun: str, err: Exception) -> PlotRefused:
    what = f"missing key {err.args[0]!r}" if isinstance(err, KeyError) and err.args else type(err).__name__
    return PlotRefused(f"{path} was made by a version of {name!r} whose results this plot cannot read ({what}); "
                       f"recompute it with `{rerun}`")


def plot(name: str, *, out: str | os.PathLike | None = None) -> list[str]:
    """Redraw the figures of experiment ``name`` from an existing ``OUT/NAME/results.json``, with no compute.

    ``results.json`` is only read, never written; each figure replaces its file atomically. Returns the file names.

    Parameters
    ----------
    name : str
        An experiment of :data:`experiments.registry.EXPERIMENTS`.
    out : path, optional
        Output root holding ``NAME/results.json``; default ``paper_figures/out`` (the committed results).

    Raises
    ------
    PlotRefused
        For an unknown name, an experiment without a plot step, a missing or unreadable ``results.json``, results
        of another experiment, or results whose keys the plot step cannot read (made by another version).
    """
    path, results, experiment, rerun = _stored(name, out)
    try:
        return _draw(experiment, results, path.parent)
    except (KeyError, IndexError, TypeError) as err:
        raise _unreadable(name, path, rerun, err) from None


def figures(name: str, *, out: str | os.PathLike | None = None) -> dict:
    """The figures of experiment ``name`` drawn from an existing ``OUT/NAME/results.json``, in memory: nothing is
    written (what a notebook shows). ``{stem: matplotlib Figure}``; the caller closes them. Raises
    :class:`PlotRefused` as :func:`plot` does."""
    path, results, experiment, rerun = _stored(name, out)
    try:
        return experiment.plot(results)
    except (KeyError, IndexError, TypeError) as err:
        raise _unreadable(name, path, rerun, err) from None


def figure_pngs(name: str, *, out: str | os.PathLike | None = None) -> dict[str, bytes]:
    """``{stem: PNG bytes}`` of experiment ``name``'s figures, drawn in memory from ``OUT/NAME/results.json`` by its
    plot step (nothing written), or, for an experiment that draws inside compute, read from the stored PNG files
    the results list. What a notebook displays (``IPython.display.Image(data=...)``)."""
    import io

    import matplotlib.pyplot as plt

    if name in EXPERIMENTS and load(name).plot is None:
        root = DEFAULT_OUT if out is None else Path(out)
        stored = json.loads((root / name / "results.json").read_text())
        return {Path(f).stem: (root / name / f).read_bytes() for f in stored["figures"]}
    pngs = {}
    for stem, fig in figures(name, out=out).items():
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, dpi=130, bbox_inches="tight", format="png")  # as save_figure writes them
        finally:
            plt.close(fig)
        pngs[stem] = buffer.getvalue()
    return pngs


def results(name: str, *, quick: bool = False, out: str | os.PathLike | None = None, seed: int | None = None,
            allow_missing_models: bool = False) -> dict:
    """The results of experiment ``name``: ``OUT/NAME/results.json`` as stored when it exists (no compute, nothing
    written), else a run (:func:`run`, which writes it). What the notebooks call, so that opening one never
    re-runs or overwrites a run; delete the file (or pick another ``out``) to recompute."""
    root = default_out(quick=quick, seed=DEFAULT_SEED if seed is None else seed) if out is None else Path(out)
    path = root / name / "results.json"
    if path.is_file():
        return json.loads(path.read_text())
    return run(name, quick=quick, out=out, seed=seed, allow_missing_models=allow_missing_models)
