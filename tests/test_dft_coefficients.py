"""The dft-coefficients experiment (seed 000, Algorithm A.1 vs the sampler's own C_i): its quick run, with the
coefficient vectors it records checked against independent float64 computations from the scheduler's betas."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.dft_coefficients import EXPERIMENTS, SD_BETAS, sd_scheduler
from experiments.experiment import RunContext
from theory.sampler_gradient import COEFFICIENTS, dpm_solver_pp_2m_stepper, unrolled_coefficients


def _standardised_inverse(a: np.ndarray) -> np.ndarray:
    c = 1.0 / np.abs(a)
    return c / np.exp(np.log(c).mean())


def _alphas_cumprod_float64(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(betas, abar) recomputed in float64 numpy from the scheduler's betas (diffusers stores float32 betas and a
    float32 cumprod; the cumprod is redone here, the betas are the scheduler's)."""
    betas = sd_scheduler(kind).betas.double().numpy()
    return betas, np.cumprod(1.0 - betas)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    experiment = EXPERIMENTS[0]
    out = tmp_path_factory.mktemp("dft-coefficients")
    ctx = RunContext(name=experiment.name, out_dir=out, seed=5, quick=True)
    cfg = experiment.make_config(True)
    return cfg, experiment.run(cfg, ctx), out


def test_module_exports_the_experiment():
    assert [e.name for e in EXPERIMENTS] == ["dft-coefficients"]


def test_scheduler_betas_are_the_sd_schedule():
    # scaled_linear: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 (SD's config), independent of theory.schedules
    expected = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2
    np.testing.assert_allclose(SD_BETAS, expected, rtol=1e-12)
    for kind in ("ddim", "dpmsolver++"):
        np.testing.assert_allclose(_alphas_cumprod_float64(kind)[0], expected, rtol=1e-7)  # float32 storage


def test_algorithm_a1_vectors_are_c_over_sqrt_abar_at_the_visited_timesteps(quick_run):
    cfg, results, _ = quick_run
    for kind in cfg.samplers:
        betas, abar = _alphas_cumprod_float64(kind)
        for n in cfg.step_counts:
            v = results["coefficient_vectors"][f"{kind}/{n}"]
            probe = sd_scheduler(kind)
            probe.set_timesteps(n)
            t = probe.timesteps.numpy().astype(int)
            assert v["timesteps"] == t.tolist() and len(t) == n
            c_t = betas[t] / np.sqrt(1.0 - abar[t])  # the eps coefficient c_t of the DDPM step (seed 000, [0110])
            # diffusers' float32 cumprod: 1 - abar is ~1e-3 at t = 0, so ~2e-5 relative there
            np.testing.assert_allclose(v["algorithm_a1"], _standardised_inverse(c_t / np.sqrt(abar[t])), rtol=3e-5)
            np.testing.assert_allclose(np.exp(np.mean(np.log(v["algorithm_a1"]))), 1.0, rtol=1e-12)
            np.testing.assert_allclose(v["ratio"], np.asarray(v["algorithm_a1"]) / np.asarray(v["sampler"]),
                                       rtol=1e-12)


def test_ddim_sampler_vectors_are_differences_of_sigma_over_alpha(quick_run):
    """DDIM (eta = 0, final abar 1) telescopes: z_0 = z_T / sqrt(abar_T) - sum_i (s_i - s_{i+1}) eps_i with
    s = sqrt((1 - abar) / abar), so A_i = s(t_i) - s(t_{i+1}) and s = 0 after the last step."""
    cfg, results, _ = quick_run
    _, abar = _alphas_cumprod_float64("ddim")
    for n in cfg.step_counts:
        v = results["coefficient_vectors"][f"ddim/{n}"]
        s = np.sqrt((1.0 - abar[v["timesteps"]]) / abar[v["timesteps"]])
        np.testing.assert_allclose(v["sampler"], _standardised_inverse(s - np.append(s[1:], 0.0)), rtol=3e-5)


