"""The aDFT objective of seed 000 [0107]-[0109] (theory.adft_loss) against direct loop computations, in float64."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from theory.adft_loss import (
    PRESETS,
    ImageWeights,
    adft_loss,
    adft_preset,
    cosine_distance,
    dynamic_image_weights,
    face_realism_distance,
    face_region_gradient,
    image_semantics_distance,
)
from theory.dal import dal_loss, dal_targets


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_image_semantics_distance_against_a_loop():
    gen = torch.Generator().manual_seed(0)
    clip_x, clip_o, dino_x, dino_o = _randn(gen, 5, 7), _randn(gen, 5, 7), _randn(gen, 5, 3), _randn(gen, 5, 3)
    expected = [(1 - _cos(clip_x[i].numpy(), clip_o[i].numpy())) + (1 - _cos(dino_x[i].numpy(), dino_o[i].numpy()))
                for i in range(5)]
    np.testing.assert_allclose(image_semantics_distance(clip_x, clip_o, dino_x, dino_o).numpy(), expected, rtol=0,
                               atol=1e-14)
    # identical images: zero; opposite embeddings: 2 per model
    assert float(image_semantics_distance(clip_x, clip_x, dino_x, dino_x).abs().max()) < 1e-14
    np.testing.assert_allclose(image_semantics_distance(clip_x, -clip_x, dino_x, -dino_x).numpy(), 4.0, atol=1e-14)


def test_face_realism_distance_is_one_minus_the_closest_external_face():
    gen = torch.Generator().manual_seed(1)
    faces, external = _randn(gen, 4, 6), _randn(gen, 9, 6)
    expected = [1 - max(_cos(faces[i].numpy(), external[f].numpy()) for f in range(9)) for i in range(4)]
    np.testing.assert_allclose(face_realism_distance(faces, external).numpy(), expected, rtol=0, atol=1e-14)
    # a generated face equal (up to scale) to an external face is at distance 0
    assert abs(float(face_realism_distance(3.0 * external[2:3], external)[0])) < 1e-14
    assert face_realism_distance(faces[:0], external).shape == (0,)


def _weights_by_rule(has_face, target, original, confident, per_attribute):
    """[0109] read literally, one image and one attribute at a time (module docstring of theory.adft_loss)."""
    out = []
    for i in range(len(has_face)):
        outside, face = [], []
        for a, w in enumerate(per_attribute):
            agrees = bool(has_face[i]) and original[i][a] >= 0 and target[i][a] == original[i][a]
            if confident is not None:
                agrees = agrees and bool(confident[i][a])
            if not has_face[i] or agrees:
                outside.append(w.agree)
                face.append(w.agree)
            else:
                outside.append(w.outside_face)
                face.append(w.face)
        out.append((min(outside), min(face)))
    return np.array(out)


@pytest.mark.parametrize("preset", ["gender", "race", "gender-race"])
@pytest.mark.parametrize("use_confidence", [False, True])
def test_dynamic_weights_against_the_rule(preset, use_confidence):
    rng = np.random.default_rng(2)
    settings = adft_preset(preset).attributes
    n = 40
    has_face = rng.random(n) < 0.8
    target = np.stack([rng.integers(0, s.n_classes, n) for s in settings], axis=1)
    original = np.stack([rng.integers(-1, s.n_classes, n) for s in settings], axis=1)
    original[:5] = target[:5]  # make sure some agree
    confident = rng.random((n, len(settings))) < 0.7 if use_confidence else None
    got = dynamic_image_weights(torch.as_tensor(has_face), torch.as_tensor(target), torch.as_tensor(original),
                                adft_preset(preset).image_weights, dtype=torch.float64,
                                confident=None if confident is None else torch.as_tensor(confident))
    expected = _weights_by_rule(has_face, target, original, confident, [s.weights for s in settings])
    np.testing.assert_array_equal(np.stack([got.outside_face.numpy(), got.face.numpy()], axis=1), expected)


def test_images_without_a_face_get_the_agree_weight_and_no_face_term():
    w = ImageWeights(8.0, 1.6, 0.32)
    got = dynamic_image_weights(torch.tensor([False, True, True]), torch.tensor([1, 1, 0]), torch.tensor([0, 1, 1]), w,
                                dtype=torch.float64)
    assert got.outside_face.tolist() == [8.0, 8.0, 1.6]
    assert got.face.tolist() == [8.0, 8.0, 0.32]
    # all images faceless: L = lambda_img,1 L_img alone, whatever the (absent) DAL
    d = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    none = torch.zeros(3, dtype=torch.bool)
    terms = adft_loss(align_on_faces=None, semantics=d, semantics_weight=torch.full((3,), 8.0, dtype=torch.float64),
                      face=torch.zeros(0, dtype=torch.float64), has_face=none, lambda_face=1.0)
    assert float(terms.total) == pytest.approx(8.0 * 0.6 / 3, abs=1e-15)
    assert float(terms.align) == 0.0 and float(terms.face) == 0.0


def test_total_loss_against_a_direct_computation():
    """L = L_align + lambda_img L_img + lambda_face L_face over a batch of N = 9 with 6 faces, every term by hand."""
    gen = torch.Generator().manual_seed(3)
    preset = adft_preset("gender")
    n = 9
    has_face = torch.tensor([True, True, False, True, True, False, True, True, False])
    faces = has_face.nonzero().flatten()
    logits = _randn(gen, 6, 2)
    clip_x, clip_o, dino_x, dino_o = _randn(gen, n, 8), _randn(gen, n, 8), _randn(gen, n, 4), _randn(gen, n, 4)
    face_emb, external = _randn(gen, 6, 5), _randn(gen, 11, 5)
    original = torch.tensor([0, 1, -1, 1, 0, 0, 1, -1, 1])
    y, _, mask = dal_targets(torch.softmax(logits, 1).numpy(), [0.5, 0.5], preset.threshold)
    target = torch.full((n,), -1, dtype=torch.int64)
    target[faces] = torch.as_tensor(y)
    weights = dynamic_image_weights(has_face, target, original, preset.image_weights, dtype=torch.float64)
    terms = adft_loss(align_on_faces=dal_loss(logits, [0.5, 0.5], preset.threshold),
                      semantics=image_semantics_distance(clip_x, clip_o, dino_x, dino_o),
                      semantics_weight=weights.outside_face, face=face_realism_distance(face_emb, external),
                      has_face=has_face, lambda_face=preset.lambda_face)

    lx = logits.numpy()
    ce = np.log(np.exp(lx).sum(1)) - lx[np.arange(6), y]
    align = float((ce * mask).sum()) / n  # eq. 6 over the whole batch: faceless images count in N
    lam = [8.0 if (not bool(has_face[i]) or int(target[i]) == int(original[i])) else 1.6 for i in range(n)]
    d = [(1 - _cos(clip_x[i].numpy(), clip_o[i].numpy())) + (1 - _cos(dino_x[i].numpy(), dino_o[i].numpy()))
         for i in range(n)]
    semantics = sum(lam[i] * d[i] for i in range(n)) / n
    face = sum(1 - max(_cos(face_emb[j].numpy(), external[f].numpy()) for f in range(11)) for j in range(6)) / n
    for got, want in ((terms.align, align), (terms.semantics, semantics), (terms.face, face),
                      (terms.total, align + semantics + 1.0 * face)):
        assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_region_distances_sum_over_regions():
    d = torch.tensor([[0.1, 0.4], [0.2, 0.3]], dtype=torch.float64)
    w = torch.tensor([[1.6, 0.32], [8.0, 8.0]], dtype=torch.float64)
    terms = adft_loss(align_on_faces=torch.tensor(0.0, dtype=torch.float64), semantics=d, semantics_weight=w,
                      face=torch.zeros(2, dtype=torch.float64), has_face=torch.ones(2, dtype=torch.bool), lambda_face=0.1)
    assert float(terms.semantics) == pytest.approx((0.16 + 0.128 + 1.6 + 2.4) / 2, rel=1e-14)


def test_gradients_by_gradcheck():
    gen = torch.Generator().manual_seed(4)
    clip_x, clip_o, dino_x, dino_o = (_randn(gen, 4, 5).requires_grad_() for _ in range(4))
    assert torch.autograd.gradcheck(image_semantics_distance, (clip_x, clip_o, dino_x, dino_o))
    faces = _randn(gen, 3, 6).requires_grad_()
    external = _randn(gen, 8, 6)
    assert torch.autograd.gradcheck(lambda f: face_realism_distance(f, external), (faces,))

    has_face = torch.tensor([True, False, True, True])
    weights = dynamic_image_weights(has_face, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, -1]),
                                    ImageWeights(8.0, 1.6, 0.32), dtype=torch.float64)
    logits = _randn(gen, 3, 2).requires_grad_()

    def total(clip_x, dino_x, faces, logits):
        return adft_loss(align_on_faces=dal_loss(logits, [0.5, 0.5], 0.0),
                         semantics=image_semantics_distance(clip_x, clip_o.detach(), dino_x, dino_o.detach()),
                         semantics_weight=weights.outside_face, face=face_realism_distance(faces, external),
                         has_face=has_face, lambda_face=0.1).total

    assert torch.autograd.gradcheck(total, (clip_x, dino_x, faces, logits))


def test_face_region_gradient_scales_the_face_pixels_only():
    """Forward: the images themselves. Backward: lambda_img,3 on the face pixels and lambda_img,2 elsewhere when the
    term is weighted lambda_img,2 and the face scale is lambda_img,3 / lambda_img,2 ([0109])."""
    gen = torch.Generator().manual_seed(5)
    images = _randn(gen, 3, 2, 4, 4).requires_grad_()
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    mask[2] = False  # no face region found in image 2
    weights = dynamic_image_weights(torch.tensor([True, True, False]), torch.tensor([1, 0, 0]), torch.tensor([1, 1, 0]),
                                    ImageWeights(8.0, 1.6, 0.32), dtype=torch.float64)
    projection = _randn(gen, 32, 6)  # a stand-in image embedding (CLIP/DINO): linear, so d is smooth
    originals = _randn(gen, 3, 6)

    def distance(x):
        return cosine_distance(x.reshape(3, -1) @ projection, originals)

    scaled = face_region_gradient(images, mask, weights.face_gradient_scale)
    assert torch.equal(scaled, images)
    (grad_scaled,) = torch.autograd.grad((weights.outside_face * distance(scaled)).sum(), images)
    (grad_plain,) = torch.autograd.grad(distance(images).sum(), images)
    region = torch.where(mask[:, None], weights.face[:, None, None, None], weights.outside_face[:, None, None, None])
    torch.testing.assert_close(grad_scaled, region * grad_plain, rtol=1e-13, atol=1e-15)
    assert weights.outside_face.tolist() == [8.0, 1.6, 8.0] and weights.face.tolist() == [8.0, 0.32, 8.0]


def test_presets_are_the_numbers_of_the_seed():
    gender, race, joint = adft_preset("gender"), adft_preset("race"), adft_preset("gender-race")
    # [0121]: lambda_face = 1, lambda_img,1 = 8, lambda_img,2 = 0.2 x 8, lambda_img,3 = 0.2 x lambda_img,2, N = 24, C = 0.8
    assert (gender.lambda_face, gender.batch_size, gender.threshold, gender.iterations) == (1.0, 24, 0.8, 10_000)
    w = gender.image_weights[0]
    assert (w.agree, w.outside_face, w.face) == pytest.approx((8.0, 1.6, 0.32))
    # race: lambda_face = 0.1, lambda_img,1 = 6, lambda_img,2 = 0.6 x 6, lambda_img,3 = 0.3 x lambda_img,2, N = 32
    assert (race.lambda_face, race.batch_size, race.threshold, race.iterations) == (0.1, 32, 0.8, 12_000)
    w = race.image_weights[0]
    assert (w.agree, w.outside_face, w.face) == pytest.approx((6.0, 3.6, 1.08))
    # [0123]: lambda_face = 0.1, lambda_img,1 = 8; gender 0.2 / 0.2, race 0.6 / 0.3; N = 32, C = 0.6, 14k iterations
    assert (joint.lambda_face, joint.batch_size, joint.threshold, joint.iterations) == (0.1, 32, 0.6, 14_000)
    g, r = joint.image_weights
    assert (g.agree, g.outside_face, g.face) == pytest.approx((8.0, 1.6, 0.32))
    assert (r.agree, r.outside_face, r.face) == pytest.approx((8.0, 4.8, 1.44))
    assert [a.n_classes for a in joint.attributes] == [2, 4] and joint.attributes[1].target == (0.25,) * 4
    assert {p.learning_rate for p in PRESETS.values()} == {5e-5}
    with pytest.raises(dataclasses.FrozenInstanceError):
        gender.lambda_face = 2.0
    with pytest.raises(ValueError, match=r"unknown aDFT preset 'age'; expected one of \['gender', 'gender-race', 'race'\]"):
        adft_preset("age")


F64 = torch.float64
GOOD = dict(align_on_faces=torch.tensor(0.5, dtype=F64), semantics=torch.ones(3, dtype=F64),
            semantics_weight=torch.ones(3, dtype=F64), face=torch.ones(2, dtype=F64),
            has_face=torch.tensor([True, False, True]), lambda_face=0.1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cosine_distance(torch.ones(3, 4), torch.ones(3, 5)), "same shape"),
        (lambda: cosine_distance(torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4)), "floating-point"),
        (lambda: cosine_distance(np.ones((3, 4)), torch.ones(3, 4)), "x must be a floating-point tensor"),
        (lambda: image_semantics_distance(torch.ones(3, 4), torch.ones(3, 4), torch.ones(2, 4), torch.ones(2, 4)),
         "same N images"),
        (lambda: face_realism_distance(torch.ones(2, 4), torch.ones(5, 3)), "same embedding size"),
        (lambda: face_realism_distance(torch.ones(2, 4), torch.ones(0, 4)), "external_faces"),
        (lambda: ImageWeights(8.0, -1.0, 0.1), "outside_face must be a finite number >= 0"),
        (lambda: ImageWeights(float("inf"), 1.0, 0.1), "agree must be a finite number >= 0"),
        (lambda: dynamic_image_weights(torch.tensor([1, 0]), torch.tensor([0, 1]), torch.tensor([0, 1]),
                                       ImageWeights(8, 1, 1)), "has_face must be a bool tensor"),
        (lambda: dynamic_image_weights(torch.tensor([True, False]), torch.tensor([0.0, 1.0]), torch.tensor([0, 1]),
                                       ImageWeights(8, 1, 1)), "target_class must be an integer tensor"),
        (lambda: dynamic_image_weights(torch.tensor([True, False]), torch.tensor([[0, 1], [1, 1]]),
                                       torch.tensor([[0, 1], [1, 1]]), ImageWeights(8, 1, 1)),
         r"one ImageWeights per attribute \(2"),
        (lambda: dynamic_image_weights(torch.tensor([True, False]), torch.tensor([0, 1]), torch.tensor([0, 1, 1]),
                                       ImageWeights(8, 1, 1)), "original_class must be an integer tensor"),
        (lambda: adft_loss(**(GOOD | {"face": torch.ones(3, dtype=F64)})), r"one entry per image with a face, shape \(2,\)"),
        (lambda: adft_loss(**(GOOD | {"semantics": torch.ones(4, dtype=F64)})), "semantics must be"),
        (lambda: adft_loss(**(GOOD | {"semantics_weight": torch.ones(2, dtype=F64)})), "semantics_weight must have"),
        (lambda: adft_loss(**(GOOD | {"lambda_face": -1.0})), "lambda_face must be a finite number >= 0"),
        (lambda: adft_loss(**(GOOD | {"align_on_faces": torch.ones(2)})), "align_on_faces must be a scalar"),
        (lambda: adft_loss(**(GOOD | {"has_face": torch.zeros(0, dtype=torch.bool), "semantics": torch.ones(0, dtype=F64),
                                      "semantics_weight": torch.ones(0, dtype=F64), "face": torch.ones(0, dtype=F64)})),
         "has_face is empty"),
        (lambda: face_region_gradient(torch.ones(2, 3, 4, 4), torch.ones(2, 5, 5, dtype=torch.bool), torch.ones(2)),
         "must broadcast"),
        (lambda: face_region_gradient(torch.ones(2, 3, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool), torch.ones(3)),
         r"face_scale must have one entry per image, shape \(2,\)"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
