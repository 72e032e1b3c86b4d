"""The DAL of a batch whose images are processed in parts (seed 000, eq. 6, [0105]-[0106]).

The OT targets are a property of the whole batch of N images (:func:`theory.dal.dal_targets` on all N probability
vectors), but a finetuning step on Stable Diffusion cannot hold the graph of N images at once: it forms the targets
from the whole batch first, then differentiates the loss part by part (sub-batches of one process, and the parts
held by other processes). Eq. 6 is a sum over images divided by N, so it splits exactly:

    L_align = (1/N) sum_i 1[c_i >= C] CE(h(x_i), y_i) = sum_parts (1/N) sum_{i in part} 1[c_i >= C] CE(h(x_i), y_i),

and the gradient of the whole is the sum of the parts' gradients. :func:`dal_cross_entropy` is one part's term with
the targets given; with all N images and the targets of :func:`theory.dal.dal_targets` it equals
:func:`theory.dal.dal_loss` (tests/test_dal_parts.py).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from theory.validation import check_count


def dal_cross_entropy(logits: torch.Tensor, y: ArrayLike, mask: ArrayLike, *, batch_size: int) -> torch.Tensor:
    """(1 / batch_size) sum_i mask_i CE(logits_i, y_i): the images ``logits`` of a batch of ``batch_size``'s share of
    L_align (seed 000, eq. 6), with targets formed beforehand from the whole batch.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, K)
        Classifier logits h(x_i) of the n images of this part (n may be 0).
    y : array-like of shape (n,)
        Target classes y_i = argmax_k q_ik of these images ([0106]); entries where ``mask`` is False are ignored and
        may be any integer (e.g. -1 for "no target").
    mask : array-like of shape (n,), bool
        1[c_i >= C], the images whose cross-entropy enters the loss.
    batch_size : int
        N, the size of the whole batch the targets were formed on (eq. 6 divides by N, not by n or by the number
        of confident images).

    Returns
    -------
    torch.Tensor
        Scalar with the dtype and device of ``logits``; differentiable in ``logits``.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a floating-point torch.Tensor of shape (n, K); got {shape}")
    n, k = logits.shape
    batch_size = check_count(batch_size, "batch_size", minimum=max(n, 1))
    y_arr = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    mask_arr = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if y_arr.shape != (n,) or mask_arr.shape != (n,):
        raise ValueError(f"y and mask must have one entry per row of logits, shape ({n},); got {y_arr.shape} and "
                         f"{mask_arr.shape}")
    if mask_arr.dtype != np.bool_:
        raise ValueError(f"mask must be boolean (1[c_i >= C]); got dtype {mask_arr.dtype}")
    if not np.issubdtype(y_arr.dtype, np.integer):
        raise ValueError(f"y must hold integer class indices; got dtype {y_arr.dtype}")
    if mask_arr.any() and (y_arr[mask_arr].min() < 0 or y_arr[mask_arr].max() >= k):
        raise ValueError(f"y must lie in 0..{k - 1} wherever mask is True; got {y_arr[mask_arr].tolist()}")
    if n == 0:
        return logits.sum() * 0.0  # keeps the graph and the dtype; no image, no term
    labels = torch.as_tensor(np.where(mask_arr, y_arr, 0), dtype=torch.long, device=logits.device)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    weight = torch.as_tensor(mask_arr, dtype=ce.dtype, device=ce.device)
    return (ce * weight).sum() / batch_size
