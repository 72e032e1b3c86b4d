"""Every notebook in paper_figures/ executes (quick configuration), so that none can rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "paper_figures").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRDIFF_QUICK", "1")
    monkeypatch.setenv("FAIRDIFF_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows no figure"
    assert list(tmp_path.glob("*/results.json")), "the notebook wrote no results.json"


def _notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbformat.write(nb, path)
    return path


def test_notebooks_command_saves_outputs_and_refuses_to_change_results(tmp_path):
    from experiments.notebooks import NotebookFailed, execute

    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    (out / "x" / "results.json").write_text('{"a": 1}')
    reader = _notebook(tmp_path / "reader.ipynb", "import os\nprint(open(os.environ['FAIRDIFF_OUT'] + '/x/results.json').read())")
    execute(reader, out)
    saved = nbformat.read(reader, as_version=4)
    assert saved.cells[0].outputs[0]["text"].strip() == '{"a": 1}'

    writer = _notebook(tmp_path / "writer.ipynb", "import os\nopen(os.environ['FAIRDIFF_OUT'] + '/x/results.json', 'w').write('{}')")
    before = writer.read_bytes()
    with pytest.raises(NotebookFailed, match="changed existing results"):
        execute(writer, out)
    assert writer.read_bytes() == before, "a refused notebook must be left as it was"

    raiser = _notebook(tmp_path / "raiser.ipynb", "raise RuntimeError('boom')")
    before = raiser.read_bytes()
    with pytest.raises(NotebookFailed, match="a cell raised"):
        execute(raiser, out)
    assert raiser.read_bytes() == before


def test_notebooks_command_names_an_unknown_notebook(capsys):
    from experiments.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["notebooks", "no_such_notebook"])
    assert exit_info.value.code == 2
    assert "unknown notebook(s) no_such_notebook" in capsys.readouterr().err


def test_notebooks_against_another_folder_never_touch_the_committed_notebook(tmp_path, capsys, monkeypatch):
    """Issue 19: ``notebooks ot_targets --out <missing folder>`` recomputed and overwrote the committed notebook."""
    import experiments.__main__ as cli
    import experiments.notebooks as notebooks

    committed = {p: p.read_bytes() for p in NOTEBOOKS}
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["notebooks", "ot_targets", "--out", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    calls = []
    monkeypatch.setattr(notebooks, "execute", lambda path, out, dest=None: calls.append((path, out, dest)))
    assert cli.main(["notebooks", "ot_targets", "--out", str(tmp_path)]) == 0
    [(path, out, dest)] = calls
    assert path.name == "ot_targets.ipynb" and out == tmp_path.resolve()
    assert dest == tmp_path.resolve() / "notebooks" / "ot_targets.ipynb"
    assert {p: p.read_bytes() for p in NOTEBOOKS} == committed


def test_notebooks_command_reports_a_cell_over_its_time_limit(tmp_path):
    from experiments.notebooks import NotebookFailed, execute

    sleeper = _notebook(tmp_path / "sleeper.ipynb", "import time\ntime.sleep(30)")
    before = sleeper.read_bytes()
    with pytest.raises(NotebookFailed, match="CellTimeoutError"):
        execute(sleeper, tmp_path, timeout_s=2)
    assert sleeper.read_bytes() == before


VERDICT_LABELS = ("**Paper", "**Here", "**Deviation", "**Criteri")


def _text(output: dict) -> str:
    text = output.get("text") or output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_a_paper_vs_here_cell_and_a_computed_verdict(path):
    """Issue 13: per figure, a markdown cell quoting the paper, what runs here, the deviations and the criterion,
    then the code cell that shows the figure and prints the verdict it computes; the committed outputs show it."""
    cells = nbformat.read(path, as_version=4).cells
    showing = [i for i, c in enumerate(cells) if c.cell_type == "code" and i > 1
               and ("show(" in c.source or any("image/png" in o.get("data", {}) for o in c.get("outputs", [])))]
    assert showing, f"{path.name} shows no figure after its set-up cell"
    for i in showing:
        head = cells[i - 1]
        assert head.cell_type == "markdown" and "paper vs here" in head.source, \
            f"{path.name}: code cell {i} shows a figure without a '— paper vs here' cell before it"
        missing = [label for label in VERDICT_LABELS if label not in head.source]
        assert not missing, f"{path.name}: the paper-vs-here cell before code cell {i} lacks {missing}"
        assert "verdict" in cells[i].source.lower(), f"{path.name}: code cell {i} computes no verdict"
        printed = "".join(_text(o) for o in cells[i].get("outputs", []))
        assert "verdict" in printed.lower(), f"{path.name}: the committed outputs of code cell {i} show no verdict " \
                                             "(execute it: python -m experiments notebooks)"
