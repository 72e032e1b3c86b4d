"""Gradients through a diffusion sampler: eq. 9 of seed 000 exactly, and the adjusted gradient of aDFT.

DDPM (seed 000, [0110]-[0113]; DESIGN.md). With z_{t-1} = (1/sqrt(alpha_t)) (z_t - c_t eps_t) + sigma_t w_t,

    z_0 = -sum_t A_t eps_t + z_T / sqrt(abar_T) + sum_t sigma_t w_t / sqrt(abar_{t-1}),   A_t = c_t / sqrt(abar_t),
    dz_0/dtheta = -sum_t A_t B_t (d eps_t / d theta),   B_t = prod_{s=1}^{t-1} (I - c_s J_s),   J_s = d eps_s / d z_s,  (eq. 9)

with the product ordered s = 1 on the left and d eps_t / d theta the partial derivative at fixed z_t.

Any sampler whose step is linear in the state and the noise prediction has the same structure. For a one-step
update z_{i-1} = a_i z_i + b_i eps_i (DDIM, DDPM, Euler), with steps i = n..1:

    z_0 = sum_i k_i eps_i + (prod_i a_i) z_T + noise,  k_i = b_i prod_{j<i} a_j,
    dz_0/dtheta = sum_i k_i B_i (d eps_i / d theta),   B_i = prod_{j=1}^{i-1} (I - c^_j J_j),  c^_j = -b_j / a_j,

so A_i = -k_i and the DDPM case has c^ = c (:func:`b_matrices`, :func:`eq9_gradient`). Multistep solvers (DPM-Solver++ 2M) are linear in the history of noise
predictions, so their unrolled coefficients k_i exist too (:func:`unrolled_coefficients`), but their B is not a single
product: :func:`recursive_chain_gradient` accumulates the exact gradient forward from the per-step partial
coefficients (:func:`multistep_coefficients`) instead. The adjusted gradient (seed 000, [0114]-[0117], Algorithm A.1) replaces A_i -> 1 and B_i -> I:

    dz_0/dtheta ~ -sum_i d eps_i / d theta,

realised in a sampler by detaching z before the network (B -> I) and multiplying the gradient reaching eps_i by
C_i = 1/A_i, standardised by the geometric mean of all C_i (:class:`AdjustedGradient`). Which A_i: Algorithm A.1 (and
the official code, under DPM-Solver++ too) takes the DDPM A_t at the visited timestep t_i
(``coefficients="algorithm_a1"``); the sampler's own unrolled A_i = -k_i (``coefficients="sampler"``) makes the
adjusted gradient exactly -sum_i d eps_i/d theta for any linear sampler, and coincides with the former for DDPM.
:meth:`AdjustedGradient.from_scheduler` builds either from a diffusers scheduler.
"""

from __future__ import annotations

import copy
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from theory.ddpm import ddpm_coefficients, ddpm_sigmas, ddpm_step, eps_coefficient
from theory.validation import check_count

GradientMode = Literal["exact", "adjusted", "adjusted_unstandardised"]
GRADIENT_MODES: tuple[str, ...] = ("exact", "adjusted", "adjusted_unstandardised")
#: Where the A_i that the adjusted gradient inverts come from: ``"sampler"``, the sampler's own unrolled coefficient
#: of eps_i in z_0 (exact for any linear sampler); ``"algorithm_a1"``, the DDPM A_t = c_t / sqrt(abar_t) at the
#: timestep t_i the sampler visits, as seed 000's Algorithm A.1 and the official aDFT code use under every scheduler.
Coefficients = Literal["sampler", "algorithm_a1"]
COEFFICIENTS: tuple[str, ...] = ("sampler", "algorithm_a1")


def _fresh_copy(scheduler):
    """A new scheduler with ``scheduler``'s configuration and none of its run state.

    ``copy.deepcopy`` fails on a diffusers scheduler that has stepped a chain with gradient (its history holds
    non-leaf tensors); ``from_config`` is the diffusers way to clone one. Duck-typed stand-ins without
    ``from_config`` are deep-copied.
    """
    if hasattr(type(scheduler), "from_config") and hasattr(scheduler, "config"):
        return type(scheduler).from_config(scheduler.config)
    return copy.deepcopy(scheduler)


