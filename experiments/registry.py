"""The catalogue of experiments: one :class:`Experiment` per runnable entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib.figure


@dataclass(frozen=True)
class RunContext:
    """What an experiment needs to know about its run: where to write, which seed, how big."""

    name: str
    out_dir: Path
    seed: int
    quick: bool

    def save_figure(self, fig: matplotlib.figure.Figure, stem: str) -> str:
        """Write ``fig`` as ``out_dir/stem.png`` atomically and return the file name."""
        path = self.out_dir / f"{stem}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
        tmp.replace(path)
        return path.name


@dataclass(frozen=True)
class Experiment:
    """One experiment: a config for full and ``--quick`` runs, and a function from (config, context) to results.

    ``run`` returns the JSON-serialisable results (top-level keys of ``results.json``) and writes its figures
    through :meth:`RunContext.save_figure`.
    """

    name: str
    summary: str
    make_config: Callable[[bool], Any]
    run: Callable[[Any, RunContext], dict]


def _catalogue() -> dict[str, Experiment]:
    # Imported here so that `python -m experiments list` stays cheap and each module registers exactly once.
    from experiments import (
        adft_sd,
        bbb_audit,
        bbb_bound,
        bbb_chain,
        bbb_real_embeddings,
        dft,
        gmm_celebahq,
        gmm_digits,
        gmm_toy,
        ot_targets,
        popalign_sd,
        popalign_toy,
    )

    experiments = [
        ot_targets.EXPERIMENT,
        *popalign_toy.EXPERIMENTS,
        popalign_sd.EXPERIMENT,
        *dft.EXPERIMENTS,
        bbb_bound.EXPERIMENT,
        bbb_chain.EXPERIMENT,
        bbb_audit.EXPERIMENT,
        bbb_real_embeddings.EXPERIMENT,
        gmm_toy.EXPERIMENT,
        gmm_digits.EXPERIMENT,
        gmm_celebahq.EXPERIMENT,
        adft_sd.EXPERIMENT,
    ]
    return {e.name: e for e in experiments}


EXPERIMENTS: dict[str, Experiment] = _catalogue()
