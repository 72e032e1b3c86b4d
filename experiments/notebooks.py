"""Execute the notebooks of ``paper_figures/`` against existing results and save them with their outputs.

``python -m experiments notebooks [NAME ...]`` runs each notebook top to bottom (nbclient, the library Jupyter
itself uses) with the committed results as its input, so that the outputs a code host shows are drawn from
``paper_figures/out``. A notebook only reads results (it computes one only when absent); this command refuses to
save a notebook whose execution changed any ``results.json`` under the output root, so that opening the figures can
never silently replace a run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from scaleup.atomic_write import atomic_write_text

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "paper_figures"


class NotebookFailed(RuntimeError):
    """A notebook raised while executing, or its execution changed existing results."""


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The notebooks named (stem, e.g. ``gamma_face``), or all of ``paper_figures/``; an unknown name is an error."""
    available = {p.stem: p for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))}
    if not names:
        return list(available.values())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; choose from: {', '.join(available)}")
    return [available[n] for n in names]


def _results_fingerprint(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*/results.json"))}


def execute(path: Path, out: Path, timeout_s: int = 1800, dest: Path | None = None) -> None:
    """Execute notebook ``path`` with ``FAIRDIFF_OUT=out`` (full configuration) and save it to ``dest`` (default: in
    place), atomically.

    Raises :class:`NotebookFailed` when a cell raises or when any ``out/*/results.json`` that existed before changed;
    the notebook file is then left as it was.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    before = _results_fingerprint(out)
    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("FAIRDIFF_OUT", "FAIRDIFF_QUICK", "MPLBACKEND")}
    os.environ.update({"FAIRDIFF_OUT": str(out), "FAIRDIFF_QUICK": "0", "MPLBACKEND": "Agg"})
    try:
        NotebookClient(nb, timeout=timeout_s, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as err:
        raise NotebookFailed(f"{path.name}: a cell raised; the notebook was not saved:\n{err}") from None
    except (CellTimeoutError, DeadKernelError) as err:
        raise NotebookFailed(f"{path.name}: {type(err).__name__} (a cell ran over {timeout_s} s or the kernel died); "
                             f"the notebook was not saved") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    after = _results_fingerprint(out)
    changed = sorted(p for p in before if after.get(p) != before[p])
    if changed:
        raise NotebookFailed(f"{path.name}: executing it changed existing results ({', '.join(changed)}); "
                             f"the notebook was not saved")
    atomic_write_text(path if dest is None else dest, nbformat.writes(nb) + "\n")
