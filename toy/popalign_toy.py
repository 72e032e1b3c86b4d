"""PopAlign vs SFT on the 1-D Gaussian mixture (seed 001, Sec. 4 Fig. 3, App. H Fig. 11-13).

Reference P_ref: w = softmax(1, 0, -1), means (-7, 0, 7), stds 1. G1 and G3 play the two classes of a sensitive
attribute (G3 under-represented), G2 unrelated content. Preference data: winning sets drawn from G1/G3 in the target
proportions, losing sets from the reference restricted to G1/G3; no G2 samples anywhere.

Both methods train the same mixture parameters theta = (w, m, s) in one of two parameterisations:

- ``"density"``: r(x) = log P_theta(x) - log P_ref(x) exactly; SFT is maximum likelihood on the winners.
- ``"diffusion"``: the mixture's exact noise predictor (:mod:`toy.gaussian_mixture`) under the DDPM forward process
  with T = 1000 linear betas; r is the Diffusion-DPO one-step estimate (reference MSE - model MSE at a uniform t)
  and SFT is the denoising loss on the winners.

The losses are :func:`theory.popalign.popalign_loss` and :func:`theory.denoising.denoising_loss`, unchanged.
Several runs (seeds, targets, beta' and alpha values) train side by side as the batch dimension of one mixture. The
toy's beta (Fig. 12 of the seed) is beta', the coefficient of r - mu in eq. 9: the ``beta_prime`` of
:func:`theory.popalign.popalign_loss`. Each run draws its data and noise from its own stream, keyed by the run seed
and its target (:func:`stream_seeds`), so a setting trains bit-identically in every sweep that contains it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from theory.denoising import denoising_loss
from theory.ddpm import ddpm_sample, forward_noise
from theory.metrics import discrepancy
from theory.popalign import density_log_ratio, diffusion_log_ratio, implied_reward_accuracy, popalign_loss
from theory.schedules import alphas_cumprod, linear_betas
from theory.validation import check_count
from toy.gaussian_mixture import GaussianMixture1D

REFERENCE_LOGITS = (1.0, 0.0, -1.0)
REFERENCE_MEANS = (-7.0, 0.0, 7.0)
REFERENCE_STDS = (1.0, 1.0, 1.0)
G1, G2, G3 = 0, 1, 2

Method = Literal["popalign", "sft"]
Parameterisation = Literal["density", "diffusion"]


def reference_mixture(n_runs: int = 1) -> GaussianMixture1D:
    """P_ref of seed 001, Sec. 4, repeated for ``n_runs`` runs."""
    return GaussianMixture1D(reference_weights(), REFERENCE_MEANS, REFERENCE_STDS, n_runs=n_runs)


def reference_weights() -> torch.Tensor:
    """w = softmax(REFERENCE_LOGITS) of P_ref (seed 001, Sec. 4), float64."""
    return torch.softmax(torch.tensor(REFERENCE_LOGITS, dtype=torch.float64), dim=0)


@dataclass(frozen=True)
class PreferenceData:
    """Winning and losing samples of each run, shape (R, n_per_side); consecutive ``set_size`` samples form a set."""

    winners: torch.Tensor
    losers: torch.Tensor
    set_size: int

    @property
    def n_runs(self) -> int:
        return self.winners.shape[0]


def preference_data(
    target_g1_share: torch.Tensor, *, n_samples: int = 1000, set_size: int = 10, generator: torch.Generator
) -> PreferenceData:
    """The population-level preference data of seed 001, Sec. 4: ``n_samples`` in all, half winning, half losing.

    Winning samples come from G1 and G3 of the reference with exactly round(target * n) of them from G1 (so the
    winning sets carry the target proportion without sampling noise); losing samples are iid from the reference
    restricted to G1/G3. No sample comes from G2.
    """
    target = torch.as_tensor(target_g1_share, dtype=torch.float64).reshape(-1)
    if ((target < 0) | (target > 1)).any():
        raise ValueError(f"target G1 shares must lie in [0, 1]; got {target.tolist()}")
    per_side = n_samples // 2
    if per_side % set_size or per_side == 0:
        raise ValueError(f"n_samples / 2 = {per_side} must be a positive multiple of set_size = {set_size}")
    ref_w = reference_weights()
    means = torch.tensor(REFERENCE_MEANS, dtype=torch.float64)
    stds = torch.tensor(REFERENCE_STDS, dtype=torch.float64)
    winners, losers = [], []
    for share in target.tolist():
        n_g1 = round(share * per_side)
        comp_w = torch.tensor([G1] * n_g1 + [G3] * (per_side - n_g1))[torch.randperm(per_side, generator=generator)]
        loser_g1 = float(ref_w[G1] / (ref_w[G1] + ref_w[G3]))
        comp_l = torch.where(torch.rand(per_side, generator=generator, dtype=torch.float64) < loser_g1, G1, G3)
        for comp, out in ((comp_w, winners), (comp_l, losers)):
            out.append(means[comp] + stds[comp] * torch.randn(per_side, generator=generator, dtype=torch.float64))
    return PreferenceData(torch.stack(winners), torch.stack(losers), set_size)


@dataclass(frozen=True)
class TrainConfig:
    """How to train the mixture (one setting shared by all runs, except the per-run ``beta_primes`` and ``alphas``)."""

    method: Method = "popalign"
    parameterisation: Parameterisation = "diffusion"
    steps: int = 3000
    lr: float = 0.02
    diffusion_steps: int = 1000
    log_every: int = 100

    def __post_init__(self) -> None:
        # the cosine learning-rate decay divides by steps; a negative count would silently train nothing
        for name in ("steps", "diffusion_steps", "log_every"):
            check_count(getattr(self, name), f"TrainConfig.{name}", minimum=1)


@dataclass
class TrainResult:
    model: GaussianMixture1D
    steps: list[int] = field(default_factory=list)
    reward_accuracy: list[list[float]] = field(default_factory=list)  # [log step][run]
    final_change: list[float] = field(default_factory=list)  # max |delta w| over the last 10% of steps, per run


def log_ratio_sets(
    model: GaussianMixture1D, ref: GaussianMixture1D, data: PreferenceData
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact rho(x) = log P_theta(x) - log P_ref(x) of every winning and losing sample, as (R, P, N) set tensors.

    Run r's P winning and P losing sets of N = ``data.set_size`` samples (seed 001, eq. 8), without gradient: the
    inputs of :func:`theory.popalign.implied_reward_accuracy` and the bounds of :mod:`theory.popalign`.
    """
    with torch.no_grad():
        rho_w = model.log_prob(data.winners) - ref.log_prob(data.winners)
        rho_l = model.log_prob(data.losers) - ref.log_prob(data.losers)
    shape = (data.n_runs, -1, data.set_size)
    return rho_w.reshape(shape), rho_l.reshape(shape)


