"""Benchmark of the expected OT targets (seed 000, [0105]): closed form vs exact enumeration vs Monte Carlo.

Prints, for each (N, K), the seconds per call of each method measured side by side in one run, their ratios, and
the max |MC - exact| where the exact enumeration is run. Timing uses the minimum over repeats
(experiments.timing). The issue's target: at N = 24 the K = 2 closed form is over 1000x faster than 1000-draw MC.

    python benchmarks/ot_targets.py [--quick] [--draws 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from experiments.ot_targets import method_timings
from scaleup.atomic_write import atomic_write_text


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.1f}us" if seconds < 1e-3 else f"{seconds * 1e3:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 24, 32 and K = 2, 4 only")
    parser.add_argument("--draws", type=int, default=1000, help="Monte Carlo draws per call (default 1000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    sizes = (24, 32) if args.quick else (24, 32, 160, 1000)
    classes = (2, 4) if args.quick else (2, 4, 8)
    grid = [(n, k) for k in classes for n in sizes]
    rows = []
    for n, k in tqdm(grid, desc="benchmark", file=sys.stderr):
        rows.append(method_timings(n, k, mc_samples=args.draws, seed=args.seed, repeats=args.repeats))

    header = (f"{'N':>5} {'K':>2} {'count vectors':>14} {'closed form':>12} {'1 assignment':>13} {'exact':>10} "
              f"{'MC':>10} {'MC/closed':>10} {'assign/closed':>14} {'max|MC-exact|':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio_mc = f"{r['speedup_closed_form_vs_mc']:.0f}x" if r["closed_form_s"] else "-"
        ratio_one = f"{r['speedup_closed_form_vs_one_assignment']:.2f}x" if r["closed_form_s"] else "-"
        err = f"{r['max_abs_error_mc_vs_exact']:.4f}" if r["max_abs_error_mc_vs_exact"] is not None else "-"
        print(f"{r['n']:>5} {r['k']:>2} {r['count_vectors']:>14} {_fmt(r['closed_form_s']):>12} "
              f"{_fmt(r['one_assignment_s']):>13} {_fmt(r['exact_s']):>10} {_fmt(r['mc_s']):>10} {ratio_mc:>10} "
              f"{ratio_one:>14} {err:>14}")
    n24 = next(r for r in rows if r["n"] == 24 and r["k"] == 2)
    verdict = "met" if n24["speedup_closed_form_vs_mc"] > 1000 else "NOT met"
    print(f"\nN = 24, K = 2: closed form {n24['speedup_closed_form_vs_mc']:.0f}x faster than {args.draws}-draw MC "
          f"(target > 1000x: {verdict}); one call costs {1 / n24['speedup_closed_form_vs_one_assignment']:.2f} "
          "capacitated 24 x 24 assignment solves")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
