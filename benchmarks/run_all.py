"""Benchmark of ``python -m experiments run all --allow-missing-models``: wall and CPU seconds per experiment and in
total, at ``--jobs 1`` and ``--jobs 2`` side by side (issue 21).

The command runs as a user runs it (one process, into a temporary ``--out``, so the committed results stay as they
are); each experiment's seconds come from its ``--timings`` file (imports, compute and drawing, in the process that
ran it), the total from the whole command (interpreter start, every process it started). With ``--compare-jobs``
it also checks that both runs gave the same numbers (every numeric leaf of each results.json, timings aside).

    python benchmarks/run_all.py [--only NAME,NAME] [--quick] [--jobs N | --compare-jobs] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.leaves import moved
from experiments.registry import EXPERIMENTS
from scaleup.atomic_write import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_all(names: list[str] | None, jobs: int, out: Path, *, quick: bool) -> dict:
    """One ``run`` command at ``--jobs jobs`` into ``out``: ``{"wall_seconds", "cpu_seconds", "returncode",
    "experiments": {name: {"wall_seconds", "cpu_seconds", "failed"}}}``."""
    timings = out / "timings.json"
    command = [sys.executable, "-m", "experiments", "run", *(names or ["all"]), "--allow-missing-models",
               "--out", str(out), "--jobs", str(jobs), "--timings", str(timings), *(["--quick"] if quick else [])]
    cpu, wall = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - wall, _children_cpu() - cpu
    if not timings.is_file():
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"`{' '.join(command[1:])}` wrote no timings (exit code {done.returncode})")
    per = json.loads(timings.read_text())["experiments"]
    return {"wall_seconds": wall, "cpu_seconds": cpu, "returncode": done.returncode, "experiments": per}


def _same_numbers(names: list[str], a: Path, b: Path) -> list[str]:
    lines = []
    for name in names:
        pa, pb = a / name / "results.json", b / name / "results.json"
        if pa.is_file() and pb.is_file():
            lines += [f"{name}: {line}" for line in moved(json.loads(pa.read_text()), json.loads(pb.read_text()))]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated experiments (default: all of them)")
    parser.add_argument("--quick", action="store_true", help="their --quick configurations")
    parser.add_argument("--jobs", type=int, default=None, help="one run at this --jobs (default: the command's "
                                                                "default, the usable cores)")
    parser.add_argument("--compare-jobs", action="store_true", help="run at --jobs 1 and --jobs 2, side by side, "
                                                                    "and check that they agree")
    parser.add_argument("--json", type=Path, default=None, help="also write the timings as JSON here")
    args = parser.parse_args(argv)
    names = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names or () if n not in EXPERIMENTS]
    if unknown or names == []:
        parser.error(f"--only: unknown experiment(s) {', '.join(unknown) or '(none given)'}")
    if args.compare_jobs and args.jobs is not None:
        parser.error("--compare-jobs runs --jobs 1 and --jobs 2; leave --jobs out")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    settings = [1, 2] if args.compare_jobs else [args.jobs or cores]

    runs: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="run-all-") as tmp:
        for jobs in settings:
            print(f"running {'all' if names is None else ', '.join(names)} at --jobs {jobs} ...", file=sys.stderr,
                  flush=True)
            runs[jobs] = run_all(names, jobs, Path(tmp) / f"jobs{jobs}", quick=args.quick)
        first = runs[settings[0]]["experiments"]
        ran = sorted(first, key=lambda n: -first[n]["wall_seconds"])
        differ = _same_numbers(ran, Path(tmp) / "jobs1", Path(tmp) / "jobs2") if args.compare_jobs else []

    width = max(len("experiment"), *(len(n) for n in ran))
    header = f"{'experiment':<{width}}" + "".join(f" {f'wall j{j}':>9} {f'CPU j{j}':>9}" for j in settings)
    print(header)
    print("-" * len(header))
    for name in ran:
        cells = ""
        for jobs in settings:
            row = runs[jobs]["experiments"].get(name)
            failed = "!" if row and row["failed"] else " "
            cells += f" {row['wall_seconds']:8.1f}{failed} {row['cpu_seconds']:9.1f}" if row else f" {'-':>9} {'-':>9}"
        print(f"{name:<{width}}{cells}")
    print("-" * len(header))
    print(f"{'sum of experiments':<{width}}" + "".join(
        f" {sum(r['wall_seconds'] for r in runs[j]['experiments'].values()):9.1f}"
        f" {sum(r['cpu_seconds'] for r in runs[j]['experiments'].values()):9.1f}" for j in settings))
    print(f"{'whole command':<{width}}" + "".join(f" {runs[j]['wall_seconds']:9.1f} {runs[j]['cpu_seconds']:9.1f}"
                                               for j in settings))
    failed = sorted({n for j in settings for n, r in runs[j]["experiments"].items() if r["failed"]})
    if failed:
        print(f"\n! failed: {', '.join(failed)}")
    if args.compare_jobs:
        speedup = runs[1]["wall_seconds"] / runs[2]["wall_seconds"]
        print(f"\n--jobs 2 took {runs[2]['wall_seconds']:.1f} s against {runs[1]['wall_seconds']:.1f} s at --jobs 1 "
              f"({speedup:.2f}x); numbers: " + ("identical" if not differ else f"{len(differ)} leaves differ"))
        for line in differ:
            print(f"  {line}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"quick": args.quick, "only": names, "runs": runs,
                                                 "differing_leaves": differ}, indent=2) + "\n")
    return 1 if failed or differ else 0


if __name__ == "__main__":
    sys.exit(main())
