"""Command line: ``python -m experiments list``, ``python -m experiments run NAME [NAME ...]|all [options]`` and
``python -m experiments plot NAME|all [--out DIR]`` (redraw the figures of existing results, no compute) and
``python -m experiments notebooks [NOTEBOOK ...] [--out DIR]`` (execute the notebooks of paper_figures/ against
existing results and save them with their outputs).

Bad input (unknown name, bad seed, an output folder that is a file or read-only, a result the run must not replace)
is one line on stderr and exit code 2, found before any compute. ``run all`` goes on past a failing experiment and
lists every failure at the end (exit code 1). Every experiment runs at one thread (``experiments.runner.THREADS``),
so its numbers do not depend on the machine; ``run all --jobs N`` runs N of them side by side, each in its own
process (default: the usable cores; ``--jobs 1``: one after the other in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from experiments.registry import EXPERIMENTS, load
from experiments.runner import MAX_SEED, THREADS, PlotRefused, RunRefused, check_seed, default_out, plot, prepare_output


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints its whole usage before an error; one line is what a user (and a log grep) needs."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _seed(text: str) -> int:
    try:
        return check_seed(int(text))
    except (ValueError, RunRefused):
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}] (64 bits); got {text!r}") from None


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return jobs


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m experiments", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    commands.add_parser("list", help="list the experiments")
    run_parser = commands.add_parser("run", help="run one experiment, or all of them")
    run_parser.add_argument("name", nargs="+", help="experiment names (see `list`), or `all`")
    run_parser.add_argument("--quick", action="store_true", help="smaller run, under a minute on 2 cores")
    run_parser.add_argument("--out", default=None,
                            help=f"output root (default: {default_out()} for a full run at seed 0, "
                                 f"{default_out(quick=True)} for --quick, {default_out(seed=1)} for --seed 1, ...); "
                                 "a quick or differently seeded run never replaces a full run's results")
    run_parser.add_argument("--seed", type=_seed, default=None, help="random seed in [0, 2^64 - 1] (default: 0)")
    run_parser.add_argument("--restart", action="store_true",
                            help="train from scratch instead of resuming from a checkpoint (gmm-digits)")
    run_parser.add_argument("--retrain", action="store_true",
                            help="train anew what an experiment otherwise reuses from a committed artifact "
                                 "(testbed-train: the testbed model, about 20 CPU-minutes; testbed-methods: every "
                                 "finetune, about 5 CPU-hours)")
    run_parser.add_argument("--reevaluate", action="store_true",
                            help="recompute every evaluation an experiment otherwise reuses from its committed "
                                 "summaries after checking a sample of them (testbed-methods: about 35 CPU-minutes)")
    run_parser.add_argument("--allow-missing-models", action="store_true",
                            help="run without models that are not on this machine and record their absence in "
                                 "results.json (default: stop with exit code 1 and say which environment variable "
                                 "to set); a model named by an environment variable must load either way")
    run_parser.add_argument("--jobs", type=_jobs, default=_usable_cores(),
                            help=f"experiments run side by side, each in its own process at {THREADS} thread(s) "
                                 f"(default: the usable cores, here {_usable_cores()}); 1 runs them one after the "
                                 "other in this process. Results are the same for every N")
    run_parser.add_argument("--timings", default=None, metavar="PATH",
                            help="also write each experiment's wall and CPU seconds as JSON to PATH "
                                 "(benchmarks/run_all.py reads it)")
    plot_parser = commands.add_parser("plot", help="redraw the figures of existing results (no compute; "
                                                   "results.json is only read)")
    plot_parser.add_argument("name", help="experiment name (see `list`), or `all` (every experiment with results "
                                          "under --out)")
    plot_parser.add_argument("--out", default=None, help=f"output root holding NAME/results.json (default: "
                                                         f"{default_out()})")
    notebooks_parser = commands.add_parser("notebooks", help="execute paper_figures/ notebooks against existing "
                                                             "results and save them with their outputs")
    notebooks_parser.add_argument("names", nargs="*", help="notebook stems (e.g. gamma_face); default: all")
    notebooks_parser.add_argument("--out", default=None, help=f"output root holding the results the notebooks "
                                                              f"show (default: {default_out()})")
    args = parser.parse_args(argv)

    if args.command == "list":
        width = max(len(n) for n in EXPERIMENTS)
        for name, entry in sorted(EXPERIMENTS.items()):
            print(f"{name:<{width}}  {entry.summary}")
        return 0
    if args.command == "plot":
        return _plot(parser, args.name, args.out)
    if args.command == "notebooks":
        return _notebooks(parser, args.names, args.out)
    for name in args.name:
        if name != "all" and name not in EXPERIMENTS:
            parser.error(f"unknown experiment {name!r}; choose one of: all, {', '.join(sorted(EXPERIMENTS))}")
    if "all" in args.name and len(args.name) > 1:
        parser.error("`all` runs every experiment; name it alone")
    names = sorted(EXPERIMENTS) if args.name == ["all"] else list(dict.fromkeys(args.name))
    seed = 0 if args.seed is None else args.seed
    try:  # every output folder is checked before any experiment computes anything
        out_dirs = {name: prepare_output(name, quick=args.quick, seed=seed, out=args.out) for name in names}
    except RunRefused as err:
        parser.error(str(err))

    from experiments.jobs import run_jobs  # here, so that `list` and `--help` import no more than they need

    options = dict(quick=args.quick, out=args.out, seed=args.seed, restart=args.restart, retrain=args.retrain,
                   reevaluate=args.reevaluate,
                   allow_missing_models=args.allow_missing_models)
    failures: dict[str, str] = {}
    timings: dict[str, dict] = {}
    started = time.perf_counter()
    with tqdm(total=len(names), desc="experiments", disable=len(names) == 1) as progress:
        for outcome in run_jobs(out_dirs, options, jobs=args.jobs):
            name = outcome.name
            timings[name] = {"wall_seconds": round(outcome.wall_seconds, 3),
                             "cpu_seconds": round(outcome.cpu_seconds, 3), "failed": outcome.error is not None}
            if outcome.error is not None:
                if outcome.traceback:
                    print(outcome.traceback, end="", file=sys.stderr)
                failures[name] = f"{name}: {outcome.error}"
                print(f"{name}: failed: {outcome.error}", file=sys.stderr)
            else:
                files = ", ".join(["results.json", *outcome.figures])
                print(f"{name}: results in {_shown(out_dirs[name])} ({files})", file=sys.stderr)
                for message in outcome.missing_models:
                    print(f"{name}: ran without a model: {message}", file=sys.stderr)
            progress.update()
    if args.timings:
        from scaleup.atomic_write import atomic_write_text

        total = round(time.perf_counter() - started, 3)
        atomic_write_text(Path(args.timings), json.dumps({"jobs": min(args.jobs, len(names)), "threads": THREADS,
                                                          "wall_seconds": total, "experiments": timings},
                                                         indent=2) + "\n")
    if failures and len(names) > 1:
        print(f"{len(failures)} of {len(names)} experiments failed:", file=sys.stderr)
        for name in sorted(failures):
            print(f"  {failures[name]}", file=sys.stderr)
    return 1 if failures else 0


def _plot(parser: argparse.ArgumentParser, name: str, out: str | None) -> int:
    """``plot NAME``: one line on stderr per redrawn experiment; a refusal is one line and exit code 2. ``plot all``
    redraws every experiment whose results.json lies under the output root."""
    if name != "all" and name not in EXPERIMENTS:
        parser.error(f"unknown experiment {name!r}; choose one of: all, {', '.join(sorted(EXPERIMENTS))}")
    root = default_out() if out is None else Path(out)
    names = [n for n in sorted(EXPERIMENTS) if (root / n / "results.json").is_file()] if name == "all" else [name]
    if not names:
        parser.error(f"no results to plot under {root} (no NAME/results.json); compute them first with "
                     f"`python -m experiments run all" + ("`" if out is None else f" --out {root}`"))
    for each in names:
        if name == "all" and load(each).plot is None:
            print(f"{each}: its figures are drawn by its run only; left as they are", file=sys.stderr)
            continue
        try:
            files = plot(each, out=out)
        except PlotRefused as err:
            parser.error(str(err))
        print(f"{each}: redrew {', '.join(files) or 'no figure'} in {_shown(root / each)}", file=sys.stderr)
    return 0


def _notebooks(parser: argparse.ArgumentParser, names: list[str], out: str | None) -> int:
    """``notebooks``: execute and save each notebook; a failing one is reported and left unsaved (exit code 1)."""
    from experiments.notebooks import NotebookFailed, execute, notebook_paths

    try:
        paths = notebook_paths(names)
    except ValueError as err:
        parser.error(str(err))
    root = (default_out() if out is None else Path(out)).resolve()
    if not root.is_dir():
        parser.error(f"--out {out}: no such folder; it must hold the results the notebooks read (make them with "
                     f"`python -m experiments run all --out {out}`); nothing was executed")
    # only the committed results' notebooks are saved over paper_figures/; others go beside their results
    elsewhere = None if root == default_out().resolve() else root / "notebooks"
    failures = 0
    for path in tqdm(paths, desc="notebooks", disable=len(paths) == 1):
        dest = path if elsewhere is None else elsewhere / path.name
        try:
            execute(path, root, dest=dest)
        except NotebookFailed as err:
            failures += 1
            print(f"{path.stem}: failed: {err}", file=sys.stderr)
        else:
            print(f"{path.stem}: executed against {_shown(root)} and saved to {_shown(dest)}", file=sys.stderr)
    return 1 if failures else 0


def _shown(path: Path) -> str:
    """A path relative to the working folder when it lies below it (shorter to read), absolute otherwise."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
