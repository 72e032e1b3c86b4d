"""Paired comparison of two evaluations of the same prompts and noise: ``python -m scaleup.evaluation.compare A B``.

A is the reference (the original model), B the other (the finetuned one, or another guidance scale). Both must be
finished ``scaleup.evaluate`` runs with the same prompts and seed, so that image i of every prompt comes from the same
initial noise in both; the difference B - A of each protocol's number is reported with the interval of a paired
bootstrap (:func:`scaleup.evaluation.protocols.paired_difference`): the change and how sure it is, rather than two
numbers side by side. ``--out FILE`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaleup.atomic_write import atomic_write_text
from scaleup.evaluation.protocols import interval_text, paired_difference, protocols_named
from scaleup.evaluation.store import read_evaluation

__all__ = ["compare_evaluations", "compare_loaded", "difference_line", "main"]


def compare_evaluations(a: str | Path, b: str | Path, *, protocol: str = "both", n_resamples: int = 1000,
                        level: float = 0.95) -> dict:
    """B - A under each protocol, with its paired-bootstrap interval (module docstring)."""
    return compare_loaded(a, read_evaluation(a), b, read_evaluation(b), protocol=protocol, n_resamples=n_resamples,
                          level=level)


def compare_loaded(a: str | Path, evaluation_a: tuple, b: str | Path, evaluation_b: tuple, *, protocol: str = "both",
                   n_resamples: int = 1000, level: float = 0.95) -> dict:
    """:func:`compare_evaluations` of two evaluations already read (``(results, records per prompt)`` each, as
    :func:`~scaleup.evaluation.store.read_evaluation` returns), e.g. one still in memory."""
    (results_a, records_a), (results_b, records_b) = evaluation_a, evaluation_b
    if results_a["class_names"] != results_b["class_names"]:
        raise ValueError(f"the evaluations measure different classes: {results_a['class_names']} and "
                         f"{results_b['class_names']}")
    if results_a["seed"] != results_b["seed"]:
        raise ValueError(f"the evaluations were seeded differently ({results_a['seed']} and {results_b['seed']}): "
                         "their images come from different noise, so they cannot be paired")
    target = results_a["config"].get("target")
    if target != results_b["config"].get("target"):
        raise ValueError(f"the evaluations use different targets ({target} and {results_b['config'].get('target')})")
    return {"a": str(a), "b": str(b), "class_names": results_a["class_names"], "seed": results_a["seed"],
            "differences": {p.name: paired_difference(records_a, records_b, p, results_a["class_names"], target,
                                                      n_resamples=n_resamples, level=level, seed=results_a["seed"])
                            for p in protocols_named(protocol)}}


def difference_line(name: str, d: dict) -> str:
    """One protocol's B - A with its interval, as the comparison prints it."""
    interval = d["interval"]
    shown = f" {interval_text(interval, signed=True)}" if interval else ""
    verdict = "" if d["excludes_zero"] is None else (
        "; the interval excludes 0" if d["excludes_zero"] else "; the interval includes 0: no change shown")
    return f"  protocol {name}: {d['a']:.3f} -> {d['b']:.3f}, difference {d['difference']:+.3f}{shown}{verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaleup.evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the reference evaluation's folder (e.g. the original model)")
    parser.add_argument("b", help="the other evaluation's folder (e.g. the finetuned model)")
    parser.add_argument("--protocol", choices=("adft", "popalign", "both"), default="both")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", default=None, help="also write the comparison to this JSON file")
    args = parser.parse_args(argv)
    try:
        if args.bootstrap_resamples < 1 or not 0 < args.confidence < 1:
            raise ValueError("--bootstrap-resamples must be >= 1 and --confidence in (0, 1)")
        result = compare_evaluations(args.a, args.b, protocol=args.protocol, n_resamples=args.bootstrap_resamples,
                                     level=args.confidence)
        if args.out:
            atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    except (ValueError, OSError) as err:
        print(f"scaleup.evaluation.compare: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.b} against {args.a} (same prompts and noise; B - A):")
    for name, d in result["differences"].items():
        print(difference_line(name, d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
