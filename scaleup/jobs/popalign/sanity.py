"""The sanity filter of the preference data (seed 001, Sec. 3.1).

"As a sanity check, for each pair of sets, we use a classifier in combination with a face detector to determine if
the sampled images are indeed consistent with the prompts. We drop pairs that are incorrect or ambiguous" (the
helmeted astronaut: no face, so no gender or race). Per image, with the largest face of each image classified:

- ``no_face``: the detector finds no face (any image);
- ``ambiguous``: an augmented image whose top class probability is below ``min_confidence``;
- ``disagrees``: an augmented image classified as another class than its keyword's.

Per set pair (:func:`check_pair`): every image must pass, and (``require_winner_closer``) the winning set's mean
class probabilities must be closer to the target than the losing set's, in the discrepancy of eq. 11; a pair that
fails is dropped. The job drops failing images before drawing sets, so that a single helmet does not cost a pair.

Detector and classifier are named as in :mod:`scaleup.perception.factory` (as for the evaluation and aDFT jobs);
``whole-image`` classifies the whole image, for models whose images hold no face. Besides the factory's classifier
names, ``auto`` picks the shipped dlib network for gender and age and CLIP zero-shot otherwise, ``clip`` is CLIP
zero-shot, and ``tiny-clip`` is CLIP zero-shot on a randomly initialised tiny CLIP: a stand-in for runs on tiny random
models, named as one wherever its results are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from theory.metrics import discrepancy

OK, NO_FACE, AMBIGUOUS, DISAGREES, UNCHECKED = "ok", "no_face", "ambiguous", "disagrees", "unchecked"
FILTER_MODES = ("apply", "record", "off")


@dataclass
class Perception:
    """A face detector and an attribute classifier, with how each is described in the results."""

    detector: object
    classifier: object
    description: dict = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return None if self.classifier is None else tuple(self.classifier.class_names)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 3, H, W) in [0, 1] -> has_face (B,) bool and class probabilities (B, K), NaN rows without a face
        (None without a classifier: keywords that name no class are checked for a face only)."""
        from scaleup.perception.classifiers import classify_largest_faces
        from scaleup.perception.faces import find_faces

        if self.classifier is None:
            return find_faces(images, self.detector).found.numpy(), None
        with torch.no_grad():
            logits, faces = classify_largest_faces(images, self.detector, self.classifier)
        probs = torch.softmax(logits.double(), dim=-1).numpy()
        found = faces.found.numpy()
        probs[~found] = np.nan
        return found, probs


#: PopAlign's classifier choices besides the factory's names, and the factory name each resolves to.
POPALIGN_CLASSIFIERS = {"clip": "clip-zero-shot", "tiny-clip": "clip-zero-shot"}


def classifier_spec(classifier: str, attribute: str | None) -> str:
    """The :mod:`scaleup.perception.factory` classifier that the build-sets choice ``classifier`` names for
    ``attribute``: ``auto`` is the dlib network for gender and age, CLIP zero-shot otherwise; ``clip`` and
    ``tiny-clip`` are CLIP zero-shot; any other value is a factory name already."""
    if classifier == "auto":
        return {"gender": "dlib-gender", "age": "dlib-age"}.get(attribute or "", "clip-zero-shot")
    return POPALIGN_CLASSIFIERS.get(classifier, classifier)


def check_perception(attribute: str | None, detector: str, classifier: str) -> None:
    """Refuse a detector or classifier setting before any model loads (:mod:`scaleup.perception.factory`)."""
    from scaleup.perception.factory import check_classifier_spec, check_detector_name

    check_detector_name(detector)
    if attribute is not None:
        check_classifier_spec(classifier_spec(classifier, attribute), attribute)


def make_perception(attribute: str | None, detector: str = "dlib", classifier: str = "auto", *,
                    clip_model: str | None = None, seed: int = 0) -> Perception:
    """The detector and classifier named in the build-sets config, for ``attribute`` (module docstring for the
    names; ``clip_model`` or ``FAIRDIFF_CLIP`` is the CLIP of ``clip`` and of probes; ``seed`` seeds ``tiny-clip``)."""
    from scaleup.perception import ClipEmbedder
    from scaleup.perception.factory import classifier_needs_clip, make_classifier, make_detector

    check_perception(attribute, detector, classifier)
    det = make_detector(detector)
    if attribute is None:  # user keywords without classes: the face check only
        return Perception(det, None, {"detector": detector, "classifier": None, "attribute": None})
    spec = classifier_spec(classifier, attribute)
    embedder = None
    if classifier == "tiny-clip":
        from scaleup.models.tiny import tiny_clip_model

        embedder = ClipEmbedder(*tiny_clip_model(seed))
        cls_text = "tiny-clip (stand-in: randomly initialised tiny CLIP zero-shot, labels are noise)"
    elif classifier_needs_clip(spec):
        from scaleup.models.loading import load_clip

        embedder = ClipEmbedder(*load_clip(clip_model))
        cls_text = f"{spec} (CLIP {clip_model or 'default'})"
    else:
        cls_text = spec
    cls = make_classifier(spec, attribute, clip_embedder=embedder)
    return Perception(det, cls, {"detector": detector, "classifier": cls_text, "attribute": attribute})


def judge_image(has_face: bool, probs: Sequence[float] | None, expected_class: int | None,
                min_confidence: float) -> str:
    """The verdict on one image (module docstring); ``expected_class`` None for a neutral image or a keyword
    without a class."""
    if not has_face:
        return NO_FACE
    if expected_class is None:
        return OK
    probs = np.asarray(probs, dtype=np.float64)
    if probs.max() < min_confidence:
        return AMBIGUOUS
    return OK if int(np.argmax(probs)) == expected_class else DISAGREES


def check_pair(winners: Sequence[dict], losers: Sequence[dict], class_target: np.ndarray | None, *,
               require_winner_closer: bool = True) -> str | None:
    """Why a set pair fails the sanity check, or None when it passes.

    ``winners`` / ``losers`` are image rows with ``verdict`` and ``probs`` (class probabilities or None).
    Reasons: ``winner_<verdict>`` / ``loser_<verdict>`` for the first failing image, ``winner_not_closer`` when the
    winning set is not closer to ``class_target`` than the losing set (eq. 11 discrepancy of the mean probabilities).
    """
    for role, rows in (("winner", winners), ("loser", losers)):
        for row in rows:
            if row["verdict"] not in (OK, UNCHECKED):
                return f"{role}_{row['verdict']}"
    if require_winner_closer and class_target is not None:
        probs_w = [r["probs"] for r in winners]
        probs_l = [r["probs"] for r in losers]
        if all(p is not None for p in probs_w + probs_l):
            if not discrepancy(probs_w, class_target) < discrepancy(probs_l, class_target):
                return "winner_not_closer"
    return None


def load_images(paths: Sequence[Path]) -> torch.Tensor:
    """PNG files -> (B, 3, H, W) float in [0, 1] (all of one size, as one generate run makes them)."""
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def perceive_records(records: list[dict], root: Path, perception: Perception, *, batch_size: int = 16,
                     progress: bool = True) -> None:
    """Add ``has_face`` and ``probs`` (a list, or None without a face) to each generated record, in place."""
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(records), batch_size), desc="sanity filter", disable=not progress):
        chunk = records[start:start + batch_size]
        has_face, probs = perception(load_images([root / r["file"] for r in chunk]))
        for r, face, p in zip(chunk, has_face, probs if probs is not None else [None] * len(chunk)):
            r["has_face"] = bool(face)
            r["probs"] = [float(v) for v in p] if face and probs is not None else None
