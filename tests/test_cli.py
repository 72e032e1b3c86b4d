"""The ``python -m experiments`` command line: a fast, lazy catalogue; one-line errors with exit code 2 for bad
input; ``run all`` going on past failures. Subprocesses for exit codes, fake experiments where a real one is slow."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from experiments import registry

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "matplotlib", "diffusers", "transformers", "sklearn", "scipy")


def python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------- item 4: lazy catalogue
def test_list_and_help_import_no_heavy_library():
    """``list`` and ``--help`` must not import any experiment module (structural, not timed)."""
    code = (
        "import sys, contextlib, io\n"
        "from experiments.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['list'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "assert rc == 0 and 'ot-targets' in out.getvalue()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"listing the experiments imported {result.stdout.strip()}"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_import_circle_between_the_catalogue_and_the_experiments():
    modules = {entry.module for entry in registry.EXPERIMENTS.values()}
    assert not (_imported_modules(ROOT / "experiments" / "registry.py") & modules), \
        "experiments/registry.py must not import experiment modules (they are loaded lazily)"
    for module in sorted(modules):
        path = ROOT / Path(*module.split(".")).with_suffix(".py")
        imported = _imported_modules(path)
        assert not {m for m in imported if m.startswith(("experiments.registry", "experiments.runner"))}, \
            f"{module} imports the catalogue or the runner: an import circle"


def test_catalogue_and_modules_agree():
    """Every catalogue entry loads to an experiment of that name, and no module defines one the catalogue lacks."""
    modules = sorted({entry.module for entry in registry.EXPERIMENTS.values()})
    defined = {}
    for module in modules:
        for experiment in importlib.import_module(module).EXPERIMENTS:
            defined[experiment.name] = module
    assert defined == {name: entry.module for name, entry in registry.EXPERIMENTS.items()}
    for name in registry.EXPERIMENTS:
        assert registry.load(name).name == name
