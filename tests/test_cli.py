"""The ``python -m experiments`` command line: a fast, lazy catalogue; one-line errors with exit code 2 for bad
input; ``run all`` going on past failures. Subprocesses for exit codes, fake experiments where a real one is slow."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# --------------------------------------------------- item 2: bad input is one line and exit code 2; run all goes on
FAKE_MODULE = '''
from pathlib import Path

import pytest
from experiments.experiment import Experiment
from scaleup.errors import ModelUnavailableError

MARKERS = Path(__file__).parent / "ran"


def make_config(quick):
    return {"quick": quick}


def ok(cfg, ctx):
    MARKERS.mkdir(exist_ok=True)
    (MARKERS / ctx.name).write_text(f"restart={ctx.restart}")
    return {"value": 1}


def broken(cfg, ctx):
    raise RuntimeError("deliberately broken")


def missing_model(cfg, ctx):
    raise ModelUnavailableError("no weights here: set FAKE_MODEL=/path/to/folder")


EXPERIMENTS = [Experiment("fake-a", make_config, ok), Experiment("fake-b-broken", make_config, broken),
               Experiment("fake-c-missing-model", make_config, missing_model), Experiment("fake-d", make_config, ok)]
'''


def fake_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m experiments ARGS`` in a subprocess whose catalogue holds only the fake experiments above."""
    (tmp_path / "fake_experiments.py").write_text(FAKE_MODULE)
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from experiments import registry\n"
        "from experiments.__main__ import main\n"
        "import fake_experiments\n"
        "registry.EXPERIMENTS.clear()\n"
        "registry.EXPERIMENTS.update({e.name: registry.Entry(e.name, 'fake', 'fake_experiments')\n"
        "                             for e in fake_experiments.EXPERIMENTS})\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return python(code, *args)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_bad_input_is_one_line_on_stderr_with_exit_code_2(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert_one_line_error(fake_cli(tmp_path, "run", "no-such-thing"), "unknown experiment 'no-such-thing'", "fake-a")
    assert_one_line_error(fake_cli(tmp_path, "run", "fake-a", "--out", str(a_file)), "--out", "is a file")
    assert_one_line_error(fake_cli(tmp_path, "run", "fake-a", "--out", str(a_file / "below")), "is a file")
    for seed in (str(2**64), "-1", "1.5", "abc"):
        assert_one_line_error(fake_cli(tmp_path, "run", "fake-a", "--seed", seed), "--seed", "[0, ")
    assert_one_line_error(fake_cli(tmp_path, "bogus-command"), "invalid choice")
    assert not (tmp_path / "ran").exists(), "a refused run computed something"


def test_a_read_only_output_folder_is_refused_before_any_compute(tmp_path):
    # /sys is read-only even for root, who may write into a chmod 555 folder
    folders = [Path("/sys/kernel")] if Path("/sys/kernel").is_dir() else []
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        folders.append(locked)
    if not folders:
        pytest.skip("no read-only folder on this machine")
    for folder in folders:
        assert_one_line_error(fake_cli(tmp_path, "run", "all", "--out", str(folder)), "cannot write", str(folder))
    assert not (tmp_path / "ran").exists(), "a refused run computed something"


def test_run_all_goes_on_past_failures_and_lists_them_at_the_end(tmp_path):
    result = fake_cli(tmp_path, "run", "all", "--out", str(tmp_path / "out"), "--restart")
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in (tmp_path / "ran").iterdir()) == ["fake-a", "fake-d"]
    assert (tmp_path / "ran" / "fake-d").read_text() == "restart=True"
    for name in ("fake-a", "fake-d"):
        assert json.loads((tmp_path / "out" / name / "results.json").read_text())["value"] == 1
    tail = result.stderr.strip().splitlines()[-3:]
    assert tail[0] == "2 of 4 experiments failed:", result.stderr
    assert tail[1].startswith("  fake-b-broken: RuntimeError: deliberately broken")
    assert tail[2].startswith("  fake-c-missing-model: no weights here: set FAKE_MODEL")
    assert f"fake-a: results in {tmp_path / 'out' / 'fake-a'} (results.json)\n" in result.stderr  # no "and "
    # a failure with a clear message is one line, not a traceback; an unexpected one keeps its traceback
    assert result.stderr.count("Traceback") == 1
    single = fake_cli(tmp_path, "run", "fake-c-missing-model", "--out", str(tmp_path / "out"))
    assert single.returncode == 1 and "Traceback" not in single.stderr
    assert single.stderr.strip().splitlines() == ["fake-c-missing-model: failed: no weights here: set "
                                                  "FAKE_MODEL=/path/to/folder"]
