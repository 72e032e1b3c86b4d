"""Winning and losing sets of one identity-neutral prompt (seed 001, Sec. 3.1, 5.1, App. C, App. H.2).

A winning set X^w holds N images of the prompt's identity-augmented versions whose keyword counts follow the target
distribution D (uniform, or e.g. 80/20 as in App. H.2); a losing set X^l holds N images of the neutral prompt
itself; the pair is captioned with the neutral prompt. Position i of X^w is paired with position i of X^l (the
training step gives both the same noise and timestep, as the public code does).

Keyword counts: N D_k is rarely an integer, so each set's counts are drawn by systematic sampling: one u ~ U[0, 1),
count_k = ceil(C_k - u) - ceil(C_{k-1} - u) with C_k = N (D_1 + ... + D_k). Every count is floor(N D_k) or
ceil(N D_k), they sum to N, and E[count_k] = N D_k exactly, so the winning sets match D on average with the least
spread any rounding allows (written here because numpy offers only multinomial draws, whose spread is larger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def systematic_counts(n: int, target: Sequence[float], u: float) -> np.ndarray:
    """Keyword counts of one set of ``n`` images for the offset ``u`` in [0, 1) (module docstring)."""
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must lie in [0, 1); got {u!r}")
    target = np.asarray(target, dtype=np.float64)
    edges = n * np.concatenate([[0.0], np.cumsum(target)])
    # N D_1 + ... + N D_k meant to be an integer (N = 12, D uniform over 12) must not land a rounding error below
    # it, or a point u + j would fall into the wrong class
    nearest = np.round(edges)
    edges = np.where(np.abs(edges - nearest) < 1e-9, nearest, edges)
    # class of each point u + j: the count of C_k = ceil(C_k - u) - ceil(C_{k-1} - u), without float ceil's edge
    # cases (u + j rounding up to n is clipped into the last class)
    classes = np.clip(np.searchsorted(edges, u + np.arange(n), side="right") - 1, 0, len(target) - 1)
    return np.bincount(classes, minlength=len(target)).astype(np.int64)


@dataclass
class PromptSets:
    """The set pairs of one neutral prompt and what was dropped on the way."""

    pairs: list[tuple[list[dict], list[dict]]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # pair-level reasons
    flagged: dict[str, int] = field(default_factory=dict)  # reasons recorded but not applied (filter "record")
    shortage: str | None = None  # why no (more) sets could be drawn


def draw_prompt_sets(winner_pools: dict[str, list[dict]], loser_pool: list[dict], keywords: Sequence[str],
                     target: np.ndarray, set_size: int, rng: np.random.Generator, *, max_sets: int | None,
                     reuse: bool, check=None, apply_check: bool = True) -> PromptSets:
    """Draw set pairs for one prompt.

    Parameters
    ----------
    winner_pools : keyword -> eligible image rows of its augmented prompt.
    loser_pool : eligible image rows of the neutral prompt.
    target : distribution over ``keywords``.
    max_sets : stop after this many kept pairs (required when ``reuse``).
    reuse : False: every image enters at most one set (disjoint sets until a pool runs out); True: each set draws
        afresh from the whole pools (without replacement inside a set), as the public code does.
    check : ``check(winners, losers) -> reason or None`` (:func:`.sanity.check_pair`); a failing pair is dropped
        when ``apply_check``, else kept and counted in ``flagged``.
    """
    if reuse and max_sets is None:
        raise ValueError("sets_per_prompt is required when images are reused across sets")
    pools = {k: list(winner_pools.get(k, [])) for k in keywords}
    losers = list(loser_pool)
    if not reuse:
        for k in keywords:
            rng.shuffle(pools[k])
        rng.shuffle(losers)
    result = PromptSets()
    attempts = 0
    while max_sets is None or len(result.pairs) < max_sets:
        attempts += 1
        if reuse and attempts > 20 * max_sets:  # every draw keeps failing the check: stop rather than spin
            result.shortage = "pairs_keep_failing_check"
            break
        counts = systematic_counts(set_size, target, float(rng.random()))
        short = [k for k, c in zip(keywords, counts) if len(pools[k]) < c]
        if short or len(losers) < set_size:
            what = ", ".join(f"{k!r}" for k in short) or "the neutral prompt"
            result.shortage = f"too_few_images ({what})"
            break
        winners = []
        for k, c in zip(keywords, counts):
            if reuse:
                winners += [pools[k][i] for i in rng.choice(len(pools[k]), size=int(c), replace=False)]
            else:
                winners += [pools[k].pop() for _ in range(int(c))]
        if reuse:
            chosen = [losers[i] for i in rng.choice(len(losers), size=set_size, replace=False)]
        else:
            chosen = [losers.pop() for _ in range(set_size)]
        order = rng.permutation(set_size)  # keyword blocks would otherwise always meet the same loser positions
        winners = [winners[i] for i in order]
        reason = check(winners, chosen) if check is not None else None
        if reason is not None:
            if apply_check:
                result.dropped[reason] = result.dropped.get(reason, 0) + 1
                continue
            result.flagged[reason] = result.flagged.get(reason, 0) + 1
        result.pairs.append((winners, chosen))
    return result
