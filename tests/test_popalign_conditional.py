"""The prompt-conditioned PopAlign toy (seed 001, App. A.1 / A.3) and classifier-free guidance (theory.guidance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from experiments.popalign_toy_cfg import REFERENCE_FIDELITY, sample_metrics
from theory.guidance import classifier_free_guidance
from toy.gaussian_mixture import GaussianMixture1D
from toy.popalign_conditional import (
    EMPTY_BALANCED,
    EMPTY_BIASED,
    G1,
    G2,
    G3,
    PERSON,
    classify,
    conditional_reference,
    guided_samples,
    person_model,
    reference_logits,
    stack_runs,
)
from toy.popalign_toy import REFERENCE_MEANS, Setting, TrainConfig, sweep


def test_guidance_is_the_linear_extrapolation_and_refuses_bad_input():
    u, c = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert torch.equal(classifier_free_guidance(u, c, 1.0), u + (c - u))
    assert torch.allclose(classifier_free_guidance(u, c, 1.0), c, atol=1e-15)
    assert torch.equal(classifier_free_guidance(u, c, 0.0), u)
    assert torch.allclose(classifier_free_guidance(u, c, 3.0), 3 * c - 2 * u, atol=1e-14)
    with pytest.raises(ValueError, match="same shape"):
        classifier_free_guidance(u, c[:4], 2.0)
    with pytest.raises(ValueError, match="scale"):
        classifier_free_guidance(u, c, float("nan"))


def test_guided_noise_is_the_score_of_the_tilted_density():
    # at any noise level eps = -sqrt(1 - abar) d/dx log p_t, so the guided eps is -sqrt(1 - abar) times the score of
    # p_t(x | person)^w p_t(x | empty)^(1 - w): checked against autograd of that log-density, float64
    model = conditional_reference(1)
    cond, uncond = model.prompt(PERSON), model.prompt(EMPTY_BIASED)
    x = torch.linspace(-10, 10, 41, dtype=torch.float64)[None].requires_grad_(True)
    abar, w = 0.3, 2.5
    tilted = w * cond.log_prob(x, abar) + (1 - w) * uncond.log_prob(x, abar)
    (score,) = torch.autograd.grad(tilted.sum(), x)
    with torch.no_grad():
        guided = classifier_free_guidance(uncond.noise_prediction(x, torch.full_like(x, abar)),
                                          cond.noise_prediction(x, torch.full_like(x, abar)), w)
    assert torch.allclose(guided, -math.sqrt(1 - abar) * score, atol=1e-12, rtol=0)


def test_prompt_views_share_means_and_stds_but_not_logits():
    ref = conditional_reference(2)
    person = ref.prompt(PERSON)
    w = person.weights[0].detach()
    assert float(w[G1] / (w[G1] + w[G3])) == pytest.approx(math.e / (math.e + math.exp(-1)), abs=1e-12)
    empty_w = ref.prompt(EMPTY_BALANCED).weights[0].detach()
    assert torch.allclose(empty_w, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    biased = ref.prompt(EMPTY_BIASED).weights[0].detach()
    assert float(biased[G1] / (biased[G1] + biased[G3])) == pytest.approx(float(w[G1] / (w[G1] + w[G3])), abs=1e-12)
    # a view's density is the mixture's, read through the prompt's logits: against a plain GaussianMixture1D
    plain = GaussianMixture1D(w.detach(), REFERENCE_MEANS, (1.0, 1.0, 1.0))
    x = torch.linspace(-12, 12, 7, dtype=torch.float64)[None]
    assert torch.allclose(person.log_prob(x.expand(2, -1))[0], plain.log_prob(x)[0], atol=1e-13)
    assert {id(p) for p in person.parameters()} == {id(p) for p in ref.parameters()}
    with pytest.raises(ValueError, match="prompt index"):
        ref.prompt(3)
    assert reference_logits().shape == (3, 3)


def test_training_the_person_prompt_leaves_the_empty_prompts_logits_as_they_are():
    config = TrainConfig(steps=30, log_every=30)
    res = sweep([Setting(0.5)], 2, config, seed=0, n_samples=100, model=person_model, reference=person_model)
    model, ref = res.model.conditional, conditional_reference(2)
    assert torch.equal(model.logits[:, EMPTY_BALANCED], ref.logits[:, EMPTY_BALANCED])
    assert torch.equal(model.logits[:, EMPTY_BIASED], ref.logits[:, EMPTY_BIASED])
    assert not torch.equal(model.logits[:, PERSON], ref.logits[:, PERSON])
    assert not torch.equal(model.means, ref.means)  # shared parameters move for every prompt
    stacked = stack_runs([ref, model])
    assert stacked.logits.shape == (4, 3, 3) and not stacked.logits.requires_grad


def test_unguided_samples_draw_the_person_mixture_and_guidance_sharpens_the_skew():
    ref = conditional_reference(1)
    x = guided_samples(ref, EMPTY_BALANCED, 1.0, 2000, generator=torch.Generator().manual_seed(0))
    w = ref.prompt(PERSON).weights[0].detach().numpy()
    # class shares of exact samples: binomial tolerance of 5 standard errors
    for k in (G1, G2, G3):
        share = float((classify(x) == k).double().mean())
        assert abs(share - w[k]) < 5 * math.sqrt(w[k] * (1 - w[k]) / 2000), (k, share, w[k])
    # against the balanced empty branch, w > 1 multiplies the G1:G3 odds by about odds^(w - 1)
    strong = guided_samples(ref, EMPTY_BALANCED, 3.0, 2000, generator=torch.Generator().manual_seed(0))
    cls = classify(strong)
    share = float((cls == G1).sum() / ((cls == G1) | (cls == G3)).sum())
    assert share > 0.97  # odds 7.39^3 ~ 400: the tilted share is 0.9975


def test_sample_metrics_against_hand_counts():
    x = torch.tensor([[-7.0, -6.5, 7.2, 0.1], [0.0, 0.2, -0.1, 0.3]], dtype=torch.float64)
    first, second = sample_metrics(x, 0.5)
    assert first["g1_share"] == pytest.approx(2 / 3)
    assert first["discrepancy"] == pytest.approx(math.sqrt(2) * (2 / 3 - 0.5))
    assert first["alignment"] == pytest.approx(0.75)
    assert first["fidelity"] == pytest.approx(np.mean(norm.logpdf([0.0, 0.5, 0.2])))
    assert math.isnan(second["discrepancy"]) and second["alignment"] == 0.0
    assert REFERENCE_FIDELITY == pytest.approx(-norm.entropy())