def a_coefficient(beta: np.ndarray, alpha_bar: np.ndarray) -> np.ndarray:
    """A_t = c_t / sqrt(abar_t) = beta_t / (sqrt(1 - abar_t) sqrt(abar_t)) (seed 000, [0112]), elementwise."""
    return eps_coefficient(beta, alpha_bar) / np.sqrt(alpha_bar)


def ddpm_a_coefficients(betas: np.ndarray) -> np.ndarray:
    """A_t of the DDPM chain of schedule ``betas`` (seed 000, [0112]); index 0 is t = 1."""
    coef = ddpm_coefficients(betas)
    return a_coefficient(coef["betas"], coef["alpha_bars"])


def b_matrices(jacobian_coefficients: np.ndarray, jacobians: Sequence[np.ndarray]) -> list[np.ndarray]:
    """B_i = prod_{j=n-1..i+1} (I - c^_j J_j) of every step i = 0..n-1 of a one-step sampler, in sampling order.

    Seed 000, eq. 9. ``jacobians[i]`` is J_i = d eps_i / d z at the trajectory's z_i, of shape (d, d) or (..., d, d)
    for a batch of trajectories (one product per leading index); ``jacobian_coefficients[i]`` is c^_i = -b_i / a_i,
    the coefficient of J_i in B (:func:`one_step_coefficients`). The last step has B_{n-1} = I and each earlier B_i
    multiplies the factors of the later steps, B_i = B_{i+1} (I - c^_{i+1} J_{i+1}). For DDPM (i = 0 is t = T,
    c^ = c in sampling order) B_i is the paper's B_t = prod_{s=1}^{t-1} (I - c_s J_s) at t = n - i, the product
    ordered s = 1 on the left.
    """
    coefficients = np.asarray(jacobian_coefficients, dtype=np.float64)
    if coefficients.ndim != 1 or len(jacobians) == 0 or coefficients.shape[0] != len(jacobians):
        raise ValueError(f"need one Jacobian per coefficient c^_i, at least one; got {len(jacobians)} jacobians for "
                         f"jacobian_coefficients of shape {coefficients.shape}")
    shape = np.shape(jacobians[0])
    bad = [i for i, j in enumerate(jacobians) if len(shape) < 2 or shape[-1] != shape[-2] or np.shape(j) != shape]
    if bad:
        raise ValueError(f"every jacobians[i] must be a square (..., d, d) matrix of one shape; jacobians[{bad[0]}] "
                         f"has shape {np.shape(jacobians[bad[0]])}, jacobians[0] {shape}")
    d = shape[-1]
    out: list[np.ndarray] = [np.empty(0)] * len(jacobians)
    b = np.broadcast_to(np.eye(d), shape).copy()
    for i in range(len(jacobians) - 1, -1, -1):
        out[i] = b
        b = b @ (np.eye(d) - coefficients[i] * jacobians[i])
    return out


def algorithm_a1_a_coefficients(betas: np.ndarray, alphas_cumprod: np.ndarray, timesteps: Sequence) -> np.ndarray:
    """A_{t_i} = (1 / sqrt(abar_{t_i})) beta_{t_i} / sqrt(1 - abar_{t_i}) at the sampler's timesteps t_i (Algorithm A.1).

    Seed 000, Algorithm A.1 ("C_i <- 1 / (1/sqrt(abar_{t_i}) beta_{t_i} / sqrt(1 - abar_{t_i}))"): the DDPM A_t of
    eq. 9 evaluated at the timestep t_i the network sees at step i, whatever the sampler. ``betas`` and
    ``alphas_cumprod`` are indexed by the scheduler's timestep, which is diffusers' 0-based index (t_i = 999 is the
    paper's t = 1000), exactly as the official code reads ``alphas_cumprod[t]`` and ``alphas[t]`` with diffusers' t.
    Returned in sampling order, float64.
    """
    betas = np.asarray(betas, dtype=np.float64)
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    t = np.asarray([float(x) for x in timesteps])
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError("timesteps must be a non-empty sequence of the sampler's timesteps")
    if not np.array_equal(t, np.round(t)) or t.min() < 0 or t.max() >= betas.shape[0]:
        raise ValueError(f"Algorithm A.1's A_t is defined at the integer DDPM timesteps 0..{betas.shape[0] - 1}; the "
                         f"sampler visits {t.tolist()}. Use coefficients='sampler' for a scheduler with continuous time")
    t = t.astype(np.int64)
    return a_coefficient(betas[t], abar[t])