class MixtureModel(Protocol):
    """What :func:`train` needs of a batch of R mixtures: exact log-densities and noise predictions, shape (R, B)."""

    weights: torch.Tensor

    def log_prob(self, x: torch.Tensor, abar: torch.Tensor | float = 1.0) -> torch.Tensor: ...

    def noise_prediction(self, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor: ...

    def parameters(self): ...


def train(
    data: PreferenceData,
    config: TrainConfig,
    *,
    beta_primes: torch.Tensor | float = 1.0,
    alphas: torch.Tensor | float = 0.5,
    generator: torch.Generator | Sequence[torch.Generator],
    progress: bool = False,
    model: MixtureModel | None = None,
    reference: MixtureModel | None = None,
) -> TrainResult:
    """Train one mixture per run from the reference with PopAlign (eq. 9) or SFT; returns the trained mixtures.

    Adam with a cosine learning-rate decay to zero, so that the stochastic diffusion losses settle; full batch of
    the preference data at every step (for diffusion with a fresh t ~ U{0..T-1} and eps per sample).

    ``generator`` is one generator for all runs, or one per run: then run r's diffusion noise is drawn from its own
    stream only, so a run trains bit-identically whatever other runs share its batch (:func:`sweep`). ``model`` and
    ``reference`` (default: :func:`reference_mixture`) are any batch of R mixtures with the interface of
    :class:`~toy.gaussian_mixture.GaussianMixture1D` (e.g. one prompt of :mod:`toy.popalign_conditional`).
    """
    runs = data.n_runs
    beta_primes = torch.as_tensor(beta_primes, dtype=torch.float64).expand(runs)
    alphas = torch.as_tensor(alphas, dtype=torch.float64).expand(runs)
    generators = None if isinstance(generator, torch.Generator) else list(generator)
    if generators is not None and len(generators) != runs:
        raise ValueError(f"generator must be one torch.Generator or a sequence of one per run ({runs}); "
                         f"got {len(generators)}")
    ref = (reference_mixture(runs) if reference is None else reference).requires_grad_(False)
    model = reference_mixture(runs) if model is None else model
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: 0.5 * (1 + math.cos(math.pi * k / config.steps)))
    abar = alphas_cumprod(linear_betas(config.diffusion_steps))
    x0 = torch.cat([data.winners, data.losers], dim=1)
    is_winner = torch.cat([torch.ones_like(data.winners[0]), torch.zeros_like(data.losers[0])]).bool()
    n_w = data.winners.shape[1]
    result = TrainResult(model)
    weights_tail_start = None

    for step in tqdm(range(config.steps + 1), disable=not progress, desc=f"{config.method}/{config.parameterisation}"):
        if step % config.log_every == 0 or step == config.steps:
            rho_w, rho_l = log_ratio_sets(model, ref, data)
            result.steps.append(step)
            result.reward_accuracy.append([implied_reward_accuracy(rho_w[i], rho_l[i]) for i in range(runs)])
        if step == int(0.9 * config.steps):
            weights_tail_start = model.weights.detach().clone()
        if step == config.steps:
            break
        if config.parameterisation == "density":
            if config.method == "sft":
                loss = -model.log_prob(data.winners).mean(dim=1).sum()
            else:
                r = density_log_ratio(model.log_prob(x0), ref.log_prob(x0))
        else:
            t, eps = _diffusion_noise(generator if generators is None else generators, x0.shape,
                                      config.diffusion_steps)
            x_t = forward_noise(x0, eps, abar[t])
            eps_theta = model.noise_prediction(x_t, abar[t])
            if config.method == "sft":
                loss = sum(denoising_loss(eps[i, :n_w], eps_theta[i, :n_w]) for i in range(runs))
            else:
                with torch.no_grad():
                    eps_ref = ref.noise_prediction(x_t, abar[t])
                # every (run, sample) is one 1-D sample: a latent of a single element
                r = diffusion_log_ratio(eps.reshape(-1, 1), eps_theta.reshape(-1, 1),
                                        eps_ref.reshape(-1, 1)).reshape(runs, -1)
        if config.method == "popalign":
            loss = popalign_loss(r, is_winner, beta_primes, alphas).sum()  # runs share no parameter
        elif config.method != "sft":
            raise ValueError(f"method must be 'popalign' or 'sft'; got {config.method!r}")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()

    result.final_change = (model.weights.detach() - weights_tail_start).abs().max(dim=1).values.tolist()
    return result


