"""The distributional alignment loss (DAL) of seed 000, [0105]-[0106], eq. (6), and its conditional variant ([0132]).

Given classifier probabilities p_i of N generated images and a target distribution D, the expected OT targets q_i
(:func:`theory.optimal_transport.expected_ot_targets`) give each image a target class and a confidence,

    y_i = argmax_k q_ik,   c_i = max_k q_ik,                                            (seed 000, [0106])

and the loss is the cross-entropy on the confident targets, averaged over all N images,

    L_align = (1/N) sum_i 1[c_i >= C] CE(h(x_i), y_i).                                  (seed 000, eq. 6)

The conditional DAL ([0132]: age aligned to 75/25 within every gender x race group) computes the targets within each
group of a conditioning label, so that the target distribution holds inside every group, and keeps the 1/N average
over the whole batch. Both the toy and the scale-up import :func:`dal_loss` from here.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike

from theory.optimal_transport import DEFAULT_MC_SAMPLES, Method, expected_ot_targets
from theory.dal_parts import dal_cross_entropy
from theory.validation import check_distribution, check_labels, check_probabilities, check_seed, check_threshold


class DALTargets(NamedTuple):
    """Targets of the DAL for one batch (seed 000, [0106])."""

    y: np.ndarray
    """(N,) int64 target class argmax_k q_ik (the lowest class index on an exact tie)."""
    c: np.ndarray
    """(N,) float64 confidence max_k q_ik."""
    mask: np.ndarray
    """(N,) bool, c >= C: the images whose cross-entropy enters the loss."""


def dal_targets(
    probs: ArrayLike,
    target: ArrayLike | Mapping[object, ArrayLike],
    threshold: float,
    *,
    groups: ArrayLike | None = None,
    method: Method = "auto",
    n_samples: int = DEFAULT_MC_SAMPLES,
    seed: int | np.random.Generator | None = None,
) -> DALTargets:
    """Targets y, confidences c and the mask c >= C of the DAL (seed 000, [0106]).

    Parameters
    ----------
    probs : array-like of shape (N, K)
        Classifier probabilities p_i = h(x_i) of the generated images.
    target : array-like of shape (K,), or mapping from group label to such an array
        Target distribution D. With ``groups``, a mapping gives each group its own target; a single array is used
        in every group.
    threshold : float in [0, 1]
        Confidence threshold C; seed 000 uses 0.8 for one attribute and 0.6 for gender x race ([0121]-[0123]).
    groups : array-like of shape (N,), optional
        Conditioning label of each image (e.g. the predicted gender x race class). The targets are then computed
        within each group separately: the conditional DAL of seed 000 [0132].
    method, n_samples, seed
        Passed to :func:`~theory.optimal_transport.expected_ot_targets`; ``seed=None`` gives targets determined by the
        inputs. :func:`~theory.optimal_transport.resolve_method` says which method ``"auto"`` runs.
    """
    p = check_probabilities(probs)
    c_min = check_threshold(threshold)
    seed = check_seed(seed)
    q = np.empty_like(p)
    if groups is None:
        if isinstance(target, Mapping):
            raise ValueError("target is a mapping of per-group targets but no groups were given; pass groups=...")
        q[:] = expected_ot_targets(p, target, method=method, n_samples=n_samples, seed=seed)
    else:
        labels = np.asarray(groups)
        codes = check_labels(labels, p.shape[0], name="groups")
        # One stream for all groups when seeded; unseeded, every group's Monte Carlo draws derive from its own inputs
        # (theory.optimal_transport.input_seed_sequence), so the targets are reproducible either way.
        rng = None if seed is None else np.random.default_rng(seed)
        for code in range(int(codes.max()) + 1):
            members = np.flatnonzero(codes == code)
            label = labels[members[0]].item()
            if isinstance(target, Mapping):
                if label not in target:
                    raise ValueError(f"target has no distribution for group {label!r}; groups present: "
                                     f"{sorted({g.item() for g in np.unique(labels)}, key=repr)}")
                group_target = target[label]
            else:
                group_target = target
            d = check_distribution(group_target, p.shape[1], name=f"target of group {label!r}")
            q[members] = expected_ot_targets(p[members], d, method=method, n_samples=n_samples, seed=rng)
    y = q.argmax(axis=1)
    c = q[np.arange(q.shape[0]), y]
    return DALTargets(y=y, c=c, mask=c >= c_min)


def dal_loss(
    logits: torch.Tensor,
    target: ArrayLike | Mapping[object, ArrayLike],
    threshold: float,
    *,
    groups: ArrayLike | None = None,
    method: Method = "auto",
    n_samples: int = DEFAULT_MC_SAMPLES,
    seed: int | np.random.Generator | None = None,
) -> torch.Tensor:
    """Distributional alignment loss L_align (seed 000, eq. 6) of a batch of classifier logits.

    The targets are computed from softmax(logits) without gradient (they are labels, as in the seed); the gradient
    flows through the cross-entropy only. Images below the confidence threshold contribute zero, and the sum is
    divided by the full batch size N, not by the number of confident images (eq. 6). See :func:`dal_targets` for the
    parameters; ``groups`` gives the conditional DAL of seed 000 [0132].

    Returns
    -------
    torch.Tensor
        Scalar loss with the dtype and device of ``logits``.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a torch.Tensor of shape (N, K); got {shape}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor of raw classifier scores (the cross-entropy needs "
                         f"their gradient); got dtype {logits.dtype}")
    # Checked on the logits, so that the error names what the caller passed (softmax turns +inf into NaN).
    finite = torch.isfinite(logits.detach())
    if not bool(finite.all()):
        row = int((~finite).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"logits contains NaN or infinite values (first in row {row}); expected finite classifier scores")
    probs = torch.softmax(logits.detach().to(torch.float64), dim=1).cpu().numpy()
    y, _, mask = dal_targets(probs, target, threshold, groups=groups, method=method, n_samples=n_samples, seed=seed)
    return dal_cross_entropy(logits, y, mask, batch_size=logits.shape[0])
