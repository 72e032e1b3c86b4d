"""theory.dal_parts: the DAL split into parts equals the DAL of the whole batch, value and gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory.dal import dal_loss, dal_targets
from theory.dal_parts import dal_cross_entropy


def _logits(n, k, seed=0):
    return torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("k, target", [(2, [0.5, 0.5]), (4, [0.4, 0.3, 0.2, 0.1])])
def test_parts_add_up_to_dal_loss_value_and_gradient(k, target):
    n = 12
    logits = _logits(n, k).requires_grad_(True)
    whole = dal_loss(logits, target, 0.75, seed=5)
    (g_whole,) = torch.autograd.grad(whole, logits)
    probs = torch.softmax(logits.detach(), dim=1).numpy()
    t = dal_targets(probs, target, 0.75, seed=5)
    assert t.mask.any() and not t.mask.all()  # the threshold matters in this batch
    parts = [slice(0, 5), slice(5, 6), slice(6, 12)]
    total = sum(dal_cross_entropy(logits[s], t.y[s], t.mask[s], batch_size=n) for s in parts)
    (g_parts,) = torch.autograd.grad(total, logits)
    torch.testing.assert_close(total, whole, rtol=1e-14, atol=0)
    torch.testing.assert_close(g_parts, g_whole, rtol=1e-14, atol=1e-16)
    # independent: -log softmax written out, float64
    log_p = logits.detach() - torch.logsumexp(logits.detach(), dim=1, keepdim=True)
    manual = -sum(float(log_p[i, t.y[i]]) for i in range(n) if t.mask[i]) / n
    assert abs(float(total.detach()) - manual) < 1e-12


def test_unmasked_rows_may_carry_any_label_and_contribute_nothing():
    logits = _logits(3, 2).requires_grad_(True)
    value = dal_cross_entropy(logits, [-1, 1, 7], [False, True, False], batch_size=10)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.all(grad[[0, 2]] == 0) and torch.any(grad[1] != 0)
    log_p = torch.log_softmax(logits.detach(), dim=1)
    assert abs(float(value.detach()) + float(log_p[1, 1]) / 10) < 1e-14


def test_empty_part_is_zero_and_keeps_the_graph():
    logits = torch.zeros(0, 3, requires_grad=True)
    value = dal_cross_entropy(logits, np.zeros(0, dtype=int), np.zeros(0, dtype=bool), batch_size=4)
    assert float(value.detach()) == 0.0 and value.requires_grad


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=2), "batch_size must be an integer >= 3"),
    (dict(y=[0, 1]), "one entry per row"),
    (dict(mask=[1, 0, 1]), "mask must be boolean"),
    (dict(y=[0.0, 1.0, 0.0]), "integer class indices"),
    (dict(y=[0, 5, 0]), "must lie in 0..1"),
])
def test_bad_input_is_one_clear_error(kw, message):
    args = dict(y=[0, 1, 0], mask=[True, True, False], batch_size=4) | kw
    with pytest.raises(ValueError, match=message):
        dal_cross_entropy(_logits(3, 2), args["y"], args["mask"], batch_size=args["batch_size"])
