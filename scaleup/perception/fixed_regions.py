"""Detectors that detect nothing: a fixed region of every image stands for its face.

They implement the :class:`~.faces.FaceDetector` interface, so every face path of the jobs (crop, classifier, DAL,
region weights) runs unchanged on them.

- :class:`WholeImageDetector` (``whole-image``): the whole image is the one region. For models whose images hold no
  face, e.g. a digits model whose attribute is the ink colour: the classifier sees the whole image. Real use, not
  only a stand-in.
- :class:`CentreBoxDetector` (``centre``): the central square. A stand-in for tiny random models and the benchmark
  at full size with random weights, so that the face-region terms of the aDFT loss (the crop is smaller than the
  image) run; never for real training.
"""

from __future__ import annotations

import torch

from .faces import FaceDetection

__all__ = ["CentreBoxDetector", "WholeImageDetector"]


class WholeImageDetector:
    """The whole image is the one region of every image (score 1, no square expansion)."""

    name = "whole-image"
    expand = 0.0

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]:
        """One detection per image: (0, 0, W, H)."""
        height, width = images.shape[-2:]
        return [[FaceDetection((0.0, 0.0, float(width), float(height)), 1.0)] for _ in range(images.shape[0])]


class CentreBoxDetector:
    """The central square of every image (side ``fraction`` of the shorter side) is its one face.

    Parameters
    ----------
    fraction : float
        Side of the square as a fraction of the image's shorter side, in (0, 1].
    expand : float
        Default square expansion of :func:`~.faces.find_faces` (0: the square itself).
    """

    name = "centre"

    def __init__(self, fraction: float = 0.5, expand: float = 0.0) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1]; got {fraction!r}")
        self.fraction, self.expand = float(fraction), float(expand)

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]:
        """One detection per image: the central square."""
        height, width = images.shape[-2:]
        side = self.fraction * min(height, width)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        return [[FaceDetection(box, 1.0)] for _ in range(images.shape[0])]
