"""Run an experiment and record it: ``DIR/NAME/results.json`` (results, config, seed, versions) beside its figures."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from experiments.experiment import RunContext
from experiments.registry import EXPERIMENTS, load

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "paper_figures" / "out"
DEFAULT_SEED = 0
_VERSIONED = ("fairdiff", "numpy", "scipy", "torch", "sympy", "matplotlib", "diffusers", "transformers", "scikit-learn")


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
    """Write ``payload`` to ``path`` through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def run(name: str, *, quick: bool = False, out: str | os.PathLike | None = None, seed: int | None = None) -> dict:
    """Run experiment ``name`` and return the dictionary written to ``OUT/NAME/results.json``.

    Parameters
    ----------
    name : str
        An experiment of :data:`experiments.registry.EXPERIMENTS` (``python -m experiments list``).
    quick : bool
        The smaller configuration, which finishes in under a minute on 2 cores.
    out : path, optional
        Output root; default ``paper_figures/out`` of the repository.
    seed : int, optional
        Seed of every random draw of the run; default 0.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    experiment = load(name)
    out_dir = Path(out if out is not None else DEFAULT_OUT) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(name=name, out_dir=out_dir, seed=DEFAULT_SEED if seed is None else seed, quick=quick)
    config = experiment.make_config(quick)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = experiment.run(config, ctx)
    payload = {
        "experiment": name,
        "summary": EXPERIMENTS[name].summary,
        "seed": ctx.seed,
        "quick": quick,
        "config": config,
        **results,
        "figures": sorted(p.name for p in out_dir.glob("*.png")),
        "versions": versions(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 3),
    }
    write_json_atomic(out_dir / "results.json", payload)
    return json.loads(json.dumps(_jsonable(payload)))
