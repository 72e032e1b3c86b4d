"""Semantic guidance (SEGA, Brack et al. 2023), the inference-time edit Fair Diffusion (Friedrich et al. 2023) uses to
steer an attribute: classifier-free guidance plus, per edit prompt e, a thresholded and scaled direction.

With eps_u = eps(z_t), eps_c = eps(z_t, c_p) and eps_e = eps(z_t, c_e) (SEGA Sect. 3):

- eq. (1), classifier-free guidance: eps_bar = eps_u + s_g (eps_c - eps_u);
- eq. (2), with semantic guidance: eps_bar = eps_u + s_g (eps_c - eps_u) + gamma(z_t, c_e);
- eq. (3), the edit term: gamma(z_t, c_e) = mu(psi; s_e, lambda) psi(z_t, c_e);
- eq. (4), its direction: psi(z_t, c_e) = +(eps_e - eps_u) toward the concept, -(eps_e - eps_u) away from it;
- eq. (5), the threshold mask: mu = s_e where |psi| >= eta_lambda(|psi|), 0 elsewhere, eta_lambda the lambda-th
  quantile: only the (1 - lambda) share of largest-magnitude entries moves the sample (lambda = 0.9 keeps 10 %);
- warm-up delta: gamma = 0 for the first delta steps (the composition is set early, the edit applied after);
- eqs. (6)-(7), momentum gamma_t += s_m nu_t, nu_{t+1} = beta_m nu_t + (1 - beta_m) gamma_t: NOT implemented here
  (s_m = 0); it accelerates edits over steps and would make the guidance depend on the chain's history;
- eq. (8), several concepts: gamma_hat = sum_i g_i gamma^i, with every weight g_i = 1 (the reference
  implementation's default when every concept has left its warm-up).

The quantile eta_lambda is taken over the spatial positions of each latent channel of each image separately, as in
the reference implementation (diffusers' ``SemanticStableDiffusionPipeline``: ``torch.quantile(|psi|.flatten(2),
lambda, dim=2)``, linear interpolation between order statistics). Equation numbers are those of the SEGA paper
(arXiv:2301.12247), Sect. 3.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from theory.guidance import classifier_free_guidance


def semantic_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, eps_edits: Sequence[torch.Tensor],
                      guidance_scale: float, edit_scales, *, threshold: float = 0.9, step: int = 0,
                      warmup_steps: int = 0) -> torch.Tensor:
    """eps_u + s_g (eps_c - eps_u) + sum_e gamma(z_t, c_e), SEGA eqs. (1)-(5) and (8) without momentum.

    Parameters
    ----------
    eps_uncond, eps_cond : Tensor
        Noise predictions of the empty prompt and of the prompt, shape (B, C, *spatial) with at least one spatial
        dimension.
    eps_edits : sequence of Tensor
        eps(z_t, c_e) of each edit prompt e, each of the same shape (one edit prompt per image may differ).
    guidance_scale : float
        s_g of eq. (1).
    edit_scales : array-like, shape (E,) or (E, B)
        Signed edit scales: +s_e guides toward edit e (eq. 4, first case), -s_e away from it (second case); a row
        of shape (B,) sets the direction per image (Fair Diffusion: toward the class drawn for that image, away
        from the other). Since s_e >= 0 in eq. (5), the sign is the direction and the magnitude the scale.
    threshold : float
        lambda in [0, 1) of eq. (5): the share of entries of each (image, channel) that are masked out; 0 keeps all.
    step, warmup_steps : int
        The sampler's step index (0-based) and delta: no edit term while ``step < warmup_steps``.
    """
    if eps_uncond.shape != eps_cond.shape or eps_uncond.ndim < 3:
        raise ValueError("eps_uncond and eps_cond must have one shape (B, C, *spatial) with a spatial dimension; got "
                         f"{tuple(eps_uncond.shape)} and {tuple(eps_cond.shape)}")
    edits = list(eps_edits)
    if any(e.shape != eps_uncond.shape for e in edits):
        raise ValueError(f"every edit prediction must have the shape of eps_uncond {tuple(eps_uncond.shape)}; got "
                         f"{[tuple(e.shape) for e in edits]}")
    batch = eps_uncond.shape[0]
    scales = torch.as_tensor(edit_scales, dtype=torch.float64)
    if scales.ndim == 1:
        scales = scales[:, None].expand(-1, batch)
    if scales.shape != (len(edits), batch) or not torch.isfinite(scales).all():
        raise ValueError(f"edit_scales must be finite, of shape (E,) or (E, B) = ({len(edits)},) or ({len(edits)}, "
                         f"{batch}); got {tuple(torch.as_tensor(edit_scales).shape)}")
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
        raise ValueError(f"threshold (lambda of SEGA eq. 5) must lie in [0, 1); got {threshold!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (step, warmup_steps)):
        raise ValueError(f"step and warmup_steps must be integers >= 0; got {step!r} and {warmup_steps!r}")
    guided = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
    if step < warmup_steps or not edits:
        return guided
    scales = scales.to(device=eps_uncond.device, dtype=eps_uncond.dtype)
    view = (batch,) + (1,) * (eps_uncond.ndim - 1)
    for e, eps_e in enumerate(edits):
        psi = scales[e].reshape(view) * (eps_e - eps_uncond)  # signed and scaled: the mask of eq. (5) is unchanged
        magnitude = psi.abs().flatten(2)
        # torch.quantile wants float32/64; half-precision predictions are thresholded in float32
        eta = torch.quantile(magnitude.float() if magnitude.dtype not in (torch.float32, torch.float64) else magnitude,
                             threshold, dim=2).to(psi.dtype)
        keep = psi.abs() >= eta.reshape(eta.shape + (1,) * (psi.ndim - 2))
        guided = guided + torch.where(keep, psi, torch.zeros_like(psi))
    return guided


def fair_diffusion_scales(requested: Sequence[int], n_classes: int, scale: float) -> list[list[float]]:
    """Signed edit scales (K, B) for one edit prompt per class: +s_e toward each image's requested class, and
    -s_e / (K - 1) away from each other class (Fair Diffusion's +"female person" -"male person" at K = 2; for more
    classes the away scale is split so the total push away equals the push toward)."""
    if not (isinstance(n_classes, int) and n_classes >= 2):
        raise ValueError(f"n_classes must be an integer >= 2; got {n_classes!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale (s_e of SEGA eq. 5) must be a finite number >= 0; got {scale!r}")
    if any(not 0 <= int(r) < n_classes for r in requested):
        raise ValueError(f"requested classes must lie in [0, {n_classes}); got {list(requested)}")
    away = -scale / (n_classes - 1)
    return [[scale if int(r) == k else away for r in requested] for k in range(n_classes)]