def test_sampler_vectors_equal_minus_unrolled_coefficients(quick_run):
    """Both samplers: -k_i read off by autograd through an independent float64 chain (DDIM: the closed-form step;
    DPM-Solver++(2M): theory's float64 solver, not diffusers' float32 step that from_scheduler unrolls)."""
    cfg, results, _ = quick_run
    for kind in cfg.samplers:
        _, abar = _alphas_cumprod_float64(kind)
        for n in cfg.step_counts:
            v = results["coefficient_vectors"][f"{kind}/{n}"]
            abars = np.append(abar[v["timesteps"]], 1.0)
            if kind == "ddim":
                def step(eps, z, i, abars=abars):
                    x0 = (z - np.sqrt(1.0 - abars[i]) * eps) / np.sqrt(abars[i])
                    return np.sqrt(abars[i + 1]) * x0 + np.sqrt(1.0 - abars[i + 1]) * eps
            else:
                step = dpm_solver_pp_2m_stepper(abars)
            k, _ = unrolled_coefficients(step, n)
            np.testing.assert_allclose(v["sampler"], _standardised_inverse(-k), rtol=1e-4)


def test_results_carry_both_choices_for_every_seed_paired(quick_run):
    cfg, results, out = quick_run
    json.dumps(results, allow_nan=False)  # strict JSON, as results.json is written
    assert {(r["sampler"], r["optimiser"]) for r in results["training"]} == {
        (k, o) for k in cfg.samplers for o, _ in cfg.optimisers}
    for row in results["training"]:
        curves = results["curves_per_seed"][row["sampler"]][row["optimiser"]]
        assert set(curves) == set(COEFFICIENTS)
        for c in COEFFICIENTS:
            assert len(curves[c]) == cfg.seeds and all(len(run) == cfg.iterations for run in curves[c])
            assert len(row["final_loss_per_seed"][c]) == cfg.seeds
            tail = max(1, cfg.iterations // 10)
            np.testing.assert_allclose(row["final_loss_per_seed"][c], [np.mean(run[-tail:]) for run in curves[c]],
                                       rtol=1e-12)
            np.testing.assert_allclose(row["final_loss_mean"][c], np.mean(row["final_loss_per_seed"][c]), rtol=1e-12)
        # paired: the first loss is taken before any update, on the same mixture and batch for both choices
        np.testing.assert_array_equal([run[0] for run in curves["algorithm_a1"]], [run[0] for run in curves["sampler"]])
        # and training moved both (different gradients after the first step give different curves)
        assert curves["algorithm_a1"][0][-1] != curves["sampler"][0][-1]
        assert row["verdict"] in results["verdicts"] and row["optimiser"].upper() in row["verdict"]
    import dataclasses

    import matplotlib.pyplot as plt

    loaded = json.loads(json.dumps({**results, "config": dataclasses.asdict(cfg)}))  # what plot reads back
    figures = EXPERIMENTS[0].plot(loaded)
    assert set(figures) == {"dft_coefficients", "dft_coefficients_training", "dft_coefficients_final"}
    for stem, fig in figures.items():
        assert len(fig.axes) >= (len(cfg.samplers) if stem == "dft_coefficients_final" else 4)
        plt.close(fig)


def test_a_diverged_run_is_marked_not_dropped(quick_run):
    """A run that went NaN (stored as None) is drawn as an x with "diverged" in both the curves and the final loss."""
    import dataclasses

    import matplotlib.pyplot as plt

    cfg, results, _ = quick_run
    loaded = json.loads(json.dumps({**results, "config": dataclasses.asdict(cfg)}))
    kind, (opt, _) = cfg.samplers[0], cfg.optimisers[0]
    curve = loaded["curves_per_seed"][kind][opt]["sampler"][0]
    curve[len(curve) // 2:] = [None] * (len(curve) - len(curve) // 2)
    row = next(r for r in loaded["training"] if (r["sampler"], r["optimiser"]) == (kind, opt))
    row["final_loss_per_seed"]["sampler"][0] = row["final_loss_mean"]["sampler"] = None
    row["diverged"]["sampler"] = 1
    figures = EXPERIMENTS[0].plot(loaded)
    for stem in ("dft_coefficients_training", "dft_coefficients_final"):
        texts = [t.get_text() for ax in figures[stem].axes for t in ax.texts]
        assert any("diverged" in t for t in texts), stem
    for fig in figures.values():
        plt.close(fig)


def test_matched_sgd_divides_out_the_total_step_weight(quick_run):
    """Under "sgd-matched" Algorithm A.1's lr is the sampler's over the mean of the per-step ratio C_i(A.1)/C_i(sampler)
    (the sampler's |k_i| C_i is the same for every step, so that mean is the ratio of the total step weights)."""
    cfg, results, _ = quick_run
    lrs = dict(cfg.optimisers)
    for row in results["training"]:
        used = row["lr_used"]
        if row["optimiser"] != "sgd-matched":
            assert used == {c: lrs[row["optimiser"]] for c in COEFFICIENTS}
            continue
        ratio = np.asarray(results["coefficient_vectors"][f"{row['sampler']}/{cfg.train_steps}"]["ratio"])
        assert used["sampler"] == lrs["sgd-matched"]
        np.testing.assert_allclose(used["algorithm_a1"], lrs["sgd-matched"] / ratio.mean(), rtol=1e-5)


def test_training_uses_the_chosen_coefficients(quick_run):
    """One SGD step from the same model and batch: the parameter update under each choice equals -lr times the
    gradient built by hand as sum_i k_i C_i (dL/dz_0 . d eps_i/d theta) at the visited z_i (B -> I), with k_i the
    chain's coefficient of eps_i in z_0 and C_i that choice's recorded scale; for "sampler" k_i C_i is the same
    constant -1/geometric-mean for every i (A -> 1 exactly), for "algorithm_a1" it is not."""
    from experiments.dft_coefficients import _finetune, _mixture
    from toy.sampler_chain import eps_model_for, make_sampler
    from theory.sampler_gradient import AdjustedGradient

    cfg, results, _ = quick_run
    target = torch.tensor(cfg.target, dtype=torch.float64)
    sampler = make_sampler("ddim", SD_BETAS, 10)
    for c in COEFFICIENTS:
        scales = np.asarray(results["coefficient_vectors"]["ddim/10"][c])
        model = _mixture(cfg.dim, 3)
        before = model.means.detach().clone()
        _finetune(model, sampler, AdjustedGradient.from_scheduler(sd_scheduler("ddim"), 10, coefficients=c), target,
                  optimiser="sgd", lr=1e-3, iterations=1, batch=4, seed=11)
        # by hand: run the chain without gradient, then sum the scaled partials at the visited z_i
        ref = _mixture(cfg.dim, 3)
        gen = torch.Generator().manual_seed(11)
        z = torch.randn(4, cfg.dim, generator=gen, dtype=torch.float64)
        eps_model = eps_model_for(ref, sampler)
        states = []
        with torch.no_grad():
            for i in range(10):
                states.append(z)
                z = sampler.step(eps_model(z, i), z, i)
        dl_dz0 = 2.0 * (z - target) / 4  # d mean_b ||z_0 - target||^2 / d z_0
        k = -sampler.a_coefficients  # eps_i reaches z_0 with k_i through the (linear) chain
        if c == "sampler":
            np.testing.assert_allclose(k * scales, np.full(10, (k * scales)[0]), rtol=1e-5)
        else:
            assert np.ptp(k * scales) > 0.5 * np.abs(k * scales).max()  # A.1 leaves A_i C_i far from constant
        # B -> I: the network input is detached, so each eps_i contributes only its partial (seed 000, [0114]-[0116])
        total = sum(k[i] * scales[i] * (eps_model(states[i], i) * dl_dz0).sum() for i in range(10))
        grad = torch.autograd.grad(total, ref.means)[0]
        np.testing.assert_allclose((model.means.detach() - before).numpy(), (-1e-3 * grad).numpy(), rtol=1e-5,
                                   atol=1e-14)
