"""PopAlign: population-level preference optimisation (seed 001, Sec. 3, App. D, App. E).

Notation. For a sample x of a model pi_theta with reference pi_ref, the log-likelihood ratio is
rho(x) = log pi_theta(x) / pi_ref(x). A population (set) X of N samples has log-ratio A(X) = sum_i rho(x_i).
Two different coefficients carry two different names: ``beta`` is eq. 8's divergence penalty on the set log-ratios,
``beta_prime`` (beta') the coefficient of r - mu in eq. 9, which the seed's App. D relates to it as beta' = 2 N T beta.

- Population DPO (seed 001, eq. 8): maximise E log sigma(beta (A(X^w) - A(X^l))).
- Per-sample objective (seed 001, eq. 9): maximise E log sigma(gamma_X beta' (r(x) - mu)), gamma_X = +1 for a sample
  of a winning set and -1 for a losing one, mu = alpha E_w[r] + (1 - alpha) E_l[r] from batch statistics (App. A.3).
  ``theory/notes/popalign_bound.md`` proves that it bounds eq. 8 from below for beta' = N beta (density models) or
  beta' = N T beta (diffusion models with a uniform step t), and where App. D's own constant 2 N T beta is loose.
- r for a density model: rho(x) itself (:func:`density_log_ratio`). For a diffusion model, as in Diffusion-DPO and the
  public PopAlign code: r = lambda(t) (||eps - eps_ref(x_t, t)||^2 - ||eps - eps_theta(x_t, t)||^2), each squared
  error a mean over latent elements (:func:`diffusion_log_ratio`).
- Implied population reward accuracy (App. E): the fraction of set pairs with A(X^w) > A(X^l).

:func:`popalign_loss` serves both model kinds unchanged: the toy calls it with exact mixture log-densities or exact
mixture noise predictions, the scale-up with UNet noise predictions.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from theory.denoising import noise_mse
from theory.validation import check_positive_finite

#: beta' (the coefficient of r - mu, called beta there) of the public PopAlign code for SDXL, with r a mean over
#: latent elements.
SDXL_BETA_PRIME = 5000.0


def density_log_ratio(log_prob_theta: torch.Tensor, log_prob_ref: torch.Tensor) -> torch.Tensor:
    """r(x) = log pi_theta(x) - log pi_ref(x) for a model with a tractable density.

    Both log-densities are per sample and must have the same shape: torch would broadcast (B,) against (B, 1) into a
    (B, B) table of every pair, which is never the per-sample ratio.
    """
    _check_tensor(log_prob_theta, "log_prob_theta")
    _check_tensor(log_prob_ref, "log_prob_ref")
    if log_prob_theta.shape != log_prob_ref.shape:
        raise ValueError("log_prob_theta and log_prob_ref must have the same shape, one log-density per sample; "
                         f"got {tuple(log_prob_theta.shape)} and {tuple(log_prob_ref.shape)}")
    return log_prob_theta - log_prob_ref.detach()


def diffusion_log_ratio(
    eps: torch.Tensor, eps_theta: torch.Tensor, eps_ref: torch.Tensor, weight: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Per-sample r = lambda(t) (||eps - eps_ref||^2 - ||eps - eps_theta||^2), MSEs averaged over latent elements.

    The one-step estimate of log pi_theta(x_{t-1} | x_t) / pi_ref(x_{t-1} | x_t) used by Diffusion-DPO and by the public
    PopAlign code (reference MSE minus model MSE). ``weight`` is lambda(t); the public code uses 1.

    Non-finite inputs are not refused here (a check would synchronise a GPU on every step): a NaN or an infinity in
    ``eps``, ``eps_theta``, ``eps_ref`` or ``weight`` gives a non-finite loss and non-finite gradients, and the
    jobs' loop (:func:`scaleup.training.loop.run_training`) skips such a step and stops after ten in a row. Settings
    (weights, coefficients) are checked.
    """
    weight = torch.as_tensor(weight, dtype=eps.dtype, device=eps.device)
    return weight * (noise_mse(eps, eps_ref.detach()) - noise_mse(eps, eps_theta))