def sampler_a_coefficients(scheduler, n_steps: int) -> np.ndarray:
    """A_i = -k_i, the coefficient of eps_i in z_0 of the scheduler's own chain of ``n_steps`` steps, sampling order.

    Read off by autograd through ``scheduler.step`` (:func:`unrolled_coefficients`) on a deep copy, so the caller's
    scheduler is left as it was. Exact for any linear sampler, multistep solvers included (seed 000 eq. 10 in general
    form); for DDPM it is the A_t of eq. 9.
    """
    k, _ = unrolled_coefficients(scheduler_stepper(_fresh_copy(scheduler), n_steps), n_steps)
    return -k


def one_step_coefficients(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k_i, c^_i) of a one-step linear sampler z <- a_i z + b_i eps_i, steps i = 0..n-1 in sampling order.

    k_i = b_i prod_{j>i} a_j is the coefficient of eps_i in z_0 (A_i = -k_i) and c^_i = -b_i / a_i the coefficient of
    J_i in B (the ``jacobian_coefficients`` of :func:`b_matrices`). (In the paper's indexing t runs down from T, so "j > i" here is "s < t" there.)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    later = np.concatenate((np.cumprod(a[::-1])[::-1][1:], [1.0]))  # prod_{j>i} a_j
    return b * later, -b / a


def eq9_gradient(
    k: np.ndarray, jacobian_coefficients: np.ndarray, jacobians: Sequence[np.ndarray], eps_grads: Sequence[np.ndarray]
) -> np.ndarray:
    """sum_i k_i B_i (d eps_i / d theta) with B_i = prod_{j=n-1..i+1} (I - c^_j J_j): eq. 9 in sampling order.

    ``jacobians[i]`` is J_i = d eps_i / d z (d x d) and ``eps_grads[i]`` the partial d eps_i / d theta (d x P), both
    at the trajectory's z_i; B_i is :func:`b_matrices`. For DDPM k_i = -A_t and c^_i = c_t, which is seed 000's eq. 9.
    """
    k = np.asarray(k, dtype=np.float64)
    jacobian_coefficients = np.asarray(jacobian_coefficients, dtype=np.float64)
    d, p = _check_chain_terms({"k": k, "jacobian_coefficients": jacobian_coefficients}, jacobians, eps_grads)
    b = b_matrices(jacobian_coefficients, jacobians)
    total = np.zeros((d, p))
    for i in range(len(k) - 1, -1, -1):
        total += k[i] * (b[i] @ eps_grads[i])
    return total


def _check_chain_terms(
    coefficients: dict[str, np.ndarray], jacobians: Sequence[np.ndarray], eps_grads: Sequence[np.ndarray] | None
) -> tuple[int, int | None]:
    """(d, P) of a chain's per-step terms, or one ValueError naming the list that is empty or of the wrong length/shape.

    Every coefficient array and both lists need one entry per sampler step; each J_i is (d, d) and each
    d eps_i / d theta is (d, P) with the same d and P.
    """
    n = len(jacobians)
    if n == 0:
        raise ValueError("jacobians is empty; eq. 9 needs one Jacobian J_i = d eps_i / d z per sampler step")
    lengths = {"jacobians": n, **{name: len(v) if np.ndim(v) == 1 else None for name, v in coefficients.items()}}
    if eps_grads is not None:
        lengths["eps_grads"] = len(eps_grads)
    if len(set(lengths.values())) != 1:
        raise ValueError("need one entry per sampler step in every argument (1-D coefficient arrays); got lengths "
                         + ", ".join(f"{name} = {'not 1-D' if m is None else m}" for name, m in lengths.items()))
    d = np.shape(jacobians[0])[0] if np.ndim(jacobians[0]) == 2 else None
    bad = [i for i, j in enumerate(jacobians) if d is None or np.shape(j) != (d, d)]
    if bad:
        raise ValueError(f"every jacobians[i] must be a square (d, d) matrix of one d; jacobians[{bad[0]}] has shape "
                         f"{np.shape(jacobians[bad[0]])}")
    if eps_grads is None:
        return d, None
    p = np.shape(eps_grads[0])[1] if np.ndim(eps_grads[0]) == 2 else None
    bad = [i for i, g in enumerate(eps_grads) if p is None or np.shape(g) != (d, p)]
    if bad:
        raise ValueError(f"every eps_grads[i] must have shape (d, P) = ({d}, P) with one P; eps_grads[{bad[0]}] has "
                         f"shape {np.shape(eps_grads[bad[0]])}")
    return d, p


def scheduler_stepper(scheduler, n_steps: int) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """``step(eps, z, i)`` for a diffusers-style scheduler (``set_timesteps``, ``timesteps``, ``step``), duck-typed.

    Calls ``scheduler.set_timesteps(n_steps)`` once, which also resets a multistep solver's history; make a new
    stepper for every chain. The scheduler must be linear in (z, eps) (no ``clip_sample``, no ``thresholding``) and
    deterministic (DDIM, DPM-Solver++, Euler, ...): eq. 9 and the adjusted gradient are statements about a chain that
    is a fixed function of z_T and the noise predictions. ``step`` is called without ``eta``, so DDIM runs with its
    default eta = 0 (eta is a call argument of ``DDIMScheduler.step``, not part of its config).

    Raises
    ------
    ValueError
        If ``n_steps`` is not an integer >= 1, a non-linear flag is set, or the scheduler is stochastic (see
        :func:`check_deterministic_scheduler`).
    """
    n_steps = check_count(n_steps, "n_steps", minimum=1)
    config = getattr(scheduler, "config", {})
    for flag in ("clip_sample", "thresholding"):
        if config.get(flag, False):
            raise ValueError(f"the scheduler has {flag}=True, which makes its step non-linear in eps and z; "
                             f"build it with {flag}=False")
    check_deterministic_scheduler(scheduler, n_steps)
    scheduler.set_timesteps(n_steps)
    timesteps = list(scheduler.timesteps)
    if len(timesteps) != n_steps:
        raise ValueError(f"the scheduler made {len(timesteps)} timesteps for n_steps = {n_steps}")
    return lambda eps, z, i: scheduler.step(eps, timesteps[i], z).prev_sample


#: Schedulers (class and config) already found deterministic for a number of steps; a diffusers scheduler's step is a
#: function of its class and config alone, so one probe per (class, config, n_steps) suffices.
_DETERMINISTIC_SCHEDULERS: set[tuple[str, str, int]] = set()


def check_deterministic_scheduler(scheduler, n_steps: int) -> None:
    """Refuse a scheduler whose chain of ``n_steps`` steps is not a fixed function of its inputs.

    The probe runs the whole chain twice, on two deep copies of the scheduler, with identical z_T and identical noise
    predictions, and requires bit-identical outputs at every step. That is the property the adjusted gradient needs,
    stated directly, rather than a list of class names or config flags that goes stale: DDPMScheduler,
    EulerAncestralDiscreteScheduler, the SDE variants of DPM-Solver (``algorithm_type="sde-dpmsolver++"``) and any
    other scheduler that draws fresh noise in ``step`` fail it, because the two runs draw different noise. The probe
    runs inside ``torch.random.fork_rng``, so it leaves the caller's global random state untouched, and is cached per
    (class, config, n_steps).
    """
    config = getattr(scheduler, "config", None)
    key = None
    if config is not None:
        key = (f"{type(scheduler).__module__}.{type(scheduler).__qualname__}", repr(sorted(dict(config).items())), n_steps)
        if key in _DETERMINISTIC_SCHEDULERS:
            return
    runs = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for _ in range(2):
            probe = _fresh_copy(scheduler)
            probe.set_timesteps(n_steps)
            timesteps = list(probe.timesteps)
            z = torch.linspace(-1.0, 1.0, 64).reshape(1, 4, 4, 4)
            trajectory = []
            for i, t in enumerate(timesteps):
                eps = torch.sin(z * 3.0 + i)  # a fixed, input-dependent stand-in for the noise prediction
                if hasattr(probe, "scale_model_input"):  # Euler-type schedulers warn when step comes first
                    probe.scale_model_input(z, t)
                z = probe.step(eps, t, z).prev_sample
                trajectory.append(z)
            runs.append(trajectory)
    for i, (a, b) in enumerate(zip(*runs)):
        if not torch.equal(a, b):
            raise ValueError(
                f"{type(scheduler).__name__} is stochastic: two runs of its step on identical inputs differ at step {i} "
                f"of {n_steps} (it draws fresh noise). Eq. 9 and the adjusted gradient need a deterministic sampler: use "
                "DDIMScheduler (eta = 0) or DPMSolverMultistepScheduler(algorithm_type='dpmsolver++')"
            )
    if key is not None:
        _DETERMINISTIC_SCHEDULERS.add(key)


def ddpm_stepper(betas: np.ndarray, noises: Sequence[torch.Tensor] | None = None) -> Callable:
    """``step(eps, z, i)`` of the DDPM ancestral chain over all T steps (i = 0 is t = T), sigma_t^2 = beta_t.

    ``noises[i]`` is the fixed w of step i (reparameterised, so the chain is a deterministic function of theta);
    ``None`` gives the mean chain.
    """
    coef = ddpm_coefficients(betas)
    sigmas = ddpm_sigmas(coef["betas"])
    n = coef["betas"].shape[0]

    def step(eps: torch.Tensor, z: torch.Tensor, i: int) -> torch.Tensor:
        t = n - 1 - i
        noise = None if noises is None or i == n - 1 else noises[i]
        return ddpm_step(z, eps, coef["c"][t], coef["alphas"][t], sigmas[t], noise)

    return step


def unrolled_coefficients(
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], n_steps: int
) -> tuple[np.ndarray, float]:
    """Coefficients (k_i, k_T) of z_0 = sum_i k_i eps_i + k_T z_T for a sampler linear in its inputs.

    ``step(eps, z, i)`` advances z by step i = 0..n-1 (in sampling order) given the noise prediction eps; it may keep
    internal history (multistep solvers). Differentiating z_0 with respect to scalar leaves eps_i and z_T gives the
    coefficients exactly, because the chain is linear. Returned k is in sampling order (first entry: first step).
    """
    n_steps = check_count(n_steps, "n_steps", minimum=1)
    z_T = torch.ones(1, dtype=torch.float64, requires_grad=True)
    eps = [torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in range(n_steps)]
    z = z_T
    for i in range(n_steps):
        z = step(eps[i], z, i)
    grads = torch.autograd.grad(z.sum(), [*eps, z_T], allow_unused=True)
    k = np.array([0.0 if g is None else float(g) for g in grads[:-1]])
    return k, float(grads[-1])


