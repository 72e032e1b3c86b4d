"""Sampler chains on toy denoisers: eq. 9 against autograd, the scale of A_t B_t g_t, and finetuning through the chain.

Seed 000, [0110]-[0117], Fig. 6a/6b. The samplers are the DDPM ancestral chain with fixed (reparameterised) noise and
diffusers' DDIM and DPM-Solver++ schedulers in float64 (clip_sample off, so every step is linear in z and eps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from torch.func import functional_call, jacrev, vmap

from theory.ddpm import ddpm_coefficients
from theory.sampler_gradient import (
    AdjustedGradient,
    GradientMode,
    b_matrices,
    dpm_solver_pp_2m_stepper,
    ddpm_stepper,
    eq9_gradient,
    multistep_coefficients,
    one_step_coefficients,
    recursive_chain_gradient,
    run_sampler,
    scheduler_stepper,
    unrolled_coefficients,
)
from theory.validation import check_count

SamplerKind = Literal["ddpm", "ddim", "dpmsolver++"]


@dataclass
class Sampler:
    """A deterministic-given-noise sampler: ``step(eps, z, i)``, the abar seen by the network at step i, and A_i."""

    kind: str
    n_steps: int
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    abars: np.ndarray  # (n,), sampling order
    a_coefficients: np.ndarray  # A_i = -k_i, sampling order
    #: c^_i = -b_i / a_i, the coefficient of J_i in B_i (c_t for DDPM); one-step samplers only, None for multistep
    jacobian_coefficients: np.ndarray | None
    step_coefficients: list[dict[str, dict[int, float]]]  # partial coefficients of every step (multistep form)


def diffusers_scheduler(kind: str, betas: np.ndarray):
    """The diffusers scheduler behind a DDIM or DPM-Solver++ :class:`Sampler` on schedule ``betas``.

    DDIM with eta = 0, no clipping and final abar 1; DPM-Solver++ of order 2 with diffusers' defaults. A fresh one
    per call: a multistep solver keeps history.
    """
    cfg = dict(num_train_timesteps=betas.shape[0], trained_betas=np.asarray(betas, dtype=np.float64).tolist())
    if kind == "ddim":
        return DDIMScheduler(**cfg, clip_sample=False, set_alpha_to_one=True)
    if kind == "dpmsolver++":
        return DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"kind must be 'ddpm', 'ddim' or 'dpmsolver++'; got {kind!r}")


def make_sampler(kind: SamplerKind, betas: np.ndarray, n_steps: int, *, noises: list[torch.Tensor] | None = None) -> Sampler:
    """DDPM over all T = len(betas) steps (``n_steps`` must equal T), or DDIM / DPM-Solver++ with ``n_steps`` steps."""
    betas = np.asarray(betas, dtype=np.float64)
    n_steps = check_count(n_steps, "n_steps", minimum=1)
    if kind == "ddpm":
        if n_steps != betas.shape[0]:
            raise ValueError(f"the DDPM chain runs all T = {betas.shape[0]} steps; got n_steps = {n_steps}")
        step = ddpm_stepper(betas, noises)
        abars = ddpm_coefficients(betas)["alpha_bars"][::-1].copy()
    else:
        def fresh():
            return diffusers_scheduler(kind, betas)

        scheduler = fresh()
        scheduler.set_timesteps(n_steps)
        abars = scheduler.alphas_cumprod.double().numpy()[scheduler.timesteps.numpy()]
        # a multistep solver keeps history: every chain (starting at i = 0) gets its own stepper
        current = None

        def step(eps, z, i):
            nonlocal current
            if i == 0:
                # DPM-Solver++ in float64 (theory.sampler_gradient), checked against diffusers' float32 step
                current = (dpm_solver_pp_2m_stepper(np.append(abars, 1.0)) if kind == "dpmsolver++"
                           else scheduler_stepper(fresh(), n_steps))
            return current(eps, z, i)

    # the coefficients do not depend on the step noise: read them off the mean chain on scalars
    mean_step = ddpm_stepper(betas) if kind == "ddpm" else step
    k, _ = unrolled_coefficients(mean_step, n_steps)
    step_coefficients = multistep_coefficients(mean_step, n_steps)
    jacobian_coefficients = None
    if all(set(c["z"]) <= {i} and set(c["eps"]) <= {i} for i, c in enumerate(step_coefficients)):  # one-step
        a = np.array([c["z"].get(i, 0.0) for i, c in enumerate(step_coefficients)])
        b = np.array([c["eps"].get(i, 0.0) for i, c in enumerate(step_coefficients)])
        k_one, jacobian_coefficients = one_step_coefficients(a, b)
        if not np.allclose(k_one, k, rtol=1e-10, atol=0):
            raise RuntimeError(f"{kind}: unrolled and per-step coefficients disagree; is the scheduler linear?")
    return Sampler(kind, n_steps, step, abars, -k, jacobian_coefficients, step_coefficients)


def eps_model_for(model: torch.nn.Module, sampler: Sampler) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The network as the sampler sees it: eps(z, i) = model(z, abar at step i)."""
    abars = torch.as_tensor(sampler.abars)
    return lambda z, i: model(z, abars[i])


