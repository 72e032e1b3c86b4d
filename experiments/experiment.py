"""What an experiment is (:class:`Experiment`) and what it is told about its run (:class:`RunContext`).

Kept apart from :mod:`experiments.registry` (the catalogue) so that experiment modules import this light module and
the catalogue imports no experiment module until one is run: no import circle, and ``python -m experiments list``
imports neither torch nor matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from scaleup.atomic_write import atomic_write

if TYPE_CHECKING:
    import matplotlib.figure


@dataclass(frozen=True)
class RunContext:
    """What an experiment needs to know about its run: where to write, which seed, how big.

    ``restart`` asks for training from scratch instead of resuming from a checkpoint; the figures written through
    :meth:`save_figure` are listed in ``figures`` (in ``results.json``).
    """

    name: str
    out_dir: Path
    seed: int
    quick: bool
    restart: bool = False
    figures: list[str] = field(default_factory=list, compare=False)

    def save_figure(self, fig: matplotlib.figure.Figure, stem: str) -> str:
        """Write ``fig`` as ``out_dir/stem.png`` atomically (:func:`scaleup.atomic_write.atomic_write`) and return
        the file name."""
        path = atomic_write(self.out_dir / f"{stem}.png", lambda f: fig.savefig(f, dpi=130, bbox_inches="tight",
                                                                                   format="png"))
        if path.name not in self.figures:
            self.figures.append(path.name)
        return path.name


@dataclass(frozen=True)
class Experiment:
    """One experiment's code: a config for full and ``--quick`` runs, and a function from (config, context) to results.

    ``run`` returns the JSON-serialisable results (top-level keys of ``results.json``) and writes its figures
    through :meth:`RunContext.save_figure`. Its name and one-line summary are declared in
    :mod:`experiments.registry`; every experiment module lists its experiments in a module-level ``EXPERIMENTS``.
    """

    name: str
    make_config: Callable[[bool], Any]
    run: Callable[[Any, RunContext], dict]
