"""Issue 9: inputs that used to give silently wrong results, or a confusing error, now give one clear ValueError.

Each test names the argument the error must mention; every case here ran without error (or with a TypeError,
IndexError or a self-contradicting message) before the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from theory.popalign import density_log_ratio, jensen_lower_bound, popalign_loss, set_objective, split_lower_bound
from theory.sampler_gradient import (
    AdjustedGradient,
    multistep_coefficients,
    run_sampler,
    scheduler_stepper,
    unrolled_coefficients,
)
from theory.schedules import linear_betas, scaled_linear_betas
from toy.denoisers import MLPDenoiser
from toy.popalign_toy import TrainConfig, reference_mixture
from toy.sampler_chain import finetune, make_sampler

SD = scaled_linear_betas(1000).numpy()


# ------------------------------------------------------------------------------------------ silent wrong results
class _Mixture1D(torch.nn.Module):
    """The 1-D three-component mixture of the PopAlign toy as eps(z (B, 1), abar), as dft-compare uses it."""

    def __init__(self):
        super().__init__()
        self.mixture = reference_mixture(1)

    def forward(self, z: torch.Tensor, abar) -> torch.Tensor:
        abar = torch.as_tensor(abar, dtype=z.dtype).expand(z.shape[0])
        return self.mixture.noise_prediction(z.T, abar[None]).T


def test_finetune_draws_samples_of_the_given_dimension():
    """The mixture's first parameter has last axis 3 (three components); the sample is 1-D. finetune used to guess
    dim = 3 and run three broadcast 1-D chains."""
    model = _Mixture1D()
    assert next(model.parameters()).shape[-1] == 3
    seen = []

    def loss_fn(z0: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(z0.shape))
        return z0.square().mean()

    finetune(model, make_sampler("ddim", SD, 5), loss_fn, "adjusted", dim=1, iterations=2, batch=6, lr=1e-3, seed=0)
    assert seen == [(6, 1), (6, 1)]
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        finetune(model, make_sampler("ddim", SD, 5), loss_fn, "adjusted", dim=0, iterations=1, batch=2, lr=1e-3, seed=0)


def test_run_sampler_refuses_a_noise_prediction_of_another_shape():
    with pytest.raises(ValueError, match=r"eps_model returned shape \(4, 3\) for a state of shape \(4, 1\)"):
        run_sampler(lambda z, i: z.expand(4, 3), torch.zeros(4, 1), lambda e, z, i: z - 0.1 * e, 3,
                    AdjustedGradient("exact"))


def test_density_log_ratio_refuses_mismatched_shapes():
    """(4,) against (4, 1) used to broadcast into a (4, 4) table of every pair."""
    with pytest.raises(ValueError, match=r"same shape.*\(4,\) and \(4, 1\)"):
        density_log_ratio(torch.zeros(4), torch.zeros(4, 1))
    torch.testing.assert_close(density_log_ratio(torch.ones(4), torch.zeros(4)), torch.ones(4))


@pytest.mark.parametrize("n_scales", [5, 50])
def test_run_sampler_refuses_scales_built_for_another_number_of_steps(n_scales):
    """50 scales used to run the first 10 (standardised over all 50); 5 scales died with an IndexError."""
    gradient = AdjustedGradient("adjusted", np.linspace(1.0, 2.0, n_scales))
    assert gradient.n_steps == n_scales
    with pytest.raises(ValueError, match=f"built for {n_scales} sampler steps.*n_steps = 10"):
        run_sampler(lambda z, i: z, torch.zeros(1), lambda e, z, i: z - 0.1 * e, 10, gradient)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("DDPMScheduler", {"clip_sample": False}),
        ("EulerAncestralDiscreteScheduler", {}),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
        ("KDPM2AncestralDiscreteScheduler", {}),
    ],
)
def test_scheduler_stepper_refuses_stochastic_schedulers(name, config):
    """Two identical steps of these differ (fresh noise in ``step``); the probe leaves the global RNG untouched."""
    import diffusers

    state = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=f"{name} is stochastic"):
        scheduler_stepper(getattr(diffusers, name)(**config), 10)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize(
    ("name", "config"),
    [("DDIMScheduler", {"clip_sample": False}), ("DPMSolverMultistepScheduler", {}), ("EulerDiscreteScheduler", {})],
)
def test_scheduler_stepper_accepts_deterministic_schedulers(name, config):
    import diffusers

    step = scheduler_stepper(getattr(diffusers, name)(**config), 10)
    z = torch.ones(1, 4, 2, 2)
    assert torch.equal(step(torch.zeros_like(z), z, 0), scheduler_stepper(getattr(diffusers, name)(**config), 10)(
        torch.zeros_like(z), z, 0))


@pytest.mark.parametrize("fn", [set_objective, jensen_lower_bound, split_lower_bound])
@pytest.mark.parametrize("beta", [0.0, -1.0, float("inf"), float("nan")])
def test_popalign_bounds_refuse_beta_outside_zero_infinity(fn, beta):
    w = l = torch.zeros(2, 3)
    args = (w, l, beta) if fn is set_objective else (w, l, beta, 0.0)
    with pytest.raises(ValueError, match="beta must be > 0 and finite"):
        fn(*args)


def test_popalign_loss_refuses_infinite_beta_prime():
    with pytest.raises(ValueError, match="beta_prime must be > 0 and finite"):
        popalign_loss(torch.zeros(4), torch.tensor([True, False, True, False]), float("inf"))


@pytest.mark.parametrize("n_samples", [2.9, 1000.0, "1000", True])
def test_expected_ot_targets_refuses_non_integer_n_samples(n_samples):
    from theory.optimal_transport import expected_ot_targets

    with pytest.raises(ValueError, match="n_samples"):
        expected_ot_targets(np.full((4, 3), 1 / 3), [1 / 3] * 3, method="mc", n_samples=n_samples, seed=0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: run_sampler(lambda z, i: z, torch.zeros(1), lambda e, z, i: z, -3, AdjustedGradient("exact")), "n_steps"),
        (lambda: unrolled_coefficients(lambda e, z, i: z - e, -2), "n_steps"),
        (lambda: multistep_coefficients(lambda e, z, i: z - e, -1), "n_steps"),
        (lambda: scheduler_stepper(__import__("diffusers").DDIMScheduler(clip_sample=False), -1), "n_steps"),
        (lambda: make_sampler("ddim", SD, -5), "n_steps"),
        (lambda: finetune(MLPDenoiser(1, 4), make_sampler("ddim", SD, 3), lambda z: z.sum(), "exact", dim=1,
                          iterations=-1, batch=2, lr=1e-3, seed=0), "iterations"),
        (lambda: MLPDenoiser(1, 4).fit(torch.zeros(8, 1), torch.full((10,), 0.5), steps=-1), "steps"),
        (lambda: TrainConfig(steps=-10), "TrainConfig.steps"),
        (lambda: linear_betas(-4), "num_steps"),
        (lambda: linear_betas(2.9), "num_steps"),
    ],
)
def test_negative_step_counts_are_refused(call, name):
    """Each used to run range(-n) = no steps and return as if it had run."""
    with pytest.raises(ValueError, match=f"{name} must be an integer >= "):
        call()


def test_platt_calibration_refuses_negative_iterations():
    from toy.audit_features import platt_calibrate

    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        platt_calibrate(np.zeros(4), np.array([0.0, 1.0, 0.0, 1.0]), iterations=-1)


def test_scheduler_probe_is_cached_per_class_config_and_steps():
    """The determinism probe runs once per (class, config, n_steps): a training loop builds a stepper per chain."""
    from diffusers import DDIMScheduler

    from theory.sampler_gradient import _DETERMINISTIC_SCHEDULERS

    before = len(_DETERMINISTIC_SCHEDULERS)
    for _ in range(3):
        scheduler_stepper(DDIMScheduler(clip_sample=False, num_train_timesteps=999), 7)
    assert len(_DETERMINISTIC_SCHEDULERS) == before + 1


# ------------------------------------------------------------------------------------------ clear errors, one line
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_dal_loss_refuses_integer_and_bool_logits(dtype):
    from theory.dal import dal_loss

    with pytest.raises(ValueError, match=f"logits must be a floating-point tensor.*{dtype}"):
        dal_loss(torch.zeros(4, 2, dtype=dtype), [0.5, 0.5], 0.8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_dal_loss_reports_non_finite_logits_as_logits(bad):
    """NaN logits used to be reported as "probs contains NaN", an argument the caller never passed."""
    from theory.dal import dal_loss

    logits = torch.zeros(3, 2)
    logits[1, 0] = bad
    with pytest.raises(ValueError, match=r"^logits contains NaN or infinite values \(first in row 1\)"):
        dal_loss(logits, [0.5, 0.5], 0.8)


def test_popalign_loss_refuses_numpy_r():
    with pytest.raises(ValueError, match="r must be a floating-point torch.Tensor.*ndarray"):
        popalign_loss(np.zeros(4), torch.tensor([True, False, True, False]), 1.0)


def test_scheduler_stepper_refuses_zero_steps():
    from diffusers import DDIMScheduler

    with pytest.raises(ValueError, match="n_steps must be an integer >= 1; got 0"):
        scheduler_stepper(DDIMScheduler(clip_sample=False), 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros(0), np.zeros(0), [], []), "jacobians is empty"),
        ((np.zeros(3), np.zeros(3), [np.eye(2)] * 2, [np.zeros((2, 4))] * 3), "jacobians = 2.*eps_grads = 3"),
        ((np.zeros(2), np.zeros(3), [np.eye(2)] * 2, [np.zeros((2, 4))] * 2), "k = 2, jacobian_coefficients = 3"),
        ((np.zeros(2), np.zeros(2), [np.eye(2), np.eye(3)], [np.zeros((2, 4))] * 2), r"jacobians\[1\] has shape"),
        ((np.zeros(2), np.zeros(2), [np.eye(2)] * 2, [np.zeros((2, 4)), np.zeros((2, 5))]), r"eps_grads\[1\] has shape"),
    ],
)
def test_eq9_gradient_refuses_empty_or_mismatched_lists(args, message):
    """These used to end in an IndexError (or a silent zip truncation)."""
    from theory.sampler_gradient import eq9_gradient, recursive_chain_gradient

    with pytest.raises(ValueError, match=message):
        eq9_gradient(*args)
    if message == "jacobians is empty":
        with pytest.raises(ValueError, match=message):
            recursive_chain_gradient([], [], [])


@pytest.mark.parametrize("seed", [1.5, "1", -1, True])
def test_expected_ot_targets_refuses_bad_seeds(seed):
    """A float or string seed used to raise numpy's TypeError from SeedSequence."""
    from theory.optimal_transport import expected_ot_targets

    with pytest.raises(ValueError, match="seed must be"):
        expected_ot_targets(np.full((4, 3), 1 / 3), [1 / 3] * 3, method="mc", n_samples=10, seed=seed)


