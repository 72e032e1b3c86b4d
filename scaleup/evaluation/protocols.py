"""The two papers' evaluation protocols, computed from one evaluation's records, each with its bootstrap interval.

======================  ==============================================  ===========================================
                        ``adft`` (seed 000 [0124])                      ``popalign`` (seed 001 Table 1)
======================  ==============================================  ===========================================
images per prompt       60 / 80 / 160 for K = 2 / 4 / 8                 100
an image without face   no class: left out of the prompt's frequencies  dropped
                        (reported as the no-face share)
the number              bias of [0124] per prompt, mean ± sd over        discrepancy of eq. 11 of the class
                        prompts                                         probabilities pooled over every prompt
comparable to           seed 000 Tables 1-2 (with its classifier)       seed 001 Table 1 (with DeepFace)
======================  ==============================================  ===========================================

Image i of a prompt has the same seed in every run (:func:`scaleup.evaluation.loop.image_seed`), so a run with more
images per prompt holds the other protocol's images as its first ones: both protocols come from one run with the
larger count, each reading the first n images of every prompt. The interval of each number is the percentile
interval of a two-stage bootstrap over prompts and over images within prompts (:mod:`theory.resampling`);
:func:`paired_difference` compares two evaluations of the same prompts and noise (original against finetuned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from theory.metrics import class_frequencies, discrepancy, frequency_bias
from theory.resampling import bootstrap, paired_bootstrap, percentile_interval

from scaleup.evaluation.summary import ImageRecord

__all__ = ["Protocol", "PROTOCOLS", "protocols_named", "images_per_prompt", "interval_text", "item_groups",
           "protocol_numbers", "paired_difference"]


@dataclass(frozen=True)
class Protocol:
    name: str
    images: dict[int, int] | int
    """Images per prompt: by number of classes K, or one count."""
    statistic: str
    faceless: str
    comparable_to: str

    def images_for(self, n_classes: int) -> int:
        return self.images if isinstance(self.images, int) else self.images.get(n_classes, 60)


PROTOCOLS = {
    "adft": Protocol("adft", {2: 60, 4: 80, 8: 160}, "mean over prompts of the bias of [0124] (sd over prompts)",
                     "no class: left out of the prompt's class frequencies, counted in the no-face share",
                     "seed 000 Tables 1-2 ([0124]), with seed 000's evaluation classifiers"),
    "popalign": Protocol("popalign", 100, "discrepancy of eq. 11 of the class probabilities pooled over prompts",
                         "dropped", "seed 001 Table 1, with DeepFace as its classifier"),
}


def interval_text(interval: dict, *, signed: bool = False) -> str:
    """``[low, high]`` of an interval entry of ``results.json``, three decimals (signed for differences)."""
    form = "+.3f" if signed else ".3f"
    return f"[{interval['low']:{form}}, {interval['high']:{form}}]"


def protocols_named(name: str) -> tuple[Protocol, ...]:
    """``adft``, ``popalign`` or ``both``."""
    if name == "both":
        return PROTOCOLS["adft"], PROTOCOLS["popalign"]
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be adft, popalign or both; got {name!r}")
    return (PROTOCOLS[name],)


def images_per_prompt(name: str, n_classes: int) -> int:
    """The images per prompt a run needs so that every named protocol reads its own count."""
    return max(p.images_for(n_classes) for p in protocols_named(name))


def _tables(per_prompt: Sequence[Sequence[ImageRecord]], n: int, k: int):
    """Per prompt, the first ``n`` images' labels (-1 without a face) and class probabilities (NaN without)."""
    labels, probs = [], []
    for records in per_prompt:
        kept = sorted(records, key=lambda r: r.image_index)[:n]
        labels.append(np.array([r.label for r in kept]))
        probs.append(np.array([r.probs if r.has_face and r.probs is not None else [np.nan] * k for r in kept],
                              dtype=np.float64).reshape(len(kept), k))
    return labels, probs


def _statistic(protocol: Protocol, k: int, target: np.ndarray) -> Callable[[Sequence[np.ndarray]], float]:
    """The protocol's number from groups of item rows ``[label, p_1 .. p_K]``."""
    if protocol.name == "adft":
        def mean_bias(groups):
            biases = [frequency_bias(class_frequencies(g[:, 0][g[:, 0] >= 0].astype(np.int64), k))
                      for g in groups if (g[:, 0] >= 0).any()]
            return float(np.mean(biases)) if biases else np.nan
        return mean_bias

    def pooled_discrepancy(groups):
        rows = np.concatenate([g[g[:, 0] >= 0, 1:] for g in groups])
        return discrepancy(rows, target) if len(rows) else np.nan
    return pooled_discrepancy


