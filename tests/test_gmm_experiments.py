"""gmm-toy and gmm-digits (seed 002): the quick runs, the metrics wiring and the toy's exact check."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import experiments
from experiments import gmm_toy
from theory.metrics import frequency_bias


def test_gmm_toy_fit_matches_the_exact_noised_mixture_where_classes_are_separated():
    """At t = 100 (abar = 0.897) the noised classes are still far apart: BIC picks K = 2, the fit matches the exact
    p_t = 0.8 N(-3 sqrt(abar), 1) + 0.2 N(3 sqrt(abar), 1), and equal sampling per component balances the classes."""
    cfg = replace(gmm_toy.make_config(quick=True), t_grid=(100,))
    res = gmm_toy.run_once(cfg, seed=0, detail=True)
    assert res["chosen_t"] == 100 and res["chosen_k"] == 2
    exact = res["fit_vs_exact_at_chosen_t"]
    np.testing.assert_allclose(exact["exact_means"], np.array([-3.0, 3.0]) * np.sqrt(res["sweep"][0]["abar_t"]))
    np.testing.assert_allclose(exact["fitted_weights"], exact["exact_weights"], atol=0.05)
    np.testing.assert_allclose(exact["fitted_means"], exact["exact_means"], atol=0.3)
    np.testing.assert_allclose(exact["fitted_vars"], exact["exact_vars"], rtol=0.2)
    assert res["bias_plain_sampling"] == pytest.approx(0.6, abs=0.08)  # the data are 80/20
    assert res["halves_bias"] and res["bias_gmm_sampling"] <= 0.05
    # the exact density stored for the figure integrates to one over the latents' range (a numerical check)
    dens = res["latents_at_chosen_t"]
    assert np.trapezoid(dens["exact_density"], dens["grid"]) == pytest.approx(1.0, abs=0.01)


def test_gmm_toy_quick_run_summarises_its_repeats(tmp_path):
    res = experiments.run("gmm-toy", quick=True, out=tmp_path)
    over = res["over_repeats"]
    n = res["config"]["repeats"]
    assert over["n_repeats"] == n == len(over["bias_plain"]) == len(over["chosen_t"])
    # the first repeat is the one shown: its numbers head the lists
    assert over["bias_plain"][0] == res["bias_plain_sampling"] and over["chosen_t"][0] == res["chosen_t"]
    assert over["bias_plain_mean_sd"][0] == pytest.approx(np.mean(over["bias_plain"]))
    assert over["bias_plain_mean_sd"][1] == pytest.approx(np.std(over["bias_plain"], ddof=1))
    for row, first in zip(over["by_t"], res["sweep"]):
        assert row["t"] == first["t"] and 0 <= row["repeats_with_k_at_least_2"] <= n
    # independent streams: the repeats are not copies of each other
    assert len(set(over["bias_plain"])) == n
    # where BIC sees one component in every repeat, uniform sampling over it cannot rebalance
    assert all(r["bias_gmm_mean_mean"] > 0.4 for r in over["by_t"] if r["repeats_with_k_at_least_2"] == 0)


def test_gmm_toy_summary_of_identical_repeats_has_no_spread():
    cfg = replace(gmm_toy.make_config(quick=True), t_grid=(100, 700))
    once = gmm_toy.run_once(cfg, seed=3, detail=False)
    assert gmm_toy.run_once(cfg, seed=3, detail=False) == once  # a repeat is a function of its seed
    over = gmm_toy.summarise_repeats([once, once])
    assert over["bias_plain_mean_sd"] == (once["bias_plain_sampling"], 0.0)
    assert [r["bias_gmm_mean_sd"] for r in over["by_t"]] == [0.0, 0.0]


def test_gmm_digits_quick_results_are_wired_to_the_metrics(tmp_path):
    res = experiments.run("gmm-digits", quick=True, out=tmp_path)
    for key in ("chosen_k", "bias_plain_sampling", "bias_gmm_sampling", "bic_curve", "per_component_balance",
                "downstream"):
        assert key in res
    assert res["bias_plain_sampling"] == pytest.approx(frequency_bias(res["protected_shares_plain"]))
    assert res["protected_shares_training_data"][1] == pytest.approx(0.2, abs=0.01)
    table = {(r["data"], r["generated_percent"]): r for r in res["downstream"]}
    assert set(table) == {("original", 0)} | {(s, g) for s in ("gmm", "plain") for g in (100, 70, 50, 30)}
    assert table[("original", 0)]["bpc"] == pytest.approx(0.0)  # eq. 13 of the baseline against itself
    for row in table.values():
        assert 0 <= row["accuracy"] <= 1 and row["bias"] >= 0 and row["kl"] >= 0
    assert sum(c["n"] for c in res["per_component_balance"]) >= 80
    _check_downstream_against_its_runs(res)
    _check_undefined_metrics_are_marked(res)
    # the cached DDPM checkpoint makes a re-run resume to the same result
    again = experiments.run("gmm-digits", quick=True, out=tmp_path)
    assert again["bias_plain_sampling"] == res["bias_plain_sampling"] and again["downstream"] == res["downstream"]


def _check_downstream_against_its_runs(res: dict) -> None:
    """The table's means, sds, paired differences and BPC recomputed by hand from the stored per-repeat metrics."""
    runs = res["downstream_runs"]
    base = {r["repeat"]: r for r in runs["original/0"]}
    b0 = np.mean([r["bias"] for r in base.values()])
    t0 = np.mean([r["tpr"] for r in base.values()])
    for row in res["downstream"]:
        rows = runs[f"{row['data']}/{row['generated_percent']}"]
        assert row["n_runs"] == len(rows)
        for key in ("bias", "kl", "accuracy", "tpr"):
            vals = np.array([r[key] for r in rows])
            assert row[key] == pytest.approx(vals.mean()) and row[f"{key}_std"] == pytest.approx(vals.std())
            diffs = np.array([r[key] - base[r["repeat"]][key] for r in rows if r["repeat"] in base])
            assert row[f"{key}_n_paired"] == diffs.size
            assert row[f"{key}_diff_mean"] == pytest.approx(diffs.mean())
            assert row[f"{key}_diff_std"] == pytest.approx(diffs.std())
        if b0 > 0:  # eq. 13 written out: (Bias - Bias_deb) / Bias - (TPR - TPR_deb) / TPR
            expected = (b0 - row["bias"]) / b0 - (t0 - row["tpr"]) / t0
            assert row["bpc"] == pytest.approx(expected)
            assert row["bpc_std"] is None or row["bpc_std"] >= 0
        else:
            assert row["bpc"] is None and row["bpc_std"] is None


