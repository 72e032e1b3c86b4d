"""The losses of theory/ document that a non-finite input gives a non-finite loss (issue 19): checked here for each,
so that the jobs' loop, which skips steps with non-finite gradients, sees every such step."""

from __future__ import annotations

import pytest
import torch

from theory.adft_loss import adft_loss
from theory.denoising import denoising_loss
from theory.popalign import diffusion_log_ratio, popalign_loss

BAD = [float("nan"), float("inf"), float("-inf")]


def _poison(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[min(1, x.numel() - 1)] = value
    return x


def _finite_loss_and_gradients(loss_of, inputs: dict) -> bool:
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    loss = loss_of(**leaves)
    loss.backward()
    return bool(torch.isfinite(loss)) and all(bool(torch.isfinite(v.grad).all()) for v in leaves.values()
                                              if v.grad is not None)


def _check(loss_of, inputs: dict) -> None:
    assert _finite_loss_and_gradients(loss_of, inputs)  # clean inputs: a finite loss
    for name in inputs:
        for value in BAD:
            assert not _finite_loss_and_gradients(loss_of, inputs | {name: _poison(inputs[name], value)}), \
                (name, value)


def test_denoising_loss_propagates_non_finite_inputs():
    g = torch.Generator().manual_seed(0)
    eps, pred = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(4, 3, 2, 2, generator=g,
                                                                                      dtype=torch.float64)
    _check(lambda eps, pred, weight: denoising_loss(eps, pred, weight),
           {"eps": eps, "pred": pred, "weight": torch.rand(4, generator=g, dtype=torch.float64) + 0.5})


@pytest.mark.parametrize("poisoned", ["eps", "eps_theta", "eps_ref", "weight"])
def test_diffusion_log_ratio_propagates_non_finite_inputs(poisoned):
    g = torch.Generator().manual_seed(1)
    inputs = {k: torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64) for k in ("eps", "eps_theta", "eps_ref")}
    inputs["weight"] = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    for value in BAD:
        r = diffusion_log_ratio(**(inputs | {poisoned: _poison(inputs[poisoned], value)}))
        assert not bool(torch.isfinite(r).all()), value


def test_popalign_loss_propagates_non_finite_log_ratios():
    g = torch.Generator().manual_seed(2)
    winners = torch.tensor([True, True, False, False])
    _check(lambda r: popalign_loss(r, winners, 10.0, 0.5), {"r": torch.randn(4, generator=g, dtype=torch.float64)})


def test_adft_loss_propagates_non_finite_inputs():
    g = torch.Generator().manual_seed(3)
    has_face = torch.tensor([True, False, True, True])

    def loss_of(align, semantics, weight, face):
        return adft_loss(align_on_faces=align, semantics=semantics, semantics_weight=weight, face=face,
                         has_face=has_face, lambda_face=0.5).total

    _check(loss_of, {"align": torch.tensor(0.3, dtype=torch.float64),
                     "semantics": torch.rand(4, generator=g, dtype=torch.float64),
                     "weight": torch.rand(4, generator=g, dtype=torch.float64) + 0.5,
                     "face": torch.rand(3, generator=g, dtype=torch.float64)})
