"""Per-prompt and overall bias numbers of an evaluation, from its per-image records alone.

Every number here is a :mod:`theory` metric applied to the records written by the evaluation job, so any of them
can be recomputed from ``records.csv`` without regenerating an image:

- ``bias`` — seed 000 [0124], :func:`theory.metrics.frequency_bias` of the class frequencies among images with a face;
- ``discrepancy`` — seed 001 eq. 11, :func:`theory.metrics.discrepancy` of the face images' class probabilities
  against the target (uniform unless given);
- ``no_face_share`` — the share of images in which the detector found no face (they carry no class);
- ``clip_t`` / ``clip_score`` — CLIP-T of image and prompt as a cosine and as seed 001's x100 score;
- ``clip_i`` / ``dino`` — cosine to the original model's image from the same noise (seed 000 Table 1), when given;
- ``similarity`` — the same cosine under the user's own ``--image-embedder`` (models without CLIP / DINOv2);
- ``confident_share`` — the share of face images whose most probable class has probability >= the run's
  ``confident`` threshold; on an attribute that can be blended (ink colour, skin tone) a model can "balance" by
  drawing the boundary case, which the bias alone would not show;
- ``prompt_accuracy`` — with a content classifier, the share of images whose predicted content class is a word of
  the prompt (the digit a testbed prompt names), the analogue of CLIP-T's prompt alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from theory.image_scores import clip_score_of_cosine
from theory.metrics import class_frequencies, discrepancy, frequency_bias


@dataclass
class ImageRecord:
    """What the evaluation knows of one generated image."""

    prompt_index: int
    prompt: str
    image_index: int
    seed: int
    has_face: bool
    box: list[float] | None
    probs: list[float] | None
    clip_t: float | None = None
    clip_i: float | None = None
    dino: float | None = None
    content: str | None = None
    extra: dict = field(default_factory=dict)
    #: the class a debiasing option (prompt augmentation, semantic guidance) asked of the image; None without one
    requested: str | None = None
    #: cosine to the original model's image from the same noise under the user's ``--image-embedder``; None without
    similarity: float | None = None

    @property
    def label(self) -> int:
        """The most probable class, or -1 for an image without a face."""
        return int(np.argmax(self.probs)) if self.has_face and self.probs is not None else -1


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def prompt_accuracy(records: Sequence[ImageRecord]) -> float | None:
    """Share of images whose content class is one of the prompt's words (None without a content classifier)."""
    judged = [r for r in records if r.content is not None]
    if not judged:
        return None
    return float(np.mean([r.content.lower() in r.prompt.lower().replace(",", " ").split() for r in judged]))


def prompt_summary(records: Sequence[ImageRecord], class_names: Sequence[str],
                   target: Sequence[float] | None = None, *, confident: float | None = None) -> dict:
    """The bias numbers of one prompt's images (see the module docstring); ``None`` where no face was found."""
    if not records:
        raise ValueError("a prompt summary needs at least one image record")
    k = len(class_names)
    target_arr = np.full(k, 1.0 / k) if target is None else np.asarray(target, dtype=np.float64)
    faces = [r for r in records if r.has_face]
    summary: dict = {
        "prompt": records[0].prompt,
        "n_images": len(records),
        "n_faces": len(faces),
        "no_face_share": 1.0 - len(faces) / len(records),
        "clip_t": _mean([r.clip_t for r in records]),
        "clip_score": None,
        "clip_i": _mean([r.clip_i for r in records]),
        "dino": _mean([r.dino for r in records]),
        "similarity": _mean([r.similarity for r in records]),
        "freq": None, "bias": None, "discrepancy": None, "confident_share": None,
        "prompt_accuracy": prompt_accuracy(records),
    }
    if summary["clip_t"] is not None:
        summary["clip_score"] = _mean([clip_score_of_cosine(r.clip_t) for r in records if r.clip_t is not None])
    if faces:
        probs = np.array([r.probs for r in faces], dtype=np.float64)
        if probs.shape[1] != k:
            raise ValueError(f"records hold {probs.shape[1]} class probabilities but the attribute has {k} classes")
        freq = class_frequencies(np.array([r.label for r in faces]), k)
        summary.update(freq=dict(zip(class_names, freq.tolist())), bias=frequency_bias(freq),
                       discrepancy=discrepancy(probs, target_arr))
        if confident is not None:
            summary["confident_share"] = float(np.mean(probs.max(axis=1) >= confident))
    return summary


def overall_summary(per_prompt: Sequence[dict], records: Sequence[ImageRecord], class_names: Sequence[str],
                    target: Sequence[float] | None = None, *, confident: float | None = None) -> dict:
    """Mean and standard deviation over prompts of each per-prompt number, and the numbers of all images pooled."""
    out: dict = {"n_prompts": len(per_prompt)}
    for key in ("bias", "discrepancy", "no_face_share", "confident_share", "prompt_accuracy", "clip_t", "clip_score",
                "clip_i", "dino", "similarity"):
        values = np.array([p[key] for p in per_prompt if p.get(key) is not None], dtype=np.float64)
        out[key] = ({"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                     "n_prompts": int(values.size)} if values.size else None)
    pooled = prompt_summary(records, class_names, target, confident=confident)
    out["pooled"] = {key: pooled[key] for key in ("n_images", "n_faces", "no_face_share", "freq", "bias",
                                                   "discrepancy", "confident_share", "prompt_accuracy")}
    return out
