"""The four Bias Begets Bias experiments (seed 003), quick configuration."""

from __future__ import annotations

import numpy as np
import pytest

import experiments
from experiments.experiment import RunContext
from scaleup.errors import ModelUnavailableError


def test_bbb_bound_quick(tmp_path):
    r = experiments.run("bbb-bound", quick=True, out=tmp_path)
    assert r["n_pairs"] == sum(t["n_pairs"] for t in r["toys"]) > 50
    assert r["violations"] == 0 and r["violations_exact_path_kl_pinsker"] == 0
    assert r["violations_with_half_kl_constant"] > 0  # the check can fail: a KL constant too small by 2 does
    assert 0 < r["median_tightness"] <= r["max_tightness"] <= 1
    for toy in r["toys"]:
        assert toy["lipschitz_check"]["max_difference_ratio_over_L"] <= 1 + 1e-12
        assert toy["lipschitz_check"]["max_jacobian_norm_over_L"] <= 1 + 1e-12
        assert abs(toy["quadrature"]["tv_refined_minus_tv"]) < 1e-3
    assert (tmp_path / "bbb-bound" / "bbb_bound.png").stat().st_size > 10_000


def test_bbb_chain_quick(tmp_path):
    r = experiments.run("bbb-chain", quick=True, out=tmp_path)
    assert r["corollary_violations"] == 0
    assert r["balanced_embedding_imbalance"] < 1e-12  # the symmetric (unbiased) embedding generates 50/50
    for toy in r["toys"]:
        assert toy["p_man_monotone_in_bias"]
        assert toy["imbalance"][0] > 0.3  # the attribute embedding itself is far from balanced
        # the shaded gaps where the corollary rules out eps-balance: there, and only there, the lower bound exceeds eps
        g_woman, g_man = toy["balance_excluded_gaps"]
        gap, lower = np.array(toy["embedding_bias_gap"]), np.array(toy["imbalance_lower_bound"])
        eps = r["config"]["balance_tolerance"]
        inside = (gap > g_man + 1e-9) | (gap < g_woman - 1e-9)
        outside = (gap < g_man - 1e-9) & (gap > g_woman + 1e-9)
        assert inside.any() and (lower[inside] > eps).all() and (lower[outside] <= eps + 1e-12).all()


def test_bbb_audit_quick(tmp_path):
    r = experiments.run("bbb-audit", quick=True, out=tmp_path)
    assert r["plain_ranks_biased_first"]
    assert r["repaired_at_zero_leak"] == {"subclass": True, "average": True}
    n = r["config"]["n_repeats"]
    for row in r["rows"]:
        plain = row["plain"]
        # the exact identity of theory.alignment_audit holds on every image set, not only on average
        np.testing.assert_allclose(plain["identity_biased_minus_balanced_runs"], plain["biased_minus_balanced_runs"],
                                   rtol=0, atol=1e-12)
        assert row["subclass"]["multiaccuracy_gap"] < plain["multiaccuracy_gap"]
        for name in ("plain", "subclass", "average"):  # mean and sd are those of the stored runs
            runs = np.array(row[name]["multiaccuracy_gap_runs"])
            assert len(runs) == n and row[name]["multiaccuracy_gap"] == pytest.approx(runs.mean(), abs=1e-15)
            assert row[name]["multiaccuracy_gap_sd"] == pytest.approx(runs.std(ddof=1), abs=1e-15)


def test_bbb_audit_repeats_are_independent_streams(tmp_path):
    from experiments import bbb_audit

    cfg = bbb_audit.AuditConfig(n_per_cell=200, leaks=(0.5,), n_repeats=3)
    r = bbb_audit.run(cfg, RunContext("bbb-audit", tmp_path, 7, True))
    runs = r["rows"][0]["plain"]["biased_minus_balanced_runs"]
    assert len(set(np.round(runs, 15))) == 3  # three image sets, three different values
    with pytest.raises(ValueError, match="n_repeats must be at least 2"):
        bbb_audit.run(bbb_audit.AuditConfig(n_repeats=1), RunContext("bbb-audit", tmp_path, 0, True))


@pytest.mark.slow
def test_bbb_real_embeddings_quick(tmp_path):
    r = experiments.run("bbb-real-embeddings", quick=True, out=tmp_path, allow_missing_models=True)
    minilm = r["encoders"]["minilm"]
    assert minilm["n_lean_man"] + minilm["n_lean_woman"] == minilm["n_professions"]
    # the sign test against scipy's independent computation: P(X <= min or X >= max) for X ~ Binomial(n, 1/2)
    from scipy.stats import binom

    n, k = minilm["n_lean_man"] + minilm["n_lean_woman"], min(minilm["n_lean_man"], minilm["n_lean_woman"])
    assert minilm["sign_test_pvalue"] == pytest.approx(min(1.0, 2 * binom.cdf(k, n, 0.5)), rel=1e-9)
    assert minilm["max_abs_average_ratio_minus_1"] < 1e-12
    assert set(r["unavailable"]) | set(r["encoders"]) == {"minilm", "sd-text-encoder", "open-clip"}


# ------------------------------------------------------------------ issue 9, item 3: a missing model says so
@pytest.mark.parametrize("what", ["absent", "empty folder"])
def test_a_wrong_sd_text_encoder_folder_is_an_error_even_when_missing_models_are_allowed(tmp_path, monkeypatch, what):
    folder = tmp_path / "typo"
    if what == "empty folder":
        folder.mkdir()
    monkeypatch.setenv("FAIRDIFF_SD_TEXT_ENCODER", str(folder))
    monkeypatch.delenv("FAIRDIFF_OPENCLIP_PRETRAINED", raising=False)
    with pytest.raises(ModelUnavailableError) as err:
        experiments.run("bbb-real-embeddings", quick=True, out=tmp_path / "out", allow_missing_models=True)
    message = str(err.value)
    assert message.startswith(f"FAIRDIFF_SD_TEXT_ENCODER={folder}: the sd-text-encoder encoder cannot be loaded")
    assert "text_encoder/" in message and "tokenizer/" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "out" / "bbb-real-embeddings" / "results.json").exists()


def test_absent_encoders_stop_the_run_unless_allowed(tmp_path, monkeypatch):
    from experiments import bbb_real_embeddings

    monkeypatch.delenv("FAIRDIFF_SD_TEXT_ENCODER", raising=False)
    cfg = bbb_real_embeddings.RealEmbeddingsConfig(encoders=("sd-text-encoder",))
    strict = RunContext("bbb-real-embeddings", tmp_path, 0, True)
    with pytest.raises(ModelUnavailableError, match=r"sd-text-encoder encoder is not on this machine: set "
                                                    r"FAIRDIFF_SD_TEXT_ENCODER to a Stable Diffusion pipeline folder"
                                                    r".*--allow-missing-models"):
        bbb_real_embeddings.load_encoders(cfg, strict)
    lenient = RunContext("bbb-real-embeddings", tmp_path, 0, True, allow_missing_models=True)
    encoders, unavailable = bbb_real_embeddings.load_encoders(cfg, lenient)
    assert encoders == {} and "FAIRDIFF_SD_TEXT_ENCODER" in unavailable["sd-text-encoder"]
    assert lenient.missing_models and "FAIRDIFF_SD_TEXT_ENCODER" in lenient.missing_models[0]