def item_groups(per_prompt: Sequence[Sequence[ImageRecord]], n: int, k: int) -> list[np.ndarray]:
    """Per prompt, one row ``[label, p_1 .. p_K]`` for each of its first ``n`` images (label -1, p NaN: no face)."""
    labels, probs = _tables(per_prompt, n, k)
    return [np.column_stack([lab.astype(np.float64), p]) for lab, p in zip(labels, probs)]


def _interval(samples: np.ndarray, level: float) -> tuple[float, float] | None:
    finite = samples[np.isfinite(samples)]
    return percentile_interval(finite, level) if finite.size >= 2 else None


def protocol_numbers(per_prompt: Sequence[Sequence[ImageRecord]], protocol: Protocol, class_names: Sequence[str],
                     target: Sequence[float] | None = None, *, n_resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict:
    """The protocol's number on the first n images of every prompt, with its bootstrap interval."""
    k = len(class_names)
    target_arr = np.full(k, 1.0 / k) if target is None else np.asarray(target, dtype=np.float64)
    n = protocol.images_for(k)
    have = min(len(r) for r in per_prompt)
    groups = item_groups(per_prompt, n, k)
    statistic = _statistic(protocol, k, target_arr)
    value = statistic(groups)
    out = {"protocol": protocol.name, "statistic": protocol.statistic, "faceless": protocol.faceless,
           "comparable_to": protocol.comparable_to, "images_per_prompt": min(n, have),
           "short_of_protocol": have < n, "n_prompts": len(per_prompt),
           "value": None if not np.isfinite(value) else float(value), "interval": None}
    if protocol.name == "adft":
        biases = [statistic([g]) for g in groups]
        kept = np.array([b for b in biases if np.isfinite(b)])
        out["sd_over_prompts"] = float(kept.std(ddof=1)) if kept.size > 1 else None
        out["prompts_without_faces"] = int(len(biases) - kept.size)
    else:
        out["faces_pooled"] = int(sum((g[:, 0] >= 0).sum() for g in groups))
    if n_resamples and np.isfinite(value):
        samples = bootstrap(groups, statistic, n_resamples=n_resamples, seed=seed)
        low_high = _interval(samples, level)
        out["interval"] = None if low_high is None else {
            "level": level, "low": low_high[0], "high": low_high[1], "n_resamples": n_resamples, "seed": seed,
            "over": "prompts and images within prompts (two-stage bootstrap)"}
    return out


def paired_difference(per_prompt_a: Sequence[Sequence[ImageRecord]], per_prompt_b: Sequence[Sequence[ImageRecord]],
                      protocol: Protocol, class_names: Sequence[str], target: Sequence[float] | None = None, *,
                      n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """B's number minus A's under ``protocol``, with the interval of a paired bootstrap: both evaluations must hold
    the same prompts and, per prompt, images made from the same seeds (refused otherwise)."""
    k = len(class_names)
    n = protocol.images_for(k)
    for ra, rb in zip(per_prompt_a, per_prompt_b):
        sa = [r.seed for r in sorted(ra, key=lambda r: r.image_index)][:n]
        sb = [r.seed for r in sorted(rb, key=lambda r: r.image_index)][:n]
        if ra[0].prompt != rb[0].prompt or sa != sb:
            raise ValueError(f"prompt {ra[0].prompt!r}: the two evaluations do not share its prompt and image seeds; "
                             "a paired comparison needs the same prompts, seed and images per prompt in both")
    if len(per_prompt_a) != len(per_prompt_b):
        raise ValueError(f"the evaluations hold {len(per_prompt_a)} and {len(per_prompt_b)} prompts; a paired "
                         "comparison needs the same prompts")
    target_arr = np.full(k, 1.0 / k) if target is None else np.asarray(target, dtype=np.float64)
    statistic = _statistic(protocol, k, target_arr)
    ga, gb = item_groups(per_prompt_a, n, k), item_groups(per_prompt_b, n, k)
    a, b = statistic(ga), statistic(gb)
    samples = paired_bootstrap(ga, gb, statistic, n_resamples=n_resamples, seed=seed)
    low_high = _interval(samples, level)
    return {"protocol": protocol.name, "statistic": protocol.statistic, "a": float(a), "b": float(b),
            "difference": float(b - a),
            "interval": None if low_high is None else {
                "level": level, "low": low_high[0], "high": low_high[1], "n_resamples": n_resamples, "seed": seed,
                "over": "prompts and images within prompts, the same draws for both (paired bootstrap)"},
            "excludes_zero": None if low_high is None else bool(low_high[0] > 0 or low_high[1] < 0)}