def _flat_params(model: torch.nn.Module) -> tuple[list[str], list[torch.Size], torch.Tensor]:
    names, shapes, flats = [], [], []
    for name, p in model.named_parameters():
        names.append(name)
        shapes.append(p.shape)
        flats.append(p.detach().reshape(-1))
    return names, shapes, torch.cat(flats)


def _unflatten(names, shapes, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, offset = {}, 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape)) if len(shape) else 1
        out[name] = flat[offset: offset + size].reshape(shape)
        offset += size
    return out


def chain_jacobian_autograd(model: torch.nn.Module, sampler: Sampler, z_T: torch.Tensor) -> np.ndarray:
    """dz_0/dtheta (d x P) by plain reverse-mode autograd through the whole chain (the exact gradient), z_T (1, d)."""
    params = [p for p in model.parameters()]
    abars = torch.as_tensor(sampler.abars)
    z = z_T
    for i in range(sampler.n_steps):
        z = sampler.step(model(z, abars[i]), z, i)
    rows = []
    for j in range(z.shape[1]):
        grads = torch.autograd.grad(z[0, j], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
    return torch.stack(rows).detach().numpy()


def chain_terms(model: torch.nn.Module, sampler: Sampler, z_T: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Along the trajectories from z_T (B, d): J_i = d eps_i / d z (B, d, d) and g_i = d eps_i / d theta (B, d, P).

    g_i is the partial derivative at fixed z_i; both are exact (autograd of the network, vectorised over B).
    """
    names, shapes, theta = _flat_params(model)
    abars = torch.as_tensor(sampler.abars)
    jacobians, grads = [], []
    z = z_T.detach()
    for i in range(sampler.n_steps):
        def eps_of(flat: torch.Tensor, zz: torch.Tensor, i=i) -> torch.Tensor:
            return functional_call(model, _unflatten(names, shapes, flat), (zz[None], abars[i]))[0]

        g_theta, j_z = vmap(jacrev(eps_of, argnums=(0, 1)), in_dims=(None, 0))(theta, z)
        jacobians.append(j_z.numpy())
        grads.append(g_theta.numpy())
        with torch.no_grad():
            z = sampler.step(model(z, abars[i]), z, i)
    return jacobians, grads


def eq9_relative_error(model: torch.nn.Module, sampler: Sampler, z_T: torch.Tensor, *, form: str = "auto") -> float:
    """max |eq. 9 - autograd| / max |autograd| for one chain from z_T (1, d).

    ``form="product"`` is seed 000's -sum_t A_t B_t d eps_t/d theta (one-step samplers); ``"recursive"`` the forward
    accumulation that also covers multistep solvers; ``"auto"`` the product form where it exists.
    """
    if form == "auto":
        form = "product" if sampler.jacobian_coefficients is not None else "recursive"
    if form == "product" and sampler.jacobian_coefficients is None:
        raise ValueError(f"eq. 9 in product form needs a one-step sampler; {sampler.kind} is multistep")
    exact = chain_jacobian_autograd(model, sampler, z_T)
    jacobians, grads = chain_terms(model, sampler, z_T)
    jacobians, grads = [j[0] for j in jacobians], [g[0] for g in grads]
    if form == "product":
        formula = eq9_gradient(-sampler.a_coefficients, sampler.jacobian_coefficients, jacobians, grads)
    else:
        formula = recursive_chain_gradient(sampler.step_coefficients, jacobians, grads)
    return float(np.abs(formula - exact).max() / np.abs(exact).max())


#: The three gradient terms of Fig. 6b (seed 000, [0117]): the exact term of eq. 9, the term with B_t -> I, and the
#: adjusted gradient's term (A_t -> 1, B_t -> I).
GRADIENT_TERMS = {"exact_term": "R A_t B_t g_t", "term_without_B": "R A_t g_t", "adjusted_term": "R g_t"}


def gradient_scales(model: torch.nn.Module, sampler: Sampler, z_T: torch.Tensor, r: np.ndarray) -> dict[str, np.ndarray]:
    """Per run and step (Fig. 6b), arrays (B, n) in sampling order: the norms of :data:`GRADIENT_TERMS`.

    ``"exact_term"`` ||R A_i B_i g_i||, ``"term_without_B"`` ||R A_i g_i||, ``"adjusted_term"`` ||R g_i||. ``z_T`` (B, d)
    and the rows ``r`` (B, d) give one run each; also returns the eigenvalues of J_i (B, n, d) as ``"jacobian_eigs"``
    and the spectral norm of B_i (B, n) as ``"B_norm"``.
    """
    if sampler.jacobian_coefficients is None:
        raise ValueError(f"the scales of A_t B_t g_t need a one-step sampler (B_t as a product); {sampler.kind} is "
                         "multistep")
    jacobians, grads = chain_terms(model, sampler, z_T)
    runs = z_T.shape[0]
    n = sampler.n_steps
    out = {key: np.zeros((runs, n)) for key in (*GRADIENT_TERMS, "B_norm")}
    b = b_matrices(sampler.jacobian_coefficients, jacobians)  # (B, d, d) per step
    for i in range(n - 1, -1, -1):
        a_i = sampler.a_coefficients[i]
        rb = np.einsum("bd,bde->be", r, b[i])
        out["exact_term"][:, i] = np.linalg.norm(a_i * np.einsum("be,bep->bp", rb, grads[i]), axis=1)
        out["term_without_B"][:, i] = np.linalg.norm(a_i * np.einsum("bd,bdp->bp", r, grads[i]), axis=1)
        out["adjusted_term"][:, i] = np.linalg.norm(np.einsum("bd,bdp->bp", r, grads[i]), axis=1)
        out["B_norm"][:, i] = np.linalg.norm(b[i], ord=2, axis=(1, 2))
    out["jacobian_eigs"] = np.stack([np.linalg.eigvals(j).real for j in jacobians], axis=1)
    return out


def finetune(model: torch.nn.Module, sampler: Sampler, loss_fn: Callable[[torch.Tensor], torch.Tensor],
             mode: GradientMode, *, dim: int, iterations: int, batch: int, lr: float, seed: int,
             gradient: AdjustedGradient | None = None, optimiser: str = "adam",
             stop_when_diverged: bool = False) -> list[float]:
    """Finetune ``model`` through the sampler (direct finetuning, seed 000 Algorithm A.1) with a gradient mode.

    Every iteration draws a batch of z_T of shape (``batch``, ``dim``), samples z_0 through the chain and steps Adam
    on ``loss_fn(z_0)``. ``dim`` is the dimension of one sample and is passed explicitly: a model's parameter shapes
    do not determine it (a 1-D mixture with three components has means of length 3), and a wrong guess runs several
    broadcast chains instead of one without any error. Returns the loss per iteration.

    ``gradient`` replaces the gradient mode built from ``mode`` and the sampler's own coefficients (e.g.
    ``AdjustedGradient.from_scheduler(..., coefficients="algorithm_a1")``); ``optimiser`` is ``"adam"`` or ``"sgd"``
    (Adam divides out a global gradient scale, so only SGD shows what the coefficients' overall size does). With
    ``stop_when_diverged`` the run stops at the first non-finite loss and the curve is padded with NaN.
    """
    dim = check_count(dim, "dim", minimum=1)
    iterations = check_count(iterations, "iterations", minimum=0)
    batch = check_count(batch, "batch", minimum=1)
    gen = torch.Generator().manual_seed(check_count(seed, "seed", minimum=0))
    if optimiser not in ("adam", "sgd"):
        raise ValueError(f"optimiser must be 'adam' or 'sgd'; got {optimiser!r}")
    gradient = AdjustedGradient(mode, sampler.a_coefficients) if gradient is None else gradient
    eps_model = eps_model_for(model, sampler)
    opt = (torch.optim.Adam if optimiser == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    losses = []
    for _ in range(iterations):
        z_T = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
        loss = loss_fn(run_sampler(eps_model, z_T, sampler.step, sampler.n_steps, gradient))
        if stop_when_diverged and not torch.isfinite(loss):
            return losses + [float("nan")] * (iterations - len(losses))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
