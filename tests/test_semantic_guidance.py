"""theory.semantic_guidance against a per-element brute-force re-implementation of SEGA eqs. (1)-(5), (8) in float64
(explicit sorting for the quantile), and its edge cases: no edit scale is plain CFG, threshold 0 keeps every entry,
the warm-up holds the edit back."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from theory.guidance import classifier_free_guidance
from theory.semantic_guidance import fair_diffusion_scales, semantic_guidance


def _quantile_by_sorting(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's / torch's default)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def _brute_force(u, c, edits, g, scales, lam, step, warmup):
    u, c = np.asarray(u, dtype=np.float64), np.asarray(c, dtype=np.float64)
    out = u + g * (c - u)  # eq. (1)
    if step < warmup:
        return out
    b_n, ch_n = u.shape[:2]
    for e, eps_e in enumerate(edits):
        eps_e = np.asarray(eps_e, dtype=np.float64)
        for b, ch in itertools.product(range(b_n), range(ch_n)):
            s = scales[e][b]
            direction, magnitude = np.sign(s), abs(s)  # eq. (4): the sign picks psi's direction
            psi = direction * (eps_e[b, ch] - u[b, ch])
            # eq. (5) on s_e * psi as the reference implementation thresholds it (same mask for s_e > 0)
            eta = _quantile_by_sorting([abs(magnitude * v) for v in psi.ravel()], lam)
            for idx in np.ndindex(psi.shape):
                if abs(magnitude * psi[idx]) >= eta:
                    out[(b, ch) + idx] += magnitude * psi[idx]  # eqs. (2), (3), (8) with g_i = 1
    return out


def _predictions(seed, shape=(3, 2, 5, 4), n_edits=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u, c = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    return u, c, [torch.randn(shape, generator=g, dtype=dtype) for _ in range(n_edits)]


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("per_image", [False, True])
def test_matches_a_per_element_brute_force(lam, per_image):
    u, c, edits = _predictions(1)
    scales = [[4.0, -4.0, 2.5], [-1.5, 3.0, 0.0]] if per_image else [4.0, -2.0]
    got = semantic_guidance(u, c, edits, 7.5, scales, threshold=lam, step=5, warmup_steps=3)
    full = scales if per_image else [[s] * 3 for s in scales]
    want = _brute_force(u.numpy(), c.numpy(), [e.numpy() for e in edits], 7.5, full, lam, 5, 3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_no_edit_scale_and_the_warmup_give_plain_cfg():
    u, c, edits = _predictions(2)
    cfg = classifier_free_guidance(u, c, 7.5)
    assert torch.equal(semantic_guidance(u, c, edits, 7.5, [0.0, 0.0], threshold=0.9), cfg)
    assert torch.equal(semantic_guidance(u, c, edits, 7.5, [4.0, -4.0], threshold=0.9, step=3, warmup_steps=4), cfg)
    assert not torch.equal(semantic_guidance(u, c, edits, 7.5, [4.0, -4.0], threshold=0.9, step=4,
                                             warmup_steps=4), cfg)


def test_threshold_zero_keeps_every_entry_and_a_high_one_few():
    u, c, edits = _predictions(3)
    got = semantic_guidance(u, c, edits, 3.0, [2.0, -1.0], threshold=0.0)
    want = classifier_free_guidance(u, c, 3.0) + 2.0 * (edits[0] - u) - 1.0 * (edits[1] - u)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    term = semantic_guidance(u, c, edits[:1], 3.0, [2.0], threshold=0.9) - classifier_free_guidance(u, c, 3.0)
    kept = (term != 0).flatten(2).float().mean(dim=2)  # 20 positions per channel: the top 10 % is 2 of them
    assert torch.all(kept == 0.1)


def test_float32_input_is_thresholded_like_float64():
    u, c, edits = _predictions(4, dtype=torch.float32)
    got = semantic_guidance(u, c, edits, 7.5, [4.0, -4.0], threshold=0.9)
    want = _brute_force(u.numpy(), c.numpy(), [e.numpy() for e in edits], 7.5, [[4.0] * 3, [-4.0] * 3], 0.9, 0, 0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw, message", [
    (dict(threshold=1.0), r"threshold \(lambda of SEGA eq. 5\) must lie in \[0, 1\)"),
    (dict(threshold=-0.1), "threshold"),
    (dict(edit_scales=[1.0]), r"edit_scales must be finite, of shape \(E,\) or \(E, B\)"),
    (dict(edit_scales=[1.0, float("nan")]), "edit_scales must be finite"),
    (dict(warmup_steps=-1), "step and warmup_steps must be integers >= 0"),
])
def test_bad_input_is_one_clear_error(kw, message):
    u, c, edits = _predictions(5)
    args = {**dict(edit_scales=[1.0, -1.0], threshold=0.9, warmup_steps=0), **kw}
    with pytest.raises(ValueError, match=message):
        semantic_guidance(u, c, edits, 7.5, args.pop("edit_scales"), **args)


def test_fair_diffusion_scales_push_toward_the_request_and_away_from_the_rest():
    assert fair_diffusion_scales([0, 1, 1], 2, 4.0) == [[4.0, -4.0, -4.0], [-4.0, 4.0, 4.0]]
    assert fair_diffusion_scales([2], 3, 4.0) == [[-2.0], [-2.0], [4.0]]
    with pytest.raises(ValueError, match=r"requested classes must lie in \[0, 2\)"):
        fair_diffusion_scales([2], 2, 4.0)