def population_margin(set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor) -> torch.Tensor:
    """A(X^w) - A(X^l) = sum_i rho(x^w_i) - sum_i rho(x^l_i) per set pair (seed 001, eq. 8); shape (P,).

    Parameters
    ----------
    set_log_ratio_w, set_log_ratio_l : Tensor of shape (P, N)
        rho of the N samples of each of P winning and P losing sets (pairs share an index).
    """
    _check_sets(set_log_ratio_w, set_log_ratio_l)
    return set_log_ratio_w.sum(dim=1) - set_log_ratio_l.sum(dim=1)


def set_objective(set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor, beta: float) -> torch.Tensor:
    """Per pair log sigma(beta (A(X^w) - A(X^l))), the quantity the population DPO objective averages (seed 001,
    eq. 8); shape (P,). ``beta`` > 0 is eq. 8's divergence penalty (see :func:`population_margin` for the sets)."""
    margin = population_margin(set_log_ratio_w, set_log_ratio_l)
    return F.logsigmoid(check_positive_finite(beta, "beta") * margin)


def population_dpo_loss(set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor, beta: float) -> torch.Tensor:
    """-E log sigma(beta (A(X^w) - A(X^l))), the negated population DPO objective (seed 001, eq. 8).

    The mean over the P set pairs of :func:`set_objective`, negated; ``beta`` > 0 is eq. 8's divergence penalty.
    """
    return -set_objective(set_log_ratio_w, set_log_ratio_l, beta).mean()


def implied_reward_accuracy(set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor) -> float:
    """Fraction of set pairs on which the implied population reward prefers the winner (seed 001, App. E, Fig. 8).

    A pair is counted as correct when A(X^w) = sum_i rho(x^w_i) > A(X^l) = sum_i rho(x^l_i).
    """
    return float((population_margin(set_log_ratio_w, set_log_ratio_l) > 0).double().mean())


