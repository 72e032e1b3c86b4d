"""Perception: attributes, face detection on a real photograph, the differentiable crop, the shipped ONNX gender model
converted to torch, CLIP zero-shot and probe classifiers, embedders (seed 000 [0108], [0120]-[0124], [0132])."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scaleup.perception.attributes import (ATTRIBUTES, celeba_class_index, check_class_names, fairface_class_index,
                                           get_attribute)
from scaleup.perception.crops import crop_faces, crop_frames, square_boxes
from scaleup.perception.faces import (DlibFaceDetector, FaceDetection, HaarFaceDetector, crop_largest_faces,
                                      find_faces, make_face_detector)

# The astronaut's face in skimage.data.astronaut() (512 x 512, Eileen Collins), determined once by inspection:
# hairline at y ~ 66, chin at y ~ 172, cheek to cheek x ~ 176 - 270. The two detectors agree independently: Haar
# gives (177, 66, 272, 161) (forehead to mouth-chin), dlib HOG (179, 83, 267, 171) (eyebrows to chin); their IoU
# with each other is 0.69, and this region is close to their union.
ASTRONAUT_FACE = (176.0, 66.0, 270.0, 172.0)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    return torch.tensor(skimage_data.astronaut()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def detectors():
    return {"haar": HaarFaceDetector(), "dlib": DlibFaceDetector()}


# ---- attributes ------------------------------------------------------------------------------------------------

def test_attribute_classes_follow_the_seed():
    assert get_attribute("gender").class_names == ("male", "female")
    assert get_attribute("race").class_names == ("WMELH", "Asian", "Black", "Indian")  # [0120]
    gr = get_attribute("gender_race")
    assert gr.num_classes == 8
    assert [gr.class_names[4 * g + r] for g in range(2) for r in range(4)] == [
        f"{g}-{r}" for g in ("male", "female") for r in ("WMELH", "Asian", "Black", "Indian")]
    assert get_attribute("age").class_names == ("young", "old")
    for attr in ATTRIBUTES.values():
        assert len(attr.prompts) == attr.num_classes and all(len(p) >= 5 for p in attr.prompts)
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        get_attribute("hair")


def test_dataset_labels_map_to_seed_groups():
    row = {"file": "train/1.jpg", "age": "30-39", "gender": "Female", "race": "Latino_Hispanic"}
    assert fairface_class_index(row, "gender") == 1
    assert fairface_class_index(row, "race") == 0  # WMELH
    assert fairface_class_index(row, "gender_race") == 4  # female-WMELH
    assert fairface_class_index(row, "age") == 0  # 30-39 is young, [0132]
    assert fairface_class_index({**row, "age": "40-49"}, "age") == 1
    assert fairface_class_index({**row, "race": "Southeast Asian"}, "race") == 1
    with pytest.raises(ValueError, match="FairFace race value 'Martian'"):
        fairface_class_index({**row, "race": "Martian"}, "race")
    assert celeba_class_index({"Male": 1, "Young": -1}, "gender") == 0
    assert celeba_class_index({"Male": -1, "Young": -1}, "age") == 1
    with pytest.raises(ValueError, match="CelebA has no labels for attribute 'race'"):
        celeba_class_index({"Male": 1}, "race")


def test_class_count_mismatch_is_refused():
    with pytest.raises(ValueError, match="has 3 classes .* attribute 'gender' has 2"):
        check_class_names(["a", "b", "c"], "gender")
    with pytest.raises(ValueError, match="same names in the same order"):
        check_class_names(["female", "male"], "gender")
    check_class_names(["male", "female"], "gender")


# ---- detection -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["haar", "dlib"])
def test_detectors_find_the_astronaut(astronaut, detectors, name):
    faces = find_faces(astronaut, detectors[name])
    assert faces.found.tolist() == [True]
    box = faces.detections[0].tolist()
    assert iou(box, ASTRONAUT_FACE) > 0.6, box
    # the crop box is square, on the same centre, (1 + expand) x the longer side
    crop = faces.boxes[0].tolist()
    side = (1 + detectors[name].expand) * max(box[2] - box[0], box[3] - box[1])
    assert crop[2] - crop[0] == pytest.approx(side) and crop[3] - crop[1] == pytest.approx(side)
    assert (crop[0] + crop[2]) / 2 == pytest.approx((box[0] + box[2]) / 2)


@pytest.mark.parametrize("name", ["haar", "dlib"])
def test_no_face_is_flagged_not_a_crash(astronaut, detectors, name):
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 512, 512, generator=gen)
    blank = torch.full((1, 3, 512, 512), 0.5)
    images = torch.cat([noise, astronaut, blank])
    crops, faces = crop_largest_faces(images, detectors[name], size=64)
    assert faces.found.tolist() == [False, True, False]
    assert faces.no_face_fraction == pytest.approx(2 / 3)
    assert torch.isnan(faces.detections[0]).all() and torch.isnan(faces.scores[2])
    assert faces.boxes[0].tolist() == [0.0, 0.0, 512.0, 512.0]  # placeholder, masked by `found`
    assert crops.shape == (3, 3, 64, 64) and torch.isfinite(crops).all()


class _FixedDetector:
    name, expand = "fixed", 0.0

    def __init__(self, faces):
        self.faces = faces

    def detect(self, images):
        return [list(self.faces) for _ in range(images.shape[0])]


def test_largest_face_is_chosen_by_visible_area():
    faces = [FaceDetection((0, 0, 10, 10), 0.9), FaceDetection((20, 20, 40, 40), 0.5),
             FaceDetection((-50, -50, 12, 12), 0.99)]  # 62 x 62, but only 12 x 12 inside the image
    out = find_faces(torch.zeros(1, 3, 64, 64), _FixedDetector(faces))
    assert out.detections[0].tolist() == [20, 20, 40, 40] and out.counts.tolist() == [3]
    out = find_faces(torch.zeros(1, 3, 64, 64), _FixedDetector(faces), min_score=0.95)
    assert out.detections[0].tolist() == [-50, -50, 12, 12]


def test_bad_detector_arguments():
    with pytest.raises(ValueError, match="unknown face detector 'yolo'"):
        make_face_detector("yolo")
    with pytest.raises(ValueError, match="expand must be"):
        DlibFaceDetector(expand=-2)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        find_faces(torch.zeros(3, 8, 8), _FixedDetector([]))


# ---- the differentiable crop -----------------------------------------------------------------------------------

def test_crop_equals_slice_and_resize_for_integer_boxes():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 120, 140, generator=gen, dtype=torch.float64)
    boxes = [[10, 20, 106, 116], [30, 5, 126, 101]]  # 96 x 96: sampled at pixel centres, then antialiased
    crops = crop_faces(images, boxes, 32)
    for b, (x0, y0, x1, y1) in enumerate(boxes):
        ref = F.interpolate(images[b:b + 1, :, y0:y1, x0:x1], size=(32, 32), mode="bilinear", antialias=True,
                            align_corners=False)
        torch.testing.assert_close(crops[b:b + 1], ref, rtol=0, atol=1e-12)
    # 2x downscale without antialiasing is bilinear at the centre of each 2 x 2 block: a 2 x 2 average
    crop = crop_faces(images[:1], [[10, 20, 74, 84]], 32, antialias=False)
    torch.testing.assert_close(crop, F.avg_pool2d(images[:1, :, 20:84, 10:74], 2), rtol=0, atol=1e-12)
    # upscaling: bilinear resize of the slice, away from the edge rows (where the slice clamps but the crop sees
    # the true neighbouring pixels)
    crop = crop_faces(images[:1], [[10, 20, 26, 36]], 64)
    ref = F.interpolate(images[:1, :, 20:36, 10:26], size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(crop[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], rtol=0, atol=1e-12)


def test_crop_pads_outside_the_image_with_fill():
    images = torch.ones(1, 3, 20, 10, dtype=torch.float64)
    crop = crop_faces(images, [[-10, 0, 10, 20]], 20, fill=0.25, antialias=False)  # left half outside
    torch.testing.assert_close(crop[..., :, :10], torch.full((1, 3, 20, 10), 0.25, dtype=torch.float64))
    torch.testing.assert_close(crop[..., :, 10:], torch.ones(1, 3, 20, 10, dtype=torch.float64))


def test_rotated_frame_samples_the_rotated_square():
    images = torch.arange(3 * 8 * 8, dtype=torch.float64).reshape(1, 3, 8, 8)
    # a 90-degree turn: origin at the top-right corner, e_x pointing down, e_y pointing left
    frames = torch.tensor([[[8.0, 0.0], [0.0, 8.0], [-8.0, 0.0]]], dtype=torch.float64)
    crop = crop_frames(images, frames, 8)
    # output (row r, column c) samples x = 8 - (r + 1/2), y = c + 1/2: pixel (row c, column 7 - r)
    torch.testing.assert_close(crop, images.transpose(2, 3).flip(2), rtol=0, atol=1e-9)


def test_crop_gradient_reaches_only_the_box_pixels():
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(1, 3, 64, 64, generator=gen, dtype=torch.float64, requires_grad=True)
    box = (12, 8, 44, 40)
    crop = crop_faces(images, [box], 16)
    (crop * torch.rand(crop.shape, generator=gen, dtype=torch.float64)).sum().backward()
    grad = images.grad[0].abs().sum(0)
    inside = grad[box[1]:box[3], box[0]:box[2]]
    assert (inside > 0).all()
    outside = grad.clone()
    outside[box[1]:box[3], box[0]:box[2]] = 0
    assert outside.max() == 0  # float64 grid: sample points at pixel centres touch no neighbour


def test_crop_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x: crop_faces(x, [[1.3, 2.7, 9.1, 10.4]], 5), (images,))


def test_square_boxes_matches_the_official_expansion():
    # aDFT's expand_bbox with target ratio 1 on a 40 x 60 box, expand 0.5: side 90 on the same centre
    out = square_boxes([[10.0, 20.0, 50.0, 80.0]], 0.5)
    assert out.tolist() == [[-15.0, 5.0, 75.0, 95.0]]
