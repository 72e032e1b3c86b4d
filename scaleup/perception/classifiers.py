"""The attribute-classifier interface: face crops (B, 3, H, W) in [0, 1] -> logits (B, K), differentiable.

Seed 000 applies a classifier h to the face region of every generated image and the DAL to its probabilities
([0108]); it trains *separate* classifiers for evaluation ([0124]: "The system trains separate gender and race
classifiers for evaluation"; [0132]: "an independently trained age classifier"). Here a training classifier and an
evaluation classifier are simply two instances of this interface built from different weights or models, e.g.
the aDFT job's DAL on a CLIP probe (:mod:`.linear_probe`) and the evaluation on the shipped dlib gender network
(:mod:`.gender_onnx`) or on a probe trained on another dataset; nothing is shared between them.

Implementations: :class:`~.zero_shot.ClipZeroShotClassifier` (a), :class:`~.linear_probe.ClipProbeClassifier` (b),
:class:`~.gender_onnx.DlibGenderClassifier` / :class:`~.gender_onnx.DlibAgeClassifier` (c).
"""

from __future__ import annotations

import torch
from torch import nn

from .attributes import Attribute, check_class_names, get_attribute
from .crops import check_images
from .faces import FaceBoxes, FaceDetector, crop_largest_faces

__all__ = ["AttributeClassifier", "check_classifier", "classify_largest_faces"]


class AttributeClassifier(nn.Module):
    """Base class: ``forward(faces) -> logits`` with column k = ``class_names[k]`` = ``attribute.class_names[k]``.

    Parameters
    ----------
    attribute : str or Attribute
    class_names : sequence of str, optional
        The classifier's own class order; must equal the attribute's (count and order), else ValueError.

    Subclasses implement :meth:`forward`; gradients flow from the logits to the input pixels. Classifier weights
    are frozen (their parameters have ``requires_grad=False``) unless a subclass says otherwise.
    """

    def __init__(self, attribute: str | Attribute, class_names=None) -> None:
        super().__init__()
        self.attribute = get_attribute(attribute)
        self.class_names = tuple(self.attribute.class_names if class_names is None else class_names)
        check_class_names(self.class_names, self.attribute, owner=type(self).__name__)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def probabilities(self, faces: torch.Tensor) -> torch.Tensor:
        """softmax of the logits, (B, K)."""
        return torch.softmax(self(faces), dim=-1)


def check_classifier(classifier: object, attribute: str | Attribute) -> None:
    """Refuse a classifier that is not an :class:`AttributeClassifier` for ``attribute`` (before any compute).

    Raises
    ------
    ValueError
        If it has no ``class_names`` or its class count / names / order differ from the attribute's.
    """
    attr = get_attribute(attribute)
    names = getattr(classifier, "class_names", None)
    if names is None or not callable(classifier):
        raise ValueError(f"classifier must be an AttributeClassifier (callable with .class_names); "
                         f"got {type(classifier).__name__}")
    check_class_names(names, attr, owner=f"classifier {type(classifier).__name__}")


def classify_largest_faces(images: torch.Tensor, detector: FaceDetector, classifier: AttributeClassifier, *,
                           crop_size: int = 224, expand: float | None = None,
                           min_score: float | None = None) -> tuple[torch.Tensor, FaceBoxes]:
    """Detect the largest face of every image, crop it differentiably, classify it (seed 000 [0108], [0124]).

    Returns
    -------
    logits : torch.Tensor
        (B, K), differentiable w.r.t. ``images``; rows where ``faces.found`` is False are logits of a placeholder
        crop and must be masked out (they contribute nothing, [0109]).
    faces : FaceBoxes
    """
    check_images(images)
    crops, faces = crop_largest_faces(images, detector, crop_size, expand=expand, min_score=min_score)
    return classifier(crops), faces