def _diffusion_noise(generators: torch.Generator | list[torch.Generator], shape: torch.Size, steps: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """t ~ U{0..steps-1} and eps ~ N(0, 1) of shape (R, B): from one generator, or row r from generator r."""
    if isinstance(generators, torch.Generator):
        return (torch.randint(0, steps, shape, generator=generators),
                torch.randn(shape, generator=generators, dtype=torch.float64))
    rows = [(torch.randint(0, steps, shape[1:], generator=g), torch.randn(shape[1:], generator=g, dtype=torch.float64))
            for g in generators]
    return torch.stack([t for t, _ in rows]), torch.stack([e for _, e in rows])


def summarise(model: GaussianMixture1D, target_g1_share: torch.Tensor) -> list[dict]:
    """Per run: (w, m, s), the G1 share within G1 + G3, the G2 weight and the discrepancy (seed 001, eq. 11)."""
    w = model.weights.detach()
    target = torch.as_tensor(target_g1_share, dtype=torch.float64).expand(w.shape[0])
    out = []
    for i in range(w.shape[0]):
        g1_share = float(w[i, G1] / (w[i, G1] + w[i, G3]))
        out.append({
            "weights": w[i].tolist(), "means": model.means[i].detach().tolist(), "stds": model.stds[i].detach().tolist(),
            "g1_share": g1_share, "g2_weight": float(w[i, G2]),
            # the sensitive attribute's expected class probabilities among G1/G3 samples vs the target's
            "discrepancy": discrepancy([[g1_share, 1 - g1_share]], [float(target[i]), 1 - float(target[i])]),
        })
    return out


def generate(model: GaussianMixture1D, n: int, parameterisation: Parameterisation, *, generator: torch.Generator,
             diffusion_steps: int = 1000) -> torch.Tensor:
    """Samples of the trained model, shape (R, n): exact mixture samples, or the DDPM ancestral sampler driven by the
    mixture's exact noise predictor."""
    if parameterisation == "density":
        return model.sample(n, generator)
    z_T = torch.randn(model.logits.shape[0], n, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        return ddpm_sample(model.noise_prediction, z_T, linear_betas(diffusion_steps), generator)


def run_mixture(model: GaussianMixture1D, run: int) -> GaussianMixture1D:
    """Run ``run`` of a batch as a batch of one (a copy without gradient), e.g. to sample it from its own stream."""
    with torch.no_grad():
        return GaussianMixture1D(model.weights[run], model.means[run], model.stds[run])


def kl_to_reference(model: GaussianMixture1D, *, lo: float = -25.0, hi: float = 25.0, points: int = 20001,
                    reference: GaussianMixture1D | None = None) -> list[float]:
    """KL(P_theta || P_ref) of every run by the trapezoidal rule on [lo, hi] (all mass of these mixtures lies inside).

    ``reference`` is a batch of one mixture, by default :func:`reference_mixture`."""
    grid = torch.linspace(lo, hi, points, dtype=torch.float64).expand(model.logits.shape[0], -1)
    with torch.no_grad():
        log_p = model.log_prob(grid)
        log_ref = (reference_mixture(1) if reference is None else reference).log_prob(grid[:1]).expand_as(log_p)
        return torch.trapezoid(log_p.exp() * (log_p - log_ref), grid, dim=1).tolist()


@dataclass(frozen=True)
class Setting:
    """One cell of a sweep: the target G1 share, beta' (the coefficient of r - mu, eq. 9) and alpha."""

    target: float = 0.5
    beta_prime: float = 1.0
    alpha: float = 0.5


@dataclass(frozen=True)
class SweepResult:
    """Per-setting aggregates, the trained batch of mixtures (run k * seeds + j is setting k, seed j) and the
    preference data each run was fit to."""

    settings: list[dict]
    model: GaussianMixture1D
    seeds: int
    data: PreferenceData


def target_key(target: float) -> int:
    """The target G1 share as an integer spawn key: its IEEE-754 bits, so that equal targets and only they agree."""
    return int.from_bytes(struct.pack(">d", float(target)), "big")


def stream_seeds(seed: int, target: float, seeds: int) -> list[int]:
    """The streams of the ``seeds`` repeats of a setting with this target: SeedSequence(seed, spawn_key=(key,)).spawn.

    Keyed by the target alone, so every setting with the same target (any beta', alpha, method, parameterisation)
    draws the same preference data and diffusion noise in repeat j: sweeps compare settings on common random numbers,
    and one setting is the same run in every sweep that contains it. Each child is reduced to one 32-bit word.
    """
    parent = np.random.SeedSequence(seed, spawn_key=(target_key(target),))
    return [int(child.generate_state(1)[0]) for child in parent.spawn(seeds)]


def sweep(
    settings: list[Setting], seeds: int, config: TrainConfig, *, seed: int = 0, n_samples: int = 1000,
    set_size: int = 10, progress: bool = False, model: Callable[[int], GaussianMixture1D] = reference_mixture,
    reference: Callable[[int], GaussianMixture1D] = reference_mixture,
) -> SweepResult:
    """Train every setting for ``seeds`` independent data draws in one batched run; aggregate per setting.

    Repeat j of a setting draws its preference data, then its diffusion noise, from one generator seeded by
    :func:`stream_seeds`; runs share no random stream and no parameter, so each run is bit-identical to the same
    setting trained alone or in any other sweep (``tests/test_popalign_toy.py``). Returns, per setting, the mean and
    standard deviation over seeds of the G1 share, G2 weight, discrepancy and KL to the reference, the mean
    parameters, the per-seed summaries and the reward-accuracy curve (mean, sd, min, max). ``model`` and
    ``reference`` build the R trained and the R frozen mixtures (default :func:`reference_mixture`; e.g. one prompt
    of :mod:`toy.popalign_conditional`).
    """
    if seeds < 1 or not settings:
        raise ValueError(f"need at least one setting and one seed; got {len(settings)} settings, {seeds} seeds")
    cells = [s for s in settings for _ in range(seeds)]
    generators = [torch.Generator().manual_seed(stream) for s in settings for stream in stream_seeds(seed, s.target, seeds)]
    targets = torch.tensor([c.target for c in cells], dtype=torch.float64)
    runs = [preference_data(targets[i:i + 1], n_samples=n_samples, set_size=set_size, generator=g)
            for i, g in enumerate(generators)]
    data = PreferenceData(torch.cat([d.winners for d in runs]), torch.cat([d.losers for d in runs]), set_size)
    result = train(data, config, beta_primes=torch.tensor([c.beta_prime for c in cells], dtype=torch.float64),
                   alphas=torch.tensor([c.alpha for c in cells], dtype=torch.float64), generator=generators,
                   progress=progress, model=model(len(cells)), reference=reference(len(cells)))
    per_run = summarise(result.model, targets)
    kls = kl_to_reference(result.model, reference=reference(1))
    accuracy = torch.tensor(result.reward_accuracy, dtype=torch.float64)  # (log steps, runs)
    out = []
    for k, setting in enumerate(settings):
        idx = list(range(k * seeds, (k + 1) * seeds))
        runs = [dict(per_run[i], kl_to_reference=kls[i], final_weight_change=result.final_change[i]) for i in idx]
        agg = {"target": setting.target, "beta_prime": setting.beta_prime, "alpha": setting.alpha, "seeds": seeds,
               "runs": runs}
        for key in ("g1_share", "g2_weight", "discrepancy", "kl_to_reference"):
            values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
            agg[key] = float(values.mean())
            agg[f"{key}_std"] = float(values.std()) if seeds > 1 else 0.0
        for key in ("weights", "means", "stds"):
            agg[key] = torch.tensor([r[key] for r in runs], dtype=torch.float64).mean(dim=0).tolist()
        acc = accuracy[:, idx]
        agg["reward_accuracy"] = {"steps": result.steps, "mean": acc.mean(dim=1).tolist(),
                                  "sd": (acc.std(dim=1) if seeds > 1 else torch.zeros_like(acc[:, 0])).tolist(),
                                  "min": acc.min(dim=1).values.tolist(), "max": acc.max(dim=1).values.tolist()}
        out.append(agg)
    return SweepResult(out, result.model, seeds, data)
