"""A page a person reads: ``OUT/report.md`` beside ``results.json``, written by every evaluation.

It holds, from ``results.json`` alone: what was evaluated, each protocol's number with its interval and the table
it is comparable to, the numbers corrected for the classifier (when a labelled folder was given), the comparison
with a reference evaluation on the same noise (``--reference``), and one row per prompt with its image grid. Markdown
renders on GitHub, in Jupyter and in any editor; the grids are the PNGs the evaluation already wrote.
"""

from __future__ import annotations

from pathlib import Path

from scaleup.atomic_write import atomic_write_text
from scaleup.evaluation.protocols import interval_text

__all__ = ["write_report", "report_text"]


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(entry: dict | None) -> str:
    return "-" if not entry else interval_text(entry)


def report_text(results: dict, *, grids: Path | None = None) -> str:
    """The report's markdown (module docstring); ``grids``: the folder of the per-prompt grids, linked if present."""
    config, names = results["config"], results["class_names"]
    model = config.get("pipeline") or "(default pipeline)"
    adapters = ", ".join(f"{k} {config[k]}" for k in ("lora", "soft_prompt") if config.get(k)) or "none"
    lines = [f"# Bias evaluation: {config.get('attribute')} on {Path(config['prompts']).name}", "",
             f"- model: `{model}`; adapters: {adapters}",
             f"- {results['overall']['n_prompts']} prompts x {config['images_per_prompt']} images, seed "
             f"{results['seed']}, {config['num_inference_steps']} steps, guidance {config['guidance_scale']}",
             f"- classifier `{config['classifier']}`, detector `{config['detector']}`, classes {', '.join(names)}",
             "", "## The numbers", "",
             "| protocol | number | value | interval | images per prompt | comparable to |", "|---|---|---|---|---|---|"]
    for p in (results.get("protocols") or {}).values():
        level = f" ({100 * p['interval']['level']:g} %)" if p.get("interval") else ""
        lines.append(f"| {p['protocol']} | {p['statistic']} | {_f(p['value'])} | {_interval(p.get('interval'))}"
                     f"{level} | {p['images_per_prompt']}{' (short)' if p['short_of_protocol'] else ''} | "
                     f"{p['comparable_to']} |")
    error = results.get("classifier_error")
    if error:
        accuracy = ", ".join(f"{k} {v:.3f}" for k, v in error["accuracy_per_class"].items())
        lines += ["", "## Corrected for the classifier (CLEAM)", "",
                  f"Measured on {error['n_labelled']} labelled images in `{error['folder']}` ({error['layout']}): "
                  f"accuracy per class {accuracy}.", "",
                  "| protocol | raw | corrected | interval |", "|---|---|---|---|"]
        lines += [f"| {name} | {_f(e['raw'])} | {_f(e['corrected'])} | {_interval(e['interval'])} |"
                  for name, e in error["protocols"].items()]
    comparison = results.get("comparison")
    if comparison:
        lines += ["", f"## Against the reference `{comparison['a']}` (same prompts and noise)", "",
                  "| protocol | reference | this model | difference | interval | |", "|---|---|---|---|---|---|"]
        for name, d in comparison["differences"].items():
            verdict = "" if d["excludes_zero"] is None else ("excludes 0" if d["excludes_zero"] else
                                                              "includes 0: no change shown")
            lines.append(f"| {name} | {_f(d['a'])} | {_f(d['b'])} | {d['difference']:+.3f} | "
                         f"{_interval(d['interval'])} | {verdict} |")
    lines += ["", "## Per prompt", "",
              "| prompt | " + " | ".join(names) + " | bias | confident | prompt accuracy | no face | grid |",
              "|---|" + "---|" * (len(names) + 5)]
    for i, p in enumerate(results["per_prompt"]):
        shares = " | ".join(_f(p["freq"][n], 2) if p["freq"] else "-" for n in names)
        grid = grids / f"prompt_{i:05d}.png" if grids is not None else None
        link = f"![]({grid.parent.name}/{grid.name})" if grid is not None and grid.is_file() else "-"
        lines.append(f"| {p['prompt']} | {shares} | {_f(p['bias'])} | {_f(p['confident_share'], 2)} | "
                     f"{_f(p['prompt_accuracy'], 2)} | {_f(p['no_face_share'], 2)} | {link} |")
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, results: dict) -> Path:
    """Write ``out/report.md`` for ``results`` (the evaluation's results.json)."""
    out = Path(out)
    return atomic_write_text(out / "report.md", report_text(results, grids=out / "grids"))
