"""The three gradient terms of paper 000's Fig. 6b for any torch noise predictor, from ONE adjoint pass per chain.

Seed 000, eq. 9 and [0117]. Along a DDPM chain z_T -> z_0 (all T steps, fixed ancestral noise, so z_0 is a
deterministic function of theta), the contribution of step t to R dz_0/dtheta is -R A_t B_t g_t, g_t = d eps_t /
d theta the partial derivative at fixed z_t. The row vector -R A_t B_t is the adjoint of eps_t: the gradient of
R . z_0 with respect to the network's output at step t. One reverse pass of R . z_0 through the unrolled chain, with
``retain_grad`` on every z_t and every eps_t, therefore gives R A_t B_t for all t at once (and R dz_0/dz_t, the
adjoint of the state), instead of one pass per t or the d x d products B_t that :mod:`toy.sampler_chain` forms
explicitly (impossible beyond toy dimensions). The norms

    ||R A_t B_t g_t||,  ||R A_t g_t|| = |A_t| ||R g_t||,  ||R g_t||

then need one vector-Jacobian product of the network per (t, vector) (:func:`vjp_norms`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from theory.sampler_gradient import ddpm_a_coefficients, ddpm_stepper


class StepIndexed(torch.nn.Module):
    """A noise predictor seen by the chain as eps(z, i), ``i`` the step index in sampling order (i = 0 is t = T).

    ``call(net, z, value)`` evaluates the wrapped network with ``value = values[i]``, what the network is told about
    step i: e.g. ``values`` the diffusers timesteps T-1..0 and ``call = lambda unet, z, t: unet(z, t).sample`` for a
    ``UNet2DModel``, or ``values`` the abar of each step for a toy denoiser. The lookup is ``index_select``, so
    ``i`` may be a tensor.
    """

    def __init__(self, net: torch.nn.Module, call: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
                 values: torch.Tensor):
        super().__init__()
        self.net = net
        self.call = call
        self.register_buffer("values", torch.as_tensor(values), persistent=False)

    def forward(self, z: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, z, torch.index_select(self.values, 0, torch.as_tensor(i).reshape(-1)))


def chain_adjoints(model: StepIndexed, betas: np.ndarray, z_T: torch.Tensor, r: torch.Tensor,
                   noises: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The DDPM chain from ``z_T`` and the adjoints of R . z_0 at every step, from a single backward pass.

    Parameters
    ----------
    model : StepIndexed
        The noise predictor eps(z, i); its parameters receive no gradient here.
    betas : ndarray (T,)
        The schedule; the chain runs all T steps (:func:`theory.sampler_gradient.ddpm_stepper`).
    z_T : Tensor (B, ...)
        One chain per row (B runs); ``r`` has the same shape, the row vector R of each run.
    noises : list of Tensor, optional
        The ancestral noise w of every step (``noises[i]`` of z_T's shape); None gives the mean chain.

    Returns
    -------
    dict with, stacked over steps i = 0..T-1 in sampling order (t = T - i):
        ``"z"`` (T, B, ...): the network's input z_t at step i;
        ``"eps_adjoint"`` (T, B, ...): d(R . z_0)/d eps_t = -R A_t B_t (seed 000, eq. 9);
        ``"state_adjoint"`` (T, B, ...): d(R . z_0)/d z_t = R dz_0/dz_t.
    """
    n = len(betas)
    if r.shape != z_T.shape:
        raise ValueError(f"r must have z_T's shape {tuple(z_T.shape)} (one row vector R per run); got {tuple(r.shape)}")
    step = ddpm_stepper(betas, noises)
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # only the chain's own adjoints are wanted: no parameter gradients accumulate
        p.requires_grad_(False)
    try:
        z = z_T.detach().clone().requires_grad_(True)
        states, outputs = [], []
        for i in range(n):
            states.append(z)
            # recomputed in the backward pass: memory stays one network evaluation deep, not T (1000) deep
            eps = torch.utils.checkpoint.checkpoint(model, z, torch.tensor(i), use_reentrant=False)
            eps.retain_grad()
            outputs.append(eps)
            z = step(eps, z, i)
            z.retain_grad()
        (r * z).sum().backward()
    finally:
        for p, flag in zip(model.parameters(), params):
            p.requires_grad_(flag)
    return {"z": torch.stack([s.detach() for s in states]),
            "eps_adjoint": torch.stack([e.grad for e in outputs]),
            "state_adjoint": torch.stack([s.grad for s in states])}


