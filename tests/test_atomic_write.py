"""Every result file (results.json, figures, checkpoints) is written through one atomic-write helper: unique
temporary files (two writers never collide), fsync before the rename, nothing left behind on error."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from scaleup import atomic_write as aw

ROOT = Path(__file__).resolve().parent.parent
_IN_MEMORY = {"buffer", "io.BytesIO()"}
WRITERS = {"savefig", "save", "write_text", "write_bytes", "dump", "replace", "rename", "move", "copyfile"}


def test_two_writers_of_one_file_do_not_collide(tmp_path):
    """A second run writing the same file while the first is mid-write: each has its own temporary file, both
    renames succeed, and the file ends whole (the last rename's content)."""
    target = tmp_path / "results.json"

    def first(f):
        f.write(b"first, part 1;")
        aw.atomic_write_text(target, "second, whole")  # another run finishing meanwhile
        f.write(b" first, part 2")

    aw.atomic_write(target, first)
    assert target.read_text() == "first, part 1; first, part 2"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_fsync_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(aw.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(aw.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    aw.atomic_write_text(tmp_path / "a.txt", "x")
    assert events[:2] == ["fsync", "replace"], events
    assert (tmp_path / "a.txt").read_text() == "x"


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old figure")

    def broken(f):
        f.write(b"half a fig")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        aw.atomic_write(target, broken)
    assert target.read_bytes() == b"old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def _writes_outside_the_helper(path: Path) -> list[str]:
    """Calls that write or rename files and are not inside a lambda handed to atomic_write(_text)."""
    tree = ast.parse(path.read_text())
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                "atomic_write", "atomic_write_text"):
            for arg in node.args:
                allowed.update(id(n) for n in ast.walk(arg))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITERS \
                and id(node) not in allowed:
            owner = ast.unparse(node.func.value)
            if node.func.attr == "replace" and not owner.startswith(("os", "tmp", "path")):
                continue  # str.replace
            if node.func.attr == "save" and owner not in ("torch", "np", "numpy"):
                continue
            if node.func.attr == "dump" and owner not in ("json", "pickle"):
                continue  # ast.dump
            if node.func.attr == "savefig" and node.args and ast.unparse(node.args[0]) in _IN_MEMORY:
                continue  # drawn into an in-memory buffer, no file
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:60]}")
    return found


def test_every_result_file_goes_through_the_one_helper():
    files = [p for pkg in ("experiments", "scaleup", "benchmarks") for p in sorted((ROOT / pkg).rglob("*.py"))
             if p.name != "atomic_write.py"]
    offenders = [line for p in files for line in _writes_outside_the_helper(p)]
    assert not offenders, "files written without scaleup.atomic_write.atomic_write:\n" + "\n".join(offenders)
