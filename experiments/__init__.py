"""One runnable entry per experiment: ``python -m experiments run NAME [--quick] [--out DIR] [--seed S]``.

Each run writes ``DIR/NAME/results.json`` (results, config, seed, versions) and its figures as PNG beside it; the
default DIR is ``paper_figures/out`` for full runs at seed 0 and its own folder otherwise (:func:`default_out`).
From Python: ``experiments.run("ot-targets", quick=True)``. ``python -m experiments plot NAME`` (:func:`plot`) redraws
the figures of an existing run from its ``results.json`` alone; :func:`results` loads a run's results (computing
them only when absent) and :func:`figures` draws its figures in memory, which the notebooks show.
"""

from experiments.experiment import Experiment, RunContext
from experiments.registry import EXPERIMENTS
from experiments.runner import (
    DEFAULT_OUT,
    PlotRefused,
    RunRefused,
    default_out,
    figure_pngs,
    figures,
    plot,
    results,
    run,
)

__all__ = ["DEFAULT_OUT", "EXPERIMENTS", "Experiment", "PlotRefused", "RunContext", "RunRefused", "default_out",
           "figure_pngs", "figures", "plot", "results", "run"]