def adjusted_gradient_scales(a_coefficients: np.ndarray, *, standardise: bool = True) -> np.ndarray:
    """C_i = 1 / A_i, divided by the geometric mean of all C_i when ``standardise`` (seed 000, [0116]).

    Standardising keeps the overall gradient scale of the unadjusted chain while equalising the steps.
    """
    a = np.asarray(a_coefficients, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] == 0:
        raise ValueError(f"a_coefficients must be a non-empty 1-D array, one A_i per sampler step; got shape {a.shape}")
    if not np.isfinite(a).all() or (a == 0).any():
        raise ValueError("every A_i must be finite and non-zero to be inverted; "
                         f"got {int((a == 0).sum())} zeros and {int((~np.isfinite(a)).sum())} non-finite values")
    c = 1.0 / np.abs(a)
    return c / np.exp(np.log(c).mean()) if standardise else c


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass, multiplies the incoming gradient by a constant in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:  # noqa: D401
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """x in the forward pass; the gradient reaching x is multiplied by ``scale``.

    ``scale`` is a number, or a constant tensor that broadcasts to x's shape (an elementwise scale, e.g. a region of
    an image); it is never differentiated.
    """
    if isinstance(scale, torch.Tensor):
        try:
            fits = torch.broadcast_shapes(scale.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"a tensor scale must broadcast to x's shape {tuple(x.shape)}; got {tuple(scale.shape)}")
        return _ScaleGradient.apply(x, scale.detach().to(dtype=x.dtype, device=x.device))
    return _ScaleGradient.apply(x, float(scale))