def test_dal_targets_refuses_bad_seed_with_groups():
    from theory.dal import dal_targets

    with pytest.raises(ValueError, match="seed must be"):
        dal_targets(np.full((4, 3), 1 / 3), [1 / 3] * 3, 0.5, groups=[0, 0, 1, 1], seed=0.5)


def test_metric_messages_do_not_contradict_themselves():
    """``symmetric_score_kl([], [])`` said "protected must be ... with length 0; got shape (0,)";
    ``class_frequencies([0, 0], 0)`` said "labels must be integers in [0, -1]"."""
    from theory.metrics import class_frequencies, symmetric_score_kl

    with pytest.raises(ValueError, match=r"^scores must be a non-empty 1-D array.*got shape \(0,\)$"):
        symmetric_score_kl([], [])
    with pytest.raises(ValueError, match=r"^n_classes must be an integer >= 1; got 0$"):
        class_frequencies([0, 0], 0)
    with pytest.raises(ValueError, match=r"protected must be a 1-D array with length 3"):
        symmetric_score_kl([0.1, 0.2, 0.3], [0, 1])


@pytest.mark.parametrize("n", [3000, 199_998])
def test_exact_method_bounds_the_work_and_refuses_in_milliseconds(n):
    """N = 3000, K = 2 ran for ~14 minutes; N = 199,998 raised a MemoryError. Both are refused before any work."""
    import time

    from theory.optimal_transport import EXACT_MAX_WORK, exact_work, expected_ot_targets

    probs = np.column_stack([np.linspace(0.01, 0.99, n), 1 - np.linspace(0.01, 0.99, n)])
    assert exact_work(n, 2) == (n + 1) * n * n > EXACT_MAX_WORK
    start = time.perf_counter()
    with pytest.raises(ValueError, match="method='mc'.*method='binary'"):
        expected_ot_targets(probs, [0.5, 0.5], method="exact")
    assert time.perf_counter() - start < 1.0


def test_exact_work_bound_keeps_the_cases_it_should_run():
    from theory.optimal_transport import EXACT_MAX_WORK, exact_work, expected_ot_targets

    assert exact_work(24, 4) <= EXACT_MAX_WORK  # seed 000's race setting, N = 24 with K = 4
    q = expected_ot_targets(np.full((6, 3), 1 / 3), [0.5, 0.3, 0.2], method="exact", max_work=6**2 * 28)
    np.testing.assert_allclose(q.sum(axis=0), 6 * np.array([0.5, 0.3, 0.2]), rtol=1e-12)
    with pytest.raises(ValueError, match="max_work = 1e\\+03"):
        expected_ot_targets(np.full((6, 3), 1 / 3), [0.5, 0.3, 0.2], method="exact", max_work=1000)
