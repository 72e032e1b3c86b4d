"""Benchmark of the plot step: seconds to redraw every experiment's figures from its committed ``results.json``.

Issue 13's target: ``python -m experiments plot NAME`` redraws every experiment from its committed results in under
30 s in total (imports included, as a user pays them). The results are copied to a temporary folder first, so the
committed figures stay as they are. The time is also split per experiment, to show where it goes.

    python benchmarks/plot_all.py [--out paper_figures/out] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaleup.atomic_write import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "paper_figures" / "out",
                        help="output root holding NAME/results.json (default: the committed results)")
    parser.add_argument("--json", type=Path, default=None, help="also write the timings as JSON here")
    args = parser.parse_args(argv)
    results = sorted(args.out.glob("*/results.json"))
    if not results:
        parser.error(f"no NAME/results.json under {args.out}")

    with tempfile.TemporaryDirectory() as tmp:
        for path in results:
            (Path(tmp) / path.parent.name).mkdir()
            shutil.copy(path, Path(tmp) / path.parent.name / "results.json")
        started = time.perf_counter()
        # one process for `plot all`, as a user runs it: interpreter start-up and imports are part of the cost
        done = subprocess.run([sys.executable, "-m", "experiments", "plot", "all", "--out", tmp], cwd=ROOT,
                              capture_output=True, text=True)
        total = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        per = {}
        from experiments.runner import plot  # in-process, imports already paid: the drawing alone, per experiment

        from experiments.registry import load
        for path in results:
            name = path.parent.name
            if load(name).plot is None:
                continue
            t0 = time.perf_counter()
            plot(name, out=tmp)
            per[name] = time.perf_counter() - t0

    for name, seconds in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"{name:>22}: {seconds:6.2f} s")
    verdict = "met" if total < TARGET_S else "NOT met"
    print(f"\n`plot all` on {len(results)} results: {total:.1f} s in one process, imports included "
          f"(target < {TARGET_S:.0f} s: {verdict}); drawing alone {sum(per.values()):.1f} s")
    if args.json:
        atomic_write_text(args.json, json.dumps({"total_s": total, "per_experiment_s": per,
                                                 "target_s": TARGET_S}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