def popalign_normaliser(
    r: torch.Tensor,
    is_winner: torch.Tensor,
    alpha: float | torch.Tensor = 0.5,
    *,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """mu = alpha E_w[r] + (1 - alpha) E_l[r] from the batch, detached (seed 001, eq. 9 and App. A.3).

    ``r`` is (B,), or (R, B) for R independent runs sharing the layout ``is_winner`` (B,); then mu has shape (R,) and
    ``alpha`` may be one value per run (R,). ``reduce_mean`` averages a tensor across processes (e.g.
    ``lambda t: accelerator.reduce(t, "mean")``); as in the public PopAlign code, the winner and loser batch means are
    averaged across processes before mu is formed.
    """
    alpha = _per_run(alpha, r, "alpha", "lie in [0, 1]", lambda a: 0.0 <= a <= 1.0)
    winners = _check_labels(r, is_winner)
    if not winners.any() or winners.all():
        raise ValueError("the batch needs samples of both a winning and a losing set to form mu; "
                         f"got {int(winners.sum())} winners of {winners.numel()}")
    means = torch.stack([r.detach()[..., winners].mean(dim=-1), r.detach()[..., ~winners].mean(dim=-1)])
    if reduce_mean is not None:
        means = reduce_mean(means)
    return alpha * means[0] + (1.0 - alpha) * means[1]


def popalign_loss(
    r: torch.Tensor,
    is_winner: torch.Tensor,
    beta_prime: float | torch.Tensor,
    alpha: float | torch.Tensor = 0.5,
    *,
    mu: torch.Tensor | float | None = None,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-sample PopAlign loss -E log sigma(gamma_X beta' (r - mu)) (seed 001, eq. 9), averaged over the batch.

    Parameters
    ----------
    r : Tensor of shape (B,) or (R, B)
        Per-sample log-ratio estimates (:func:`density_log_ratio` or :func:`diffusion_log_ratio`); a leading
        dimension holds R independent runs (seeds, settings) trained side by side, each with its own mu.
    is_winner : bool Tensor of shape (B,)
        True for samples of winning sets (gamma = +1), False for losing sets (gamma = -1); shared by all runs.
    beta_prime : float, or Tensor of shape (R,) for a batch of runs
        The coefficient beta' > 0 multiplying r - mu; not eq. 8's beta (module docstring). For diffusion, what the
        public code calls beta (:data:`SDXL_BETA_PRIME`, 5000 for SDXL).
    alpha : float, or Tensor of shape (R,) for a batch of runs
        Weight of the winners in mu (0.5 in the seed; 0.25 is reported to diverge, 0.75 to lower discrepancy).
    mu : optional
        A fixed normaliser (a scalar, or (R,) for a batch of runs); by default :func:`popalign_normaliser` of the
        batch (detached).
    reduce_mean : optional
        Cross-process mean for the normaliser, see :func:`popalign_normaliser`.

    Returns
    -------
    Tensor
        The scalar loss for r of shape (B,); the loss of every run, shape (R,), for r of shape (R, B). Runs share no
        parameter through the loss, so the sum over runs trains each run exactly as its own loss would.

    Notes
    -----
    Non-finite inputs are not refused here (a check would synchronise a GPU on every step): a NaN or an infinity in
    ``r`` (or a given ``mu``) gives a non-finite loss and non-finite gradients, and the jobs' loop
    (:func:`scaleup.training.loop.run_training`) skips such a step and stops after ten in a row. Settings (weights,
    coefficients) are checked.
    """
    beta_prime = _per_run(beta_prime, r, "beta_prime", "be > 0 and finite", lambda b: 0.0 < b < math.inf)
    winners = _check_labels(r, is_winner)
    if mu is None:
        mu = popalign_normaliser(r, winners, alpha, reduce_mean=reduce_mean)
    if r.ndim == 2:  # one beta', mu per run: columns against the (R, B) log-ratios
        mu = torch.as_tensor(mu, dtype=r.dtype, device=r.device)
        if mu.shape not in ((), (r.shape[0],)):
            raise ValueError(f"mu must be a scalar or have one value per run (shape ({r.shape[0]},)); "
                             f"got shape {tuple(mu.shape)}")
        mu = mu.reshape(-1, 1) if mu.ndim else mu
        beta_prime = beta_prime.reshape(-1, 1) if isinstance(beta_prime, torch.Tensor) else beta_prime
    gamma = winners.to(r.dtype) * 2.0 - 1.0
    return -sample_objective(r, gamma, beta_prime, mu).mean(dim=-1)


def sample_objective(
    r: torch.Tensor, gamma: torch.Tensor | float, beta_prime: torch.Tensor | float, mu: torch.Tensor | float
) -> torch.Tensor:
    """log sigma(gamma_X beta' (r - mu)) per sample, the term eq. 9 of seed 001 averages (elementwise, broadcast).

    gamma_X = +1 for a sample of a winning set, -1 for a losing one. :func:`popalign_loss` averages it over a batch
    and negates it; :func:`jensen_lower_bound` and :func:`split_lower_bound` average it over each set of a pair.
    """
    return F.logsigmoid(gamma * beta_prime * (r - mu))


def _per_run(value: object, r: torch.Tensor, name: str, requirement: str, valid: Callable[[float], bool]
             ) -> float | torch.Tensor:
    """A scalar setting as a float, or, for r of shape (R, B), one value per run as a (R,) tensor of r's dtype.

    One ValueError names ``name``, what was wrong and the ``requirement`` every value must meet.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 1 or isinstance(value, (list, tuple)):
        if not isinstance(r, torch.Tensor) or r.ndim != 2:
            raise ValueError(f"{name} has one value per run, which needs r of shape (R, B); got r of shape "
                             f"{tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__}")
        values = torch.as_tensor(value, dtype=r.dtype, device=r.device)
        if values.shape != (r.shape[0],):
            raise ValueError(f"{name} must be a scalar or have one value per run (shape ({r.shape[0]},)); "
                             f"got shape {tuple(values.shape)}")
        bad = [v for v in values.tolist() if not valid(v)]
        if bad:
            raise ValueError(f"every {name} must {requirement}; got {bad[0]!r}")
        return values
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must {requirement}; got {value!r}") from None
    if not valid(v):  # NaN fails every comparison, so it is refused too
        raise ValueError(f"{name} must {requirement}; got {value!r}")
    return v


def _check_tensor(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"{type(x).__name__}"
        raise ValueError(f"{name} must be a floating-point torch.Tensor (the loss needs its autograd graph); got {got}")


def _check_labels(r: torch.Tensor, is_winner: torch.Tensor) -> torch.Tensor:
    _check_tensor(r, "r")
    if r.ndim not in (1, 2):
        raise ValueError("r must be a 1-D tensor with one log-ratio per sample, or (R, B) for R runs; got shape "
                         f"{tuple(r.shape)}")
    winners = torch.as_tensor(is_winner, device=r.device)
    if winners.shape != r.shape[-1:]:
        raise ValueError(f"is_winner must have one entry per sample (shape {tuple(r.shape[-1:])}), shared by all runs; "
                         f"got {tuple(winners.shape)}")
    if winners.dtype != torch.bool:
        if not torch.isin(winners, torch.tensor([0, 1], device=r.device)).all():
            raise ValueError("is_winner must be boolean (or 0/1)")
        winners = winners.bool()
    return winners


def _check_sets(w: torch.Tensor, l: torch.Tensor) -> None:
    _check_tensor(w, "set_log_ratio_w")
    _check_tensor(l, "set_log_ratio_l")
    if w.ndim != 2 or w.shape != l.shape:
        raise ValueError("set log-ratios must be two tensors of the same shape (P, N): P set pairs of N samples; "
                         f"got {tuple(w.shape)} and {tuple(l.shape)}")


def jensen_lower_bound(
    set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor, beta: float, mu: torch.Tensor | float
) -> torch.Tensor:
    """E_{X, i} log sigma(gamma_X 2 N beta (rho_i - mu)) per pair: App. D's eq. 26 with T = 1; shape (P,).

    The average, over the 2N samples of the pair, of the per-sample terms with beta' = 2 N beta. A lower bound of
    :func:`set_objective` for every mu: the 2N arguments average to beta (A(X^w) - A(X^l)) and log sigma is concave
    (``theory/notes/popalign_bound.md``, Theorem 1). For a diffusion model with T steps replace N by N T.
    """
    _check_sets(set_log_ratio_w, set_log_ratio_l)
    beta = check_positive_finite(beta, "beta")
    winners, losers = _set_means(set_log_ratio_w, set_log_ratio_l, 2 * set_log_ratio_w.shape[1] * beta, mu)
    return 0.5 * (winners + losers)


def split_lower_bound(
    set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor, beta: float, mu: torch.Tensor | float
) -> torch.Tensor:
    """mean_i log sigma(N beta (rho^w_i - mu)) + mean_i log sigma(-N beta (rho^l_i - mu)) per pair; shape (P,).

    The route through sigma(u + v) >= sigma(u) sigma(v) and Jensen on each set (``theory/notes/popalign_bound.md``,
    Theorem 2): also a lower bound of :func:`set_objective` for every mu, never tighter than :func:`jensen_lower_bound`.
    """
    _check_sets(set_log_ratio_w, set_log_ratio_l)
    beta = check_positive_finite(beta, "beta")
    winners, losers = _set_means(set_log_ratio_w, set_log_ratio_l, set_log_ratio_w.shape[1] * beta, mu)
    return winners + losers


def _set_means(set_log_ratio_w: torch.Tensor, set_log_ratio_l: torch.Tensor, beta_prime: float,
               mu: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, :func:`sample_objective` averaged over the winning set (gamma = +1) and over the losing set (-1)."""
    return (sample_objective(set_log_ratio_w, 1.0, beta_prime, mu).mean(dim=1),
            sample_objective(set_log_ratio_l, -1.0, beta_prime, mu).mean(dim=1))