def _check_undefined_metrics_are_marked(res: dict) -> None:
    """A metric that eq. 14 leaves undefined is drawn as a marked point, not dropped in silence."""
    import copy

    from experiments import gmm_digits

    broken = copy.deepcopy(res)
    row = next(r for r in broken["downstream"] if r["data"] == "gmm")
    row["ba"] = row["ba_std"] = None
    fig = gmm_digits.plot(broken)["gmm_digits_mixing"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "undefined" in texts


def test_bootstrap_sd_of_a_mean_matches_the_binomial_standard_error():
    from experiments.gmm_digits import bootstrap_sd

    x = (np.arange(400) % 10 < 3).astype(float)  # p = 0.3 exactly
    sd = bootstrap_sd(lambda idx: x[idx].mean(), x.size, 4000, np.random.default_rng(0))
    # plug-in sd of a mean of n Bernoulli(p): sqrt(p (1 - p) / n); 4000 resamples estimate it within ~2 %
    assert sd == pytest.approx(np.sqrt(0.3 * 0.7 / 400), rel=0.06)


@pytest.mark.slow
def test_gmm_toy_full_run(tmp_path):
    """Where the noised classes are still well separated (abar_t >= 0.5) uniform component sampling at least halves the
    bias in every repeat; where BIC finds one component in every repeat it cannot. (At the noisiest t with K = 2 the
    components overlap and the claim holds in some repeats only; the run reports that in ``over_repeats``.)"""
    res = experiments.run("gmm-toy", out=tmp_path)
    over = res["over_repeats"]
    plain = over["bias_plain_mean_sd"][0]
    separated = [r for r in over["by_t"] if r["abar_t"] >= 0.5]
    assert separated and all(r["bias_gmm_mean_mean"] + r["bias_gmm_mean_sd"] <= plain / 2 for r in separated)
    assert all(r["bias_gmm_mean_mean"] > plain / 2 for r in over["by_t"] if r["repeats_with_k_at_least_2"] == 0)
