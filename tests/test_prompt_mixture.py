"""The multi-prompt toy of seed 000 Fig. 9 / Table 1 (toy.prompt_mixture) and the runs built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.dal_prompt_runs import dal_run, occupations, per_prompt_shares
from experiments.dft_models import SD_BETAS
from experiments.loss_bands import moving_average
from theory.ddpm import forward_noise
from toy.attribute_classifiers import QUADRANT_MEANS
from toy.denoisers import MixtureDenoiser
from toy.prompt_mixture import (
    COMPONENT_STD,
    COMPONENTS,
    PromptConditionedMixture,
    content_class,
    occupation_logits,
    prepare_finetuning,
)
from toy.sampler_chain import make_sampler

MINORITY = np.array([0.05, 0.2, 0.35, 0.6])
CONTENT = np.array([0.65, 0.5, 0.45, 0.35])


def _model(seed: int = 0) -> PromptConditionedMixture:
    return PromptConditionedMixture(occupation_logits(MINORITY, CONTENT), width=16, seed=seed)


def test_the_original_model_has_each_prompts_weights_exactly():
    # the weights written out by hand: attribute and content independent within a prompt
    expected = np.stack([(1 - MINORITY) * CONTENT, (1 - MINORITY) * (1 - CONTENT), MINORITY * CONTENT,
                         MINORITY * (1 - CONTENT)], axis=1)
    with torch.no_grad():
        got = _model(seed=3).weights().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_the_noise_prediction_is_the_prompts_mixture_denoiser():
    model = _model()
    gen = torch.Generator().manual_seed(1)
    ids = torch.tensor([0, 3, 1, 3, 2])
    z = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    model.condition(ids)
    with torch.no_grad():
        eps = model(z, 0.3)
        weights = model.weights()
    for row, p in enumerate(ids.tolist()):
        reference = MixtureDenoiser(weights[p], QUADRANT_MEANS, torch.full((4,), COMPONENT_STD, dtype=torch.float64))
        with torch.no_grad():
            np.testing.assert_allclose(eps[row].numpy(), reference(z[row:row + 1], 0.3)[0].numpy(), rtol=1e-12,
                                       atol=1e-14)


def test_the_exact_noise_prediction_recovers_the_noise_of_a_single_component_prompt():
    # a prompt with (nearly) all weight on one component of std s: eps* = (x_t - sqrt(abar) m) sqrt(1-abar) / v
    logits = torch.tensor([[0.0, -60.0, -60.0, -60.0]], dtype=torch.float64)
    model = PromptConditionedMixture(logits, width=4, seed=0)
    x0 = QUADRANT_MEANS[:1].expand(3, 2).clone()
    eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    abar = 0.4
    x_t = forward_noise(x0, eps, torch.tensor(abar, dtype=torch.float64))
    model.condition(torch.zeros(3, dtype=torch.long))
    var = abar * COMPONENT_STD ** 2 + 1 - abar
    with torch.no_grad():
        np.testing.assert_allclose(model(x_t, abar).numpy(),
                                   ((x_t - abar ** 0.5 * x0) * (1 - abar) ** 0.5 / var).numpy(), rtol=1e-10)


@pytest.mark.parametrize("component, count", [
    ("prompt_prefix", 16),                     # the soft prompt s in R^16
    ("text_encoder_lora", 2 * 2 * (16 + 16)),  # rank 2 on two Linear(16, 16): A (2 x 16) and B (16 x 2) each
    ("unet_lora", 2 * (16 + 4)),               # rank 2 on Linear(16, 4)
    ("text_encoder_unet_lora", 2 * 2 * 32 + 2 * 20),
    ("full", 2 * (16 * 16 + 16) + (16 * 4 + 4) + 4 * 2 + 4),  # text encoder, to_logits, means, log-stds
])
def test_each_component_trains_its_own_parameters_and_starts_from_the_original(component, count):
    model = _model()
    with torch.no_grad():
        before = model.weights().clone()
    assert prepare_finetuning(model, component, rank=2, seed=5) == count
    with torch.no_grad():
        torch.testing.assert_close(model.weights(), before, rtol=0, atol=0)  # LoRA's B = 0, s = 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if component == "prompt_prefix":
        assert trainable == {"soft_prompt"}
    elif component == "full":
        assert trainable and all(n.startswith(("text_encoder.", "unet.")) for n in trainable)
    else:
        assert all("lora_" in n for n in trainable)
        assert any(n.startswith("text_encoder") for n in trainable) == ("text_encoder" in component)
        assert any(n.startswith("unet") for n in trainable) == ("unet" in component)
    # one gradient step moves exactly the trainable parameters
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.condition(torch.arange(4))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model(z, 0.5).square().sum().backward()
    opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n


def test_lora_initialisation_is_reproducible_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = _model(), _model()
    prepare_finetuning(a, "text_encoder_lora", rank=2, seed=9)
    prepare_finetuning(b, "text_encoder_lora", rank=2, seed=9)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="component must be one of"):
        prepare_finetuning(_model(), "vae", rank=2, seed=0)
    with pytest.raises(ValueError, match="shape \\(P, 4\\) with 1 <= P <= width"):
        PromptConditionedMixture(torch.zeros(20, 4), width=16)
    with pytest.raises(ValueError, match="prompt_ids must be"):
        _model().condition(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="minority_shares and content_shares"):
        occupation_logits(np.array([0.0, 0.5]), np.array([0.5, 0.5]))
    model = _model()
    model.condition(torch.arange(3))
    with pytest.raises(ValueError, match="condition\\(\\) set 3 prompts for a batch of 4"):
        model(torch.zeros(4, 2, dtype=torch.float64), 0.5)


def test_per_prompt_shares_count_by_hand():
    model = _model()
    # attribute by the sign of x (the exact classifier's boundary), content by the sign of y
    z0 = torch.tensor([[-3.0, -3.0], [3.0, 3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0], [-3.0, -3.0], [-3.0, -3.0],
                       [3.0, -3.0]], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])
    shares = per_prompt_shares(model, z0, ids)
    assert shares["attribute1"] == [0.5, 0.5, 0.0, 1.0]
    assert shares["content0"] == [0.5, 0.5, 1.0, 1.0]
    assert shares["attribute1_in_content"][0] == [0.5, 0.5]
    assert shares["bias"] == [0.0, 0.0, 1.0, 1.0]  # |freq(0) - freq(1)| for K = 2
    assert np.isnan(shares["attribute1_in_content"][2][1])  # prompt 2 has no content-1 sample
    np.testing.assert_array_equal(content_class(z0).numpy(), [0, 1, 0, 1, 1, 0, 0, 0])


def test_a_short_run_reports_every_prompt_and_is_reproducible():
    prompts = occupations(3, (0.1, 0.5), (0.4, 0.6))
    assert prompts["minority_share"] == pytest.approx([0.1, 0.3, 0.5])
    assert prompts["content0_share"] == pytest.approx([0.6, 0.5, 0.4])
    sampler = make_sampler("ddim", SD_BETAS, 5)
    kwargs = dict(target=(0.75, 0.25), conditional=True, sampler=sampler, width=8, rank=2, iterations=3,
                  per_prompt=6, threshold=0.8, lr=0.05, n_eval=40, model_seed=1, train_seed=2, eval_seed=3)
    a = dal_run(prompts, "text_encoder_lora", **kwargs)
    b = dal_run(prompts, "text_encoder_lora", **kwargs)
    assert a == b
    assert len(a["loss"]) == 3 and len(a["after"]["attribute1"]) == 3 and len(a["after"]["content_kept_paired"]) == 3
    # the original model's exact attribute-1 weight is the prompt's share
    np.testing.assert_allclose(a["before"]["attribute1_mass"], prompts["minority_share"], rtol=1e-10)


def test_moving_average_is_the_trailing_window_mean():
    curves = np.random.default_rng(0).normal(size=(3, 17))
    brute = np.array([[row[max(0, i - 4):i + 1].mean() for i in range(17)] for row in curves])
    np.testing.assert_allclose(moving_average(curves, 5), brute, rtol=1e-12)


@pytest.mark.parametrize("module, config", [
    ("experiments.dft_dal_toy_prompts", "PromptsConfig"),
    ("experiments.dft_dal_toy_components", "ComponentsConfig"),
])
def test_tiny_runs_are_drawn_from_their_results_alone(module, config, tmp_path):
    import importlib
    import json
    from dataclasses import asdict

    import matplotlib.pyplot as plt

    from experiments.experiment import RunContext

    mod = importlib.import_module(module)
    cfg = getattr(mod, config)(prompts=3, steps=5, iterations=2, per_prompt=4, n_eval=20, seeds=2)
    (experiment,) = mod.EXPERIMENTS
    results = experiment.run(cfg, RunContext(experiment.name, tmp_path, seed=0, quick=True))
    results = json.loads(json.dumps({**results, "config": asdict(cfg)}))  # what results.json holds
    figures = experiment.plot(results)
    assert len(figures) == 1
    plt.close("all")
    if "table" in results:
        assert [row["component"] for row in results["table"]] == ["original", *cfg.components]
        original = results["table"][0]
        # the original row's bias is the seed-000 metric of the evaluated original shares, averaged over prompts
        run = results["runs"][cfg.components[0]][0]
        assert original["bias_per_seed"][0] == pytest.approx(np.mean([abs(1 - 2 * a) for a in run["before"]["attribute1"]]))
    else:
        shares = np.array([run["after"]["attribute1"] for run in results["runs"]])
        np.testing.assert_allclose(results["summary"]["after"]["old_share_mean"], shares.mean(0), rtol=1e-12)
