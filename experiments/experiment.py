"""What an experiment is (:class:`Experiment`) and what it is told about its run (:class:`RunContext`).

Kept apart from :mod:`experiments.registry` (the catalogue) so that experiment modules import this light module and
the catalogue imports no experiment module until one is run: no import circle, and ``python -m experiments list``
imports neither torch nor matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from scaleup.atomic_write import atomic_write
from scaleup.errors import ModelUnavailableError

if TYPE_CHECKING:
    import matplotlib.figure


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent seeds derived from ``seed`` by ``numpy.random.SeedSequence(seed).spawn(n)``.

    Each child is reduced to one 32-bit word, which torch generators, numpy and scikit-learn all accept (a run seed
    may have 64 bits; scikit-learn takes 32). Child i is the same for every n > i, and two seeds share no stream,
    unlike ``seed + i`` (``--seed 0`` and ``--seed 1`` would share all but one). Two children coincide with
    probability about n^2 / 2^33.
    """
    import numpy as np  # here, so that the catalogue stays free of imports beyond the standard library

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer number of streams; got {n!r}")
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n)]


@dataclass(frozen=True)
class RunContext:
    """What an experiment needs to know about its run: where to write, which seed, how big.

    ``restart`` asks for training from scratch instead of resuming from a checkpoint; ``retrain`` asks an experiment
    that reuses a committed trained artifact (the testbed) to train it anew instead; ``reevaluate`` asks one that
    reuses committed evaluation summaries (checking a sample) to recompute them all; ``allow_missing_models`` lets
    an experiment run without a model that is not on this machine (:meth:`model_absent`). The figures written
    through :meth:`save_figure` are listed in ``figures`` and the models run without in ``missing_models`` (both
    recorded in ``results.json``).
    """

    name: str
    out_dir: Path
    seed: int
    quick: bool
    restart: bool = False
    allow_missing_models: bool = False
    retrain: bool = False
    reevaluate: bool = False
    figures: list[str] = field(default_factory=list, compare=False)
    missing_models: list[str] = field(default_factory=list, compare=False)

    def seeds(self, n: int) -> list[int]:
        """``n`` independent seeds for the run's random streams: :func:`spawn_seeds` of the run's seed."""
        return spawn_seeds(self.seed, n)

    def model_absent(self, message: str) -> None:
        """A model this run needs is not on this machine: stop with :class:`~scaleup.errors.ModelUnavailableError`
        (``message`` names the environment variable to set and the folder it expects), or, when the run allows
        missing models, record ``message`` in ``missing_models`` and let the experiment go on without it.

        A model that an environment variable names and that cannot be loaded is not absent but misconfigured: raise
        :class:`~scaleup.errors.ModelUnavailableError` directly, allowed or not.
        """
        if not self.allow_missing_models:
            raise ModelUnavailableError(f"{message}; or pass --allow-missing-models (allow_missing_models=True) to "
                                        f"run without it and record its absence")
        self.missing_models.append(message)

    def save_figure(self, fig: matplotlib.figure.Figure, stem: str) -> str:
        """Write ``fig`` as ``out_dir/stem.png`` atomically (:func:`scaleup.atomic_write.atomic_write`) and return
        the file name."""
        name = save_figure(fig, self.out_dir, stem)
        if name not in self.figures:
            self.figures.append(name)
        return name


def save_figure(fig: matplotlib.figure.Figure, out_dir: Path, stem: str) -> str:
    """Write ``fig`` as ``out_dir/stem.png`` atomically (:func:`scaleup.atomic_write.atomic_write`) and return the
    file name. Used by a run (:meth:`RunContext.save_figure`) and by ``python -m experiments plot``."""
    path = atomic_write(Path(out_dir) / f"{stem}.png", lambda f: fig.savefig(f, dpi=130, bbox_inches="tight",
                                                                                format="png"))
    return path.name


#: A plot step: from the dictionary written to ``results.json`` to figures by file stem (``{"gmm_toy": fig}``).
PlotStep = Callable[[dict], "dict[str, matplotlib.figure.Figure]"]


@dataclass(frozen=True)
class Experiment:
    """One experiment's code: a config for full and ``--quick`` runs, a compute step from (config, context) to
    results, and a plot step from results to figures.

    ``run`` (the compute step) returns the JSON-serialisable results (top-level keys of ``results.json``) and draws
    nothing (except where ``plot`` is None: ``gmm-celebahq``, whose sample grid is too big for ``results.json``,
    draws through :meth:`RunContext.save_figure`). ``plot`` reads only the dictionary written to ``results.json`` (as loaded back from JSON: string keys,
    lists for arrays; the run's ``config`` and ``seed`` are in it) and returns ``{stem: figure}``; the runner saves
    each as ``stem.png``, and ``python -m experiments plot NAME`` redraws them from an existing ``results.json``
    without any compute. A missing key raises ``KeyError`` (results of another version of the experiment).
    Its name and one-line summary are declared in :mod:`experiments.registry`; every experiment module lists its
    experiments in a module-level ``EXPERIMENTS``.
    """

    name: str
    make_config: Callable[[bool], Any]
    run: Callable[[Any, RunContext], dict]
    plot: Optional[PlotStep] = None
