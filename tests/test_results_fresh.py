"""The committed results are fresh: every ``paper_figures/out/NAME/results.json`` was made by the code now in the
repository (the source fingerprint it records, :func:`experiments.source_hash.experiment_source`, matches).

EXPECTED TO FAIL after any change to the code an experiment imports, until the results are regenerated at the final
commit (``python -m experiments run all --allow-missing-models``, or the per-experiment commands the failure lists).
It is the check that no committed figure silently describes older code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.registry import EXPERIMENTS
from experiments.source_hash import experiment_source

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted((ROOT / "paper_figures" / "out").glob("*/results.json"))
NEEDS_MODELS = {"gmm-celebahq", "bbb-real-embeddings"}


def _command(name: str) -> str:
    return f"python -m experiments run {name}" + (" --allow-missing-models" if name in NEEDS_MODELS else "")


def test_there_are_committed_results():
    assert RESULTS


def test_committed_results_are_full_runs_at_the_default_seed():
    smaller = [f"{p.parent.name} (quick={d.get('quick')}, seed={d.get('seed')})"
               for p in RESULTS for d in [json.loads(p.read_text())] if d.get("quick") is not False or d.get("seed") != 0]
    assert not smaller, f"committed results that are not full default-seed runs: {', '.join(smaller)}"


def test_committed_results_were_made_by_the_current_code():
    stale = []
    for path in RESULTS:
        name = path.parent.name
        if name not in EXPERIMENTS:
            stale.append(f"  {name}: no experiment of that name any more; delete paper_figures/out/{name}")
            continue
        recorded = json.loads(path.read_text()).get("source") or {}
        current = experiment_source(name)
        if recorded.get("sha256") == current["sha256"]:
            continue
        before = recorded.get("modules") or {}
        changed = sorted(m for m in set(before) | set(current["modules"]) if before.get(m) != current["modules"].get(m))
        why = f"changed since: {', '.join(changed)}" if before else "made before results recorded their source"
        stale.append(f"  {name} ({why})\n      regenerate: {_command(name)}")
    if stale:
        pytest.fail(f"{len(stale)} committed result(s) were made by code that has since changed:\n" + "\n".join(stale)
                    + "\nregenerate all: python -m experiments run all --allow-missing-models", pytrace=False)
