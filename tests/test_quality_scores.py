"""Quality scores (issue 20): FID and KID from torchmetrics against theory.quality_scores on the same features, and
PickScore of a tiny CLIP loaded by path against the formula on the model's own embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scaleup.evaluation.quality import PickScorer, fid_kid, main
from theory.quality_scores import clip_score_unclamped, frechet_distance, hps_v2, kernel_distance, pick_score


class _TinyFeatures(torch.nn.Module):
    """A fixed random conv net: images -> 6 features (a stand-in for Inception-v3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, images):
        return torch.tanh(self.conv(images)).mean(dim=(2, 3))


def make_features():
    return _TinyFeatures()


def _images(seed, n, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 0.8 + shift).clamp(0, 1)


def test_fid_and_kid_from_torchmetrics_equal_the_formulas_on_the_same_features():
    generated, reference = _images(1, 30, shift=0.15), _images(2, 30)
    features = _TinyFeatures()
    with torch.no_grad():
        f_gen, f_ref = features(generated).double().numpy(), features(reference).double().numpy()
    out = fid_kid(generated, reference, features, kid_subsets=1, kid_subset_size=30)
    assert out["fid"] == pytest.approx(frechet_distance(f_ref, f_gen), rel=1e-5, abs=1e-9)
    # one subset of all 30 images of each set: the drawn order does not matter to the unbiased MMD^2
    assert out["kid_mean"] == pytest.approx(kernel_distance(f_ref, f_gen), rel=1e-5, abs=1e-9)
    assert out["fid"] > 1e-4 and out["kid_mean"] > 0  # the shift is seen
    same = fid_kid(reference, reference, features, kid_subsets=1, kid_subset_size=30)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["kid_mean"] == pytest.approx(
        kernel_distance(f_ref, f_ref), abs=1e-9)


def test_frechet_distance_of_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(20000, 2))
    b = rng.normal([1.0, -2.0], [2.0, 0.5], size=(20000, 2))
    # two diagonal Gaussians: |mu1 - mu2|^2 + sum (s1 - s2)^2
    expected = 1.0 + 4.0 + (1.0 - 2.0) ** 2 + (1.0 - 0.5) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)
    assert kernel_distance(a[:500], a[500:1000]) == pytest.approx(0.0, abs=0.05)


def test_clip_score_conventions_differ_only_for_negative_cosines():
    from theory.image_scores import clip_score_x100

    images = np.array([[1.0, 0.0], [1.0, 0.0]])
    texts = np.array([[1.0, 1.0], [-1.0, 0.2]])
    np.testing.assert_allclose(clip_score_unclamped(images, texts), [100 / np.sqrt(2), -100 / np.sqrt(1.04)])
    np.testing.assert_allclose(clip_score_x100(images, texts), [100 / np.sqrt(2), 0.0])


def test_hps_v2_is_the_unscaled_cosine_of_unnormalised_rows():
    """HPSv2 by hand: unit rows (however long the model's raw features), their dot product, no temperature."""
    images = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]])
    texts = np.array([[4.0, 3.0], [0.0, -5.0], [2.0, 2.0]])
    np.testing.assert_allclose(hps_v2(images, texts), [24 / 25, -1.0, 1.0], rtol=1e-15)


def test_pickscore_of_a_tiny_clip_loaded_by_path(tmp_path):
    from scaleup.models.tiny import tiny_clip_model

    model, processor = tiny_clip_model(0)
    model.save_pretrained(tmp_path / "pick")
    processor.save_pretrained(tmp_path / "pick")
    scorer = PickScorer(tmp_path / "pick")
    images, prompts = _images(3, 2), ["a photo of a doctor", "a photo of a nurse"]
    scores = scorer(images, prompts)
    with torch.no_grad():  # independently: the model's own embeddings and temperature
        pixels = scorer.processor(images=[np.asarray(i.permute(1, 2, 0) * 255, dtype=np.uint8) for i in images],
                                  return_tensors="pt")["pixel_values"]
        text = scorer.processor(text=prompts, return_tensors="pt", padding=True)
        i_rows = scorer.model.get_image_features(pixel_values=pixels)
        t_rows = scorer.model.get_text_features(**text)
        i_rows, t_rows = (getattr(r, "pooler_output", r).double() for r in (i_rows, t_rows))
        cos = torch.nn.functional.cosine_similarity(i_rows, t_rows).numpy()
    np.testing.assert_allclose(scores, scorer.model.logit_scale.exp().item() * cos, rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PickScorer(tmp_path)
    with pytest.raises(ValueError, match="logit_scale must be a finite number > 0"):
        pick_score(np.ones((1, 2)), np.ones((1, 2)), 0.0)


def test_the_command_line_on_folders(tmp_path, capsys):
    from PIL import Image

    for name, shift in (("gen", 0.2), ("ref", 0.0)):
        (tmp_path / name).mkdir()
        for i, image in enumerate(_images(4 if name == "gen" else 5, 6, shift)):
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / name / f"{i}.png")
    assert main(["--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"), "--features",
                 "test_quality_scores:make_features", "--size", "16"]) == 0
    assert '"implementation": "torchmetrics"' in capsys.readouterr().out
    assert main(["--generated", str(tmp_path / "gen"), "--features", "test_quality_scores:make_features"]) == 2
    assert "need both --reference and --features" in capsys.readouterr().err
    assert main(["--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"), "--features",
                 "inception:/no/weights.pth"]) == 2
    assert "does not exist" in capsys.readouterr().err