def vjp_norms(model: StepIndexed, z: torch.Tensor, steps: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """||v_k^T d eps(z_k, i_k) / d theta|| for every k: per-sample vector-Jacobian products of the network.

    ``z`` (K, ...) are network inputs, ``steps`` (K,) their step indices, ``vectors`` (K, ...) the vectors v_k of
    eps's shape, or (V, K, ...) for V vectors per input (one forward pass serves all V). The norm is taken over all
    parameters together; returns (K,) or (V, K). One autograd call per sample and vector: ``torch.func.vmap`` over
    a diffusers UNet falls back to a slower per-sample loop in its attention block, so a plain loop is the fast way.
    """
    single = vectors.shape == z.shape
    vectors = vectors[None] if single else vectors
    if vectors.shape[1:] != z.shape or steps.shape != (z.shape[0],):
        raise ValueError(f"need steps (K,) and vectors (K, ...) or (V, K, ...) matching z {tuple(z.shape)}; got "
                         f"steps {tuple(steps.shape)} and vectors {tuple(vectors.shape)}")
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(vectors.shape[:2], dtype=torch.float64)
    for k in range(z.shape[0]):
        eps = model(z[k:k + 1], steps[k])
        for j in range(vectors.shape[0]):
            g = torch.autograd.grad((eps * vectors[j, k:k + 1]).sum(), params, retain_graph=j + 1 < vectors.shape[0])
            out[j, k] = torch.sqrt(sum(x.double().square().sum() for x in g))
    return out[0] if single else out


def term_norms(model: StepIndexed, betas: np.ndarray, z_T: torch.Tensor, r: torch.Tensor,
               noises: list[torch.Tensor] | None = None, *, every: int = 1) -> dict[str, np.ndarray]:
    """The norms of Fig. 6b (seed 000, [0117]) per run and step, arrays (B, n_t) in sampling order.

    ``"exact_term"`` ||R A_t B_t g_t||, ``"term_without_B"`` ||R A_t g_t|| and ``"adjusted_term"`` ||R g_t|| at the
    steps i = 0, every, 2 every, ... and the last, T - 1 (``"step"``, with ``"t"`` = T - i); ``"RB_growth_all"`` ||R B_t|| / ||R|| (the
    growth of the random row R under B_t) and ``"state_adjoint_norm_all"`` ||R dz_0/dz_t|| at every step, (B, T):
    they need no network evaluation beyond the adjoint pass. The adjoints come from one backward pass per batch of
    chains (:func:`chain_adjoints`).
    """
    adj = chain_adjoints(model, betas, z_T, r, noises)
    n, runs = adj["z"].shape[:2]
    a = torch.as_tensor(ddpm_a_coefficients(np.asarray(betas, dtype=np.float64))[::-1].copy(), dtype=z_T.dtype)
    idx = torch.unique(torch.cat([torch.arange(0, n, every), torch.tensor([n - 1])]))  # t = T, ..., and t = 1
    z = adj["z"][idx].reshape(-1, *z_T.shape[1:])
    steps = idx.repeat_interleave(runs)
    vectors = torch.stack([adj["eps_adjoint"][idx].reshape(z.shape), r.expand(len(idx), *r.shape).reshape(z.shape)])
    exact, plain = vjp_norms(model, z, steps, vectors).reshape(2, len(idx), runs)
    a_sel = a[idx][:, None]
    flat = lambda x: x.reshape(n, runs, -1)  # noqa: E731
    rb_all = flat(adj["eps_adjoint"]).norm(dim=2) / a.abs()[:, None] / r.reshape(runs, -1).norm(dim=1)[None]
    as_np = lambda x: x.T.detach().cpu().double().numpy()  # noqa: E731  (B, n_t)
    return {"step": idx.numpy(), "t": n - idx.numpy(), "exact_term": as_np(exact),
            "term_without_B": as_np(a_sel.abs() * plain), "adjusted_term": as_np(plain),
            "RB_growth_all": as_np(rb_all), "state_adjoint_norm_all": as_np(flat(adj["state_adjoint"]).norm(dim=2))}
