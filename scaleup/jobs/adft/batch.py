"""What one iteration draws: its prompt, the initial-noise seed of each of its N images, its number of sampler steps.

Seed 000 generates "a batch of images using ... some prompt P" ([0105]): one prompt per iteration, shared by all N
images and all processes, so that the DAL aligns the distribution of that prompt's images. The prompts of all
families of the run ([0134]: several at once) are pooled and visited in a fresh random order every epoch, as the
official code's data loader does. Everything is a function of (run seed, iteration) through
``numpy.random.SeedSequence``, so a resumed run draws exactly what an uninterrupted one would, whatever the number
of processes: each process takes its contiguous slice of the N seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class IterationBatch:
    """The draws of iteration ``iteration`` (0-based)."""

    iteration: int
    prompt: str
    seeds: tuple[int, ...]
    """One initial-noise seed per image of the whole batch (N), in batch order."""
    n_steps: int
    dal_seed: int
    """Seed of the Monte Carlo OT targets when they are needed (K > 2 beyond the exact budget)."""

    def local(self, rank: int, num_processes: int) -> tuple[int, int]:
        """[start, stop) of the images process ``rank`` generates (N is a multiple of ``num_processes``)."""
        per = len(self.seeds) // num_processes
        return rank * per, (rank + 1) * per


def draw_batch(prompts: Sequence[str], iteration: int, *, seed: int, batch_size: int, n_steps: int,
               steps_range: tuple[int, int] | None = None) -> IterationBatch:
    """The batch of ``iteration``: prompt ``order[iteration % P]`` of the epoch's permutation, N image seeds and,
    with ``steps_range = (low, high)``, a step count drawn uniformly from low..high (the official code: 19..23)."""
    prompts = list(prompts)
    epoch, position = divmod(iteration, len(prompts))
    order = np.random.default_rng(np.random.SeedSequence([seed, 0, epoch])).permutation(len(prompts))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, iteration]))
    # 63-bit seeds: torch.Generator.manual_seed takes any int64 >= 0
    seeds = tuple(int(s) for s in rng.integers(0, 2 ** 63 - 1, size=batch_size, dtype=np.int64))
    steps = int(rng.integers(steps_range[0], steps_range[1] + 1)) if steps_range is not None else int(n_steps)
    dal_seed = int(rng.integers(0, 2 ** 63 - 1, dtype=np.int64))
    return IterationBatch(iteration=iteration, prompt=prompts[int(order[position])], seeds=seeds, n_steps=steps,
                          dal_seed=dal_seed)
