"""The numeric leaves of a ``results.json`` and which of them moved between two runs (issue 21: the same numbers on
every machine). Used by ``tests/test_results_repeat.py`` and ``benchmarks/run_all.py``; standard library only.

Every numeric leaf is compared (booleans included, and each list's length), except bookkeeping (:data:`BOOKKEEPING`)
and timings (:func:`is_timing`); a leaf moved when it differs by more than :data:`RELATIVE` relative.
"""

from __future__ import annotations

RELATIVE = 1e-9
#: Top-level keys that are not results: what ran where, when, with which code and how fast.
BOOKKEEPING = frozenset({"versions", "source", "started_utc", "wall_seconds", "figures", "threads"})


def is_timing(key: str) -> bool:
    """A key that holds a timing or a ratio of timings: a word ``seconds``/``time``/``timing(s)`` in it, a ``_s``
    suffix (ot-targets' ``closed_form_s``), or a ``speedup`` prefix; ``timesteps`` is not one."""
    words = key.lower().split("_")
    return bool({"seconds", "time", "times", "timing", "timings"} & set(words)) or key.endswith("_s") \
        or key.startswith("speedup")


def numeric_leaves(value, path: str = "") -> dict[str, float | int | bool]:
    """``{path: number}`` of every numeric (or boolean) leaf of a results.json, bookkeeping and timings left out;
    a list's length is a leaf too (``path#len``), so that a missing element counts as a change."""
    leaves: dict = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if (not path and key in BOOKKEEPING) or is_timing(str(key)):
                continue
            leaves.update(numeric_leaves(item, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, list):
        leaves[f"{path}#len"] = len(value)
        for i, item in enumerate(value):
            leaves.update(numeric_leaves(item, f"{path}[{i}]"))
    elif isinstance(value, (bool, int, float)):
        leaves[path] = value
    return leaves


def moved(reference: dict, rerun: dict, *, relative: float = RELATIVE) -> list[str]:
    """Every leaf of the two results.json dictionaries that differs by more than ``relative`` (or exists in one
    only), one line each."""
    a, b = numeric_leaves(reference), numeric_leaves(rerun)
    lines = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b:
            lines.append(f"{key}: only in {'the rerun' if key in b else 'the reference'}")
            continue
        x, y = a[key], b[key]
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                lines.append(f"{key}: {x} -> {y}")
        elif abs(x - y) > relative * max(abs(x), abs(y)):
            lines.append(f"{key}: {x!r} -> {y!r} (relative {abs(x - y) / max(abs(x), abs(y)):.2e})")
    return lines
