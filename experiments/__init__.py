"""One runnable entry per experiment: ``python -m experiments run NAME [--quick] [--out DIR] [--seed S]``.

Each run writes ``DIR/NAME/results.json`` (results, config, seed, versions) and its figures as PNG beside it; the
default DIR is ``paper_figures/out`` for full runs at seed 0 and its own folder otherwise (:func:`default_out`).
From Python: ``experiments.run("ot-targets", quick=True)``.
"""

from experiments.experiment import Experiment, RunContext
from experiments.registry import EXPERIMENTS
from experiments.runner import DEFAULT_OUT, RunRefused, default_out, run

__all__ = ["DEFAULT_OUT", "EXPERIMENTS", "Experiment", "RunContext", "RunRefused", "default_out", "run"]
