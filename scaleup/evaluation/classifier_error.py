"""The evaluation's numbers corrected for its attribute classifier's errors, in the manner of CLEAM (NeurIPS 2023).

The user supplies a labelled folder (``--labelled-folder``, read as the probe trainer reads FairFace, CelebA or a
``<class>/`` folder); every image goes through the evaluation's own detector and classifier, giving the confusion
matrix C and the accuracy per class. Each protocol's number is then recomputed with every measured class
distribution replaced by :func:`theory.classifier_error.corrected_distribution` of it:

- ``adft``: the bias of [0124] of each prompt's corrected class frequencies, mean over prompts;
- ``popalign``: eq. 11 with the corrected pooled class distribution in place of the mean class probability (the
  correction applies to counted classes, not to probabilities); the raw number on the same footing (hard labels) is
  reported beside it.

The interval resamples both the generated images (over prompts and images) and the labelled images (C re-estimated
each time), so that a classifier measured on few labelled images widens it, as it should.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from theory.classifier_error import confusion_matrix, corrected_distribution, per_class_accuracy
from theory.metrics import frequency_bias
from theory.resampling import draw_resamples, percentile_interval

from scaleup.evaluation.protocols import Protocol, item_groups

__all__ = ["labelled_predictions", "corrected_protocol_numbers"]


def labelled_predictions(perceive: Callable, paths: Sequence, labels: np.ndarray, *, size: int,
                         batch_size: int = 64) -> dict:
    """The evaluation's detector + classifier on each labelled image: true and predicted classes of those in which
    it found a face (the others are counted)."""
    from scaleup.perception.labelled_faces import load_image_batch

    true, predicted, without = [], [], 0
    for start in range(0, len(paths), batch_size):
        perceived = perceive(load_image_batch(list(paths[start:start + batch_size]), size))
        for i, found in enumerate(perceived.has_face):
            if not found:
                without += 1
                continue
            true.append(int(labels[start + i]))
            predicted.append(int(np.argmax(perceived.probs[i])))
    return {"true": np.asarray(true, dtype=np.int64), "predicted": np.asarray(predicted, dtype=np.int64),
            "n_labelled": len(paths), "n_without_face": without}


def _class_counts(groups: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    return [np.bincount(g[:, 0][g[:, 0] >= 0].astype(np.int64), minlength=k) for g in groups]


def _corrected_statistic(protocol: Protocol, k: int, target: np.ndarray):
    """(groups, C) -> (raw, corrected) number of ``protocol`` on hard labels."""
    def adft(groups, c):
        raw, corrected = [], []
        for counts in _class_counts(groups, k):
            if counts.sum():
                q = counts / counts.sum()
                raw.append(frequency_bias(q))
                corrected.append(frequency_bias(corrected_distribution(q, c)))
        return (float(np.mean(raw)), float(np.mean(corrected))) if raw else (np.nan, np.nan)

    def popalign(groups, c):
        counts = np.sum(_class_counts(groups, k), axis=0)
        if not counts.sum():
            return np.nan, np.nan
        q = counts / counts.sum()
        return float(np.linalg.norm(target - q)), float(np.linalg.norm(target - corrected_distribution(q, c)))

    return adft if protocol.name == "adft" else popalign


def corrected_protocol_numbers(per_prompt, labelled: dict, protocols: Sequence[Protocol], class_names: Sequence[str],
                               target: Sequence[float] | None = None, *, n_resamples: int = 1000,
                               level: float = 0.95, seed: int = 0) -> dict:
    """Raw and corrected numbers of each protocol, the classifier's accuracy per class and its confusion matrix."""
    k = len(class_names)
    target_arr = np.full(k, 1.0 / k) if target is None else np.asarray(target, dtype=np.float64)
    true, predicted = labelled["true"], labelled["predicted"]
    c = confusion_matrix(true, predicted, k)
    out = {"n_labelled": labelled["n_labelled"], "n_without_face": labelled["n_without_face"],
           "confusion": c.tolist(), "accuracy_per_class": dict(zip(class_names, per_class_accuracy(c).tolist())),
           "protocols": {}}
    for protocol in protocols:
        groups = item_groups(per_prompt, protocol.images_for(k), k)
        statistic = _corrected_statistic(protocol, k, target_arr)
        raw, corrected = statistic(groups, c)
        entry = {"raw": raw, "corrected": corrected, "on": "hard labels (counted classes)", "interval": None}
        if n_resamples and np.isfinite(corrected):
            # independent streams for the generated and the labelled images
            generated_seed, labelled_seed = (int(s.generate_state(1)[0])
                                             for s in np.random.SeedSequence(seed).spawn(2))
            generated = draw_resamples([len(g) for g in groups], n_resamples, seed=generated_seed)
            labelled_draws = draw_resamples([len(true)], n_resamples, seed=labelled_seed, over="images")
            samples = []
            for r, (_, items) in zip(generated, (d[0] for d in labelled_draws)):
                try:
                    c_r = confusion_matrix(true[items], predicted[items], k)
                    samples.append(statistic([groups[g][i] for g, i in r], c_r)[1])
                except ValueError:  # a class without a labelled example, or a singular C, in this draw
                    continue
            samples = np.array([s for s in samples if np.isfinite(s)])
            if samples.size >= 2:
                low, high = percentile_interval(samples, level)
                entry["interval"] = {"level": level, "low": low, "high": high, "n_resamples": n_resamples,
                                     "draws_used": int(samples.size),
                                     "over": "generated images (prompts, images) and labelled images"}
        out["protocols"][protocol.name] = entry
    return out
