"""CLIP-T / CLIP-I / DINO scores against a direct per-row computation."""

from __future__ import annotations

import numpy as np
import pytest

from theory.image_scores import clip_score_of_cosine, clip_score_x100, paired_cosine


def test_paired_cosine_matches_a_loop_and_broadcasts_one_text():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    loop = [float(a[i] @ b[i] / np.sqrt((a[i] @ a[i]) * (b[i] @ b[i]))) for i in range(7)]
    np.testing.assert_allclose(paired_cosine(a, b), loop, rtol=0, atol=1e-14)
    one = paired_cosine(a, b[:1])
    np.testing.assert_allclose(one, [float(a[i] @ b[0] / np.linalg.norm(a[i]) / np.linalg.norm(b[0])) for i in range(7)],
                               atol=1e-14)


def test_clip_score_is_100_times_the_clipped_cosine():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(clip_score_x100(a, b), [100.0, 0.0, 100 / np.sqrt(2)], atol=1e-12)
    assert clip_score_of_cosine(-0.3) == 0.0 and clip_score_of_cosine(0.25) == 25.0


@pytest.mark.parametrize("a, b, message", [(np.zeros((2, 3)), np.ones((2, 3)), "zero row"),
                                           (np.ones((2, 3)), np.ones((3, 3)), "same shape"),
                                           (np.ones(3), np.ones((1, 3)), "2-D"),
                                           (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN")])
def test_bad_embeddings_fail_clearly(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_cosine(a, b)