class AdjustedGradient:
    """The gradient mode of a sampler run: how the network sees z_i and how its output's gradient is scaled.

    Parameters
    ----------
    mode : {"exact", "adjusted", "adjusted_unstandardised"}
        ``"exact"`` backpropagates through the whole chain (eq. 9); the adjusted modes detach z_i before the network
        (B -> I) and scale the gradient reaching eps_i by C_i (A -> 1), standardised or not.
    a_coefficients : array of shape (n,), in sampling order
        The A_i whose inverses C_i scale the gradients: by default A_i = -k_i of the sampler
        (:func:`ddpm_a_coefficients` reversed, or -:func:`unrolled_coefficients`).
    coefficients : {"sampler", "algorithm_a1"}
        Which A_i ``a_coefficients`` holds (see :data:`COEFFICIENTS`), recorded for the results; use
        :meth:`from_scheduler` to compute either from a diffusers scheduler.
    """

    def __init__(self, mode: GradientMode, a_coefficients: np.ndarray | None = None, *,
                 coefficients: Coefficients = "sampler"):
        if mode not in GRADIENT_MODES:
            raise ValueError(f"mode must be one of {GRADIENT_MODES}; got {mode!r}")
        if coefficients not in COEFFICIENTS:
            raise ValueError(f"coefficients must be one of {COEFFICIENTS}; got {coefficients!r}")
        self.mode = mode
        self.coefficients = coefficients
        if mode == "exact":
            self.scales = None
        else:
            if a_coefficients is None:
                raise ValueError(f"mode {mode!r} needs the sampler's A coefficients")
            self.scales = adjusted_gradient_scales(a_coefficients, standardise=mode == "adjusted")
        #: The number of sampler steps the scales were standardised over (None for the exact gradient, which has none).
        self.n_steps: int | None = None if self.scales is None else int(self.scales.shape[0])

    @classmethod
    def from_scheduler(cls, scheduler, n_steps: int, mode: GradientMode = "adjusted", *,
                       coefficients: Coefficients = "algorithm_a1") -> "AdjustedGradient":
        """The gradient mode for ``n_steps`` steps of a diffusers scheduler, with the C_i of Algorithm A.1 or of the sampler.

        Parameters
        ----------
        scheduler
            A diffusers scheduler (``betas``, ``alphas_cumprod``, ``set_timesteps``, ``timesteps``, ``step``); it is
            deep-copied, never modified.
        n_steps : int
            Sampler steps S - 1 of Algorithm A.1; the C_i are standardised over exactly these steps, so build a new
            one whenever the step count changes (the official code draws 19-23 steps per iteration).
        mode : {"exact", "adjusted", "adjusted_unstandardised"}
            As in the constructor; ``"exact"`` needs no coefficients.
        coefficients : {"algorithm_a1", "sampler"}
            ``"algorithm_a1"`` (seed 000, Algorithm A.1; the default): C_i = 1 / A_{t_i}, the DDPM
            A_t = beta_t / (sqrt(1 - abar_t) sqrt(abar_t)) at the timestep t_i of step i, from the scheduler's
            ``betas`` and ``alphas_cumprod`` (:func:`algorithm_a1_a_coefficients`), whatever the sampler is (DDIM,
            DPM-Solver++). ``"sampler"``: C_i = 1 / |A_i| with A_i the scheduler's own unrolled coefficient of eps_i
            in z_0 (:func:`sampler_a_coefficients`), which makes the adjusted gradient exactly -sum_i d eps_i/d theta
            for any linear sampler. Both are divided by their geometric mean in ``mode="adjusted"``.
        """
        n_steps = check_count(n_steps, "n_steps", minimum=1)
        if coefficients not in COEFFICIENTS:
            raise ValueError(f"coefficients must be one of {COEFFICIENTS}; got {coefficients!r}")
        if mode == "exact":
            return cls("exact", coefficients=coefficients)
        if coefficients == "sampler":
            a = sampler_a_coefficients(scheduler, n_steps)
        else:
            probe = _fresh_copy(scheduler)
            probe.set_timesteps(n_steps)
            timesteps = list(probe.timesteps)
            if len(timesteps) != n_steps:
                raise ValueError(f"the scheduler made {len(timesteps)} timesteps for n_steps = {n_steps}")
            a = algorithm_a1_a_coefficients(_as_numpy(probe.betas), _as_numpy(probe.alphas_cumprod), timesteps)
        return cls(mode, a, coefficients=coefficients)

    def network_input(self, z: torch.Tensor) -> torch.Tensor:
        """z itself (exact) or z detached, so that no gradient flows through J (B -> I)."""
        return z if self.mode == "exact" else z.detach()

    def network_output(self, eps: torch.Tensor, i: int) -> torch.Tensor:
        """eps itself (exact) or eps with its gradient scaled by C_i (A -> 1); ``i`` in sampling order."""
        return eps if self.scales is None else scale_gradient(eps, self.scales[i])


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def run_sampler(
    eps_model: Callable[[torch.Tensor, int], torch.Tensor],
    z_T: torch.Tensor,
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    n_steps: int,
    gradient: AdjustedGradient,
    *,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Sample z_0 from z_T through ``n_steps`` calls of ``step(eps, z, i)`` with the chosen gradient mode.

    ``eps_model(z, i)`` is any torch noise predictor (a toy denoiser or a diffusers UNet wrapped with its timestep).
    With ``checkpoint`` the network's activations are recomputed in the backward pass
    (``torch.utils.checkpoint``), so that with the adjusted gradient memory stays flat in the number of steps.
    """
    n_steps = check_count(n_steps, "n_steps", minimum=1)
    if gradient.n_steps is not None and gradient.n_steps != n_steps:
        raise ValueError(
            f"the AdjustedGradient was built for {gradient.n_steps} sampler steps (its C_i are standardised over all of "
            f"them) but run_sampler was asked for n_steps = {n_steps}; build it from the same sampler and step count"
        )
    z = z_T
    for i in range(n_steps):
        x = gradient.network_input(z)
        if checkpoint:
            eps = torch.utils.checkpoint.checkpoint(eps_model, x, i, use_reentrant=False)
        else:
            eps = eps_model(x, i)
        if eps.shape != z.shape:  # a step would broadcast them silently into a different chain
            raise ValueError(f"eps_model returned shape {tuple(eps.shape)} for a state of shape {tuple(z.shape)} at "
                             f"step {i}; the noise prediction must have the state's shape")
        z = step(gradient.network_output(eps, i), z, i)
    return z


def multistep_coefficients(
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], n_steps: int
) -> list[dict[str, dict[int, float]]]:
    """Partial coefficients of each step of a linear (possibly multistep) sampler, in sampling order.

    Step i maps (z_i, eps_i and whatever history it keeps of earlier z_j, eps_j) to z_{i+1} linearly:
    z_{i+1} = sum_{j<=i} (alpha_{i,j} z_j + beta_{i,j} eps_j). Every step is fed fresh scalar leaves for z_i and eps_i,
    so differentiating z_{i+1} with respect to the leaves of steps j <= i gives the partial (direct) coefficients,
    including those that reach z_{i+1} through the solver's stored history. Returns, per step, ``{"z": {j: alpha},
    "eps": {j: beta}}`` with only the non-zero entries. A one-step sampler has alpha_{i,i} = a_i and beta_{i,i} = b_i.
    """
    n_steps = check_count(n_steps, "n_steps", minimum=1)
    z_leaves, eps_leaves, out = [], [], []
    z = torch.ones(1, dtype=torch.float64)
    for i in range(n_steps):
        z_i = z.detach().requires_grad_(True)
        eps_i = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        z_leaves.append(z_i)
        eps_leaves.append(eps_i)
        z = step(eps_i, z_i, i)
        grads = torch.autograd.grad(z.sum(), [*z_leaves, *eps_leaves], allow_unused=True, retain_graph=True)
        coefficients = {"z": {}, "eps": {}}
        for j in range(i + 1):
            for key, g in (("z", grads[j]), ("eps", grads[i + 1 + j])):
                if g is not None and float(g) != 0.0:
                    coefficients[key][j] = float(g)
        out.append(coefficients)
    return out


def recursive_chain_gradient(
    coefficients: list[dict[str, dict[int, float]]], jacobians: Sequence[np.ndarray], eps_grads: Sequence[np.ndarray]
) -> np.ndarray:
    """dz_0/dtheta of a linear (multistep) sampler by forward accumulation: eq. 9 without the product form.

    With G_j = dz_j/dtheta (G_0 = 0 for z_T) and E_j = J_j G_j + d eps_j/dtheta the total derivative of eps_j,
    G_{i+1} = sum_j alpha_{i,j} G_j + beta_{i,j} E_j. For a one-step sampler this unrolls to
    sum_i k_i B_i (d eps_i / d theta) (:func:`eq9_gradient`).
    """
    d, p = _check_chain_terms({}, jacobians, eps_grads)
    if len(coefficients) != len(jacobians):
        raise ValueError(f"need one entry per sampler step; got {len(coefficients)} coefficients for "
                         f"{len(jacobians)} jacobians")
    g_states = [np.zeros((d, p))]
    e_totals: list[np.ndarray] = []
    for i, coef in enumerate(coefficients):
        e_totals.append(jacobians[i] @ g_states[i] + eps_grads[i])
        nxt = np.zeros_like(g_states[0])
        for j, alpha in coef["z"].items():
            nxt = nxt + alpha * g_states[j]
        for j, beta in coef["eps"].items():
            nxt = nxt + beta * e_totals[j]
        g_states.append(nxt)
    return g_states[-1]


def dpm_solver_pp_2m_stepper(abars: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """``step(eps, z, i)`` of DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; data prediction, midpoint form) in float64.

    ``abars`` holds abar at the n sampling timesteps followed by the final one (1.0 for a final sigma of zero, as
    diffusers' ``final_sigmas_type="zero"``); the first step and the last (to sigma = 0) are first order, as diffusers
    does with ``lower_order_final``. Written out because diffusers' ``DPMSolverMultistepScheduler.step`` casts the
    sample to float32, which caps any float64 check of the chain at float32 precision; ``tests/test_sampler_gradient.py``
    checks that both give the same chain. Make a new stepper for every chain (it keeps the previous prediction).
    """
    abars = np.asarray(abars, dtype=np.float64)
    alpha = np.sqrt(abars)
    sigma = np.sqrt(1.0 - abars)
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # lambda_t = log(alpha_t / sigma_t); +inf at sigma = 0
    n = abars.shape[0] - 1
    history: dict[int, torch.Tensor] = {}

    def step(eps: torch.Tensor, z: torch.Tensor, i: int) -> torch.Tensor:
        x0 = (z - sigma[i] * eps) / alpha[i]  # the data prediction D_i
        history[i] = x0
        if sigma[i + 1] == 0.0:  # last step to sigma = 0: z_0 = D_i
            return x0
        h = lam[i + 1] - lam[i]
        if i == 0 or i == n - 1:
            d = x0
        else:
            r = (lam[i] - lam[i - 1]) / h
            d = x0 + (x0 - history[i - 1]) / (2.0 * r)
        return (sigma[i + 1] / sigma[i]) * z - alpha[i + 1] * np.expm1(-h) * d

    return step
