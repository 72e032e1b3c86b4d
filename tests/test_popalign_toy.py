"""The 1-D PopAlign toy (seed 001, Sec. 4, App. H): data, sampler, and the claims of Fig. 3, 11 and 12."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kstest, norm

from toy.popalign_toy import (
    G2,
    REFERENCE_MEANS,
    Setting,
    TrainConfig,
    generate,
    kl_to_reference,
    preference_data,
    reference_mixture,
    stream_seeds,
    sweep,
    target_key,
    train,
)

REF_G2 = float(torch.softmax(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), 0)[G2])


def test_preference_data_composition():
    data = preference_data(torch.tensor([0.5, 0.8]), n_samples=1000, set_size=10,
                           generator=torch.Generator().manual_seed(0))
    assert data.winners.shape == data.losers.shape == (2, 500)
    # every sample sits within 5 std of G1 or G3 and none near G2: no G2 samples in the preference data
    for x in (data.winners, data.losers):
        assert ((x + 7).abs().lt(5) | (x - 7).abs().lt(5)).all()
    assert int((data.winners[0] < 0).sum()) == 250 and int((data.winners[1] < 0).sum()) == 400
    loser_share = float((data.losers < 0).double().mean())
    assert loser_share == pytest.approx(np.exp(1) / (np.exp(1) + np.exp(-1)), abs=0.05)
    with pytest.raises(ValueError, match="multiple of set_size"):
        preference_data(torch.tensor([0.5]), n_samples=1000, set_size=7, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preference_data(torch.tensor([1.5]), generator=torch.Generator())


def test_ddpm_sampler_with_exact_noise_prediction_draws_the_mixture():
    ref = reference_mixture(1)
    samples = generate(ref, 3000, "diffusion", generator=torch.Generator().manual_seed(0))[0].numpy()
    w = ref.weights[0].detach().numpy()
    cdf = lambda x: sum(wc * norm.cdf(x, m, 1.0) for wc, m in zip(w, REFERENCE_MEANS))  # noqa: E731
    assert kstest(samples, cdf).pvalue > 1e-3


def test_kl_to_reference_is_zero_at_the_reference_and_positive_elsewhere():
    ref = reference_mixture(2)
    with torch.no_grad():
        ref.logits[1] = torch.tensor([0.0, 0.0, 0.0])
    kl = kl_to_reference(ref)
    assert abs(kl[0]) < 1e-10 and kl[1] > 0.1


def test_sweep_aggregates_and_is_reproducible():
    config = TrainConfig(steps=5, log_every=5)
    a = sweep([Setting(0.5), Setting(0.8, beta_prime=2.0)], 2, config, seed=3)
    b = sweep([Setting(0.5), Setting(0.8, beta_prime=2.0)], 2, config, seed=3)
    assert [s["g1_share"] for s in a.settings] == [s["g1_share"] for s in b.settings]
    assert len(a.settings) == 2 and len(a.settings[0]["runs"]) == 2
    assert a.model.logits.shape == (4, 3)
    assert a.settings[0]["reward_accuracy"]["steps"] == [0, 5]


@pytest.mark.slow
def test_popalign_reaches_every_target_and_keeps_g2_while_sft_collapses_it():
    targets = (0.5, 0.65, 0.8, 0.95)
    res = sweep([Setting(t, beta_prime=1.0) for t in targets], 1, TrainConfig(steps=3000), seed=0)
    for agg in res.settings:
        assert abs(agg["g1_share"] - agg["target"]) <= 0.1, agg
        assert agg["g2_weight"] >= 0.5 * REF_G2, agg
    sft = sweep([Setting(0.5)], 1, TrainConfig(method="sft", steps=3000), seed=0).settings[0]
    assert sft["g2_weight"] < 0.05
    assert abs(sft["g1_share"] - 0.5) <= 0.1


@pytest.mark.slow
def test_higher_beta_stays_closer_to_the_reference():
    res = sweep([Setting(0.5, beta_prime=b) for b in (0.5, 1.0, 2.0, 4.0, 10.0)], 1, TrainConfig(steps=3000), seed=0)
    kl = [a["kl_to_reference"] for a in res.settings]
    share = [a["g1_share"] for a in res.settings]
    assert all(np.diff(kl) < 0), kl
    assert all(np.diff(share) > 0), share


@pytest.mark.parametrize("method, parameterisation",
                         [("popalign", "diffusion"), ("sft", "diffusion"), ("popalign", "density")])
def test_a_setting_trains_bit_identically_whatever_else_shares_its_sweep(method, parameterisation):
    # the shared setting of popalign-toy, -targets, -beta and -alpha must be one run, not four draws of it
    config = TrainConfig(method=method, parameterisation=parameterisation, steps=40, log_every=20)
    shared = Setting(0.5, beta_prime=1.0, alpha=0.5)
    alone = sweep([shared], 2, config, seed=11, n_samples=200)
    among = sweep([Setting(0.8, beta_prime=2.0), shared, Setting(0.5, beta_prime=0.3, alpha=0.25)], 2, config,
                  seed=11, n_samples=200)
    for name in ("logits", "means", "log_stds"):
        assert torch.equal(getattr(alone.model, name), getattr(among.model, name)[2:4]), name
    assert torch.equal(alone.data.winners, among.data.winners[2:4])
    assert alone.settings[0]["g1_share"] == among.settings[1]["g1_share"]
    # ... while another run seed, or another target, draws other streams
    other = sweep([shared], 2, config, seed=12, n_samples=200)
    assert not torch.equal(alone.data.winners, other.data.winners)
    assert not torch.equal(among.data.losers[0], among.data.losers[2])


def test_stream_seeds_are_keyed_by_run_seed_and_target():
    assert stream_seeds(0, 0.5, 3) == stream_seeds(0, 0.5, 5)[:3]
    assert len({*stream_seeds(0, 0.5, 3), *stream_seeds(0, 0.65, 3), *stream_seeds(1, 0.5, 3)}) == 9
    assert target_key(0.5) != target_key(0.5000000000000001)


def test_train_refuses_a_generator_list_of_the_wrong_length():
    data = preference_data(torch.tensor([0.5, 0.5]), n_samples=20, set_size=10, generator=torch.Generator())
    with pytest.raises(ValueError, match="one per run"):
        train(data, TrainConfig(steps=1), generator=[torch.Generator()])
