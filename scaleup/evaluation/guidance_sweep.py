"""Bias against classifier-free guidance in one run: ``scaleup.evaluate --guidance-scales 1,3,5,7.5``.

Each scale is a full evaluation in ``OUT/cfg-<w>/`` with the same prompts and seed, so image i of every prompt starts
from the same noise at every scale; ``OUT/results.json`` gathers each scale's protocol numbers with their intervals
and the paired difference of every scale to the first one listed (:mod:`scaleup.evaluation.compare`): how much
guidance moves the bias, and how sure that is. Seed 001 Fig. 6 and seed 000 evaluate at one scale each (6.5, 7.5);
work on guidance-scale fairness reports the bias growing with the scale.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from scaleup.atomic_write import atomic_write_text
from scaleup.evaluation.protocols import interval_text

__all__ = ["check_guidance_scales", "run_guidance_sweep", "sweep_lines"]


def check_guidance_scales(scales) -> tuple[float, ...]:
    """At least two distinct finite scales >= 0."""
    values = tuple(float(w) for w in scales)
    if len(values) < 2 or len(set(values)) != len(values) or not all(np.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"guidance_scales must be two or more distinct finite numbers >= 0, e.g. 1,3,5,7.5; got "
                         f"{list(scales)}")
    return values


def run_guidance_sweep(config, run_eval) -> dict:
    """One evaluation per scale (``run_eval`` of the config at that scale), then their summary and comparisons."""
    from scaleup.evaluation.compare import compare_evaluations

    scales = check_guidance_scales(config.guidance_scales)
    out = Path(config.out)
    if (out / "evaluation.json").exists():
        raise ValueError(f"--out {out} holds a single evaluation; a guidance sweep writes one sub-folder per scale, "
                         "so give it a folder of its own")
    folders, per_scale = [], []
    for w in scales:
        folder = out / f"cfg-{w:g}"
        sub = run_eval(replace(config, guidance_scale=w, guidance_scales=None, reference=None, out=str(folder)))
        if not sub:  # a process other than the main one
            return {}
        folders.append(folder)
        per_scale.append({"guidance_scale": w, "folder": folder.name, "protocols": sub["protocols"],
                          "mean_bias": sub["overall"]["bias"]})
    versus_first = [{"guidance_scale": w, **compare_evaluations(folders[0], folder, protocol=config.protocol,
                                                                n_resamples=max(config.bootstrap_resamples, 1),
                                                                level=config.confidence)["differences"]}
                    for w, folder in zip(scales[1:], folders[1:])]
    results = {"job": "scaleup.evaluate --guidance-scales", "guidance_scales": list(scales),
               "per_guidance_scale": per_scale, "versus_first_scale": versus_first, "out": str(out)}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "report.md", _report(results))
    return results


def sweep_lines(results: dict) -> str:
    """What the job prints for a sweep: each scale's numbers, then each scale minus the first."""
    lines = []
    for s in results["per_guidance_scale"]:
        shown = "; ".join(f"{name} {p['value']:.3f}" + (f" {interval_text(p['interval'])}" if p.get("interval") else "")
                          for name, p in s["protocols"].items() if p["value"] is not None)
        lines.append(f"  w = {s['guidance_scale']:g}: {shown}")
    first = results["guidance_scales"][0]
    for d in results["versus_first_scale"]:
        shown = "; ".join(f"{name} {e['difference']:+.3f}"
                          + (f" {interval_text(e['interval'], signed=True)}" if e["interval"] else "")
                          for name, e in d.items() if name != "guidance_scale")
        lines.append(f"  w = {d['guidance_scale']:g} minus w = {first:g} (same noise): {shown}")
    lines.append(f"scaleup.evaluate: guidance sweep over {len(results['guidance_scales'])} scales; wrote "
                 f"{Path(results['out']) / 'results.json'}")
    return "\n".join(lines)


def _report(results: dict) -> str:
    lines = ["# Bias against guidance scale", "", "Each scale's evaluation is in its `cfg-<w>/` folder (its own "
             "report.md); the same prompts and noise at every scale.", "", "```", sweep_lines(results), "```", ""]
    return "\n".join(lines)
