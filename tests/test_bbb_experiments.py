"""The four Bias Begets Bias experiments (seed 003), quick configuration."""

from __future__ import annotations

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


def test_bbb_audit_quick(tmp_path):
    r = experiments.run("bbb-audit", quick=True, out=tmp_path)
    assert r["plain_ranks_biased_first"]
    assert r["repaired_at_zero_leak"] == {"subclass": True, "average": True}
    for row in r["rows"]:
        plain = row["plain"]
        assert plain["identity_biased_minus_balanced"] == pytest.approx(plain["biased_minus_balanced"], abs=1e-12)
        assert row["subclass"]["multiaccuracy_gap"] < plain["multiaccuracy_gap"]


@pytest.mark.slow
def test_bbb_real_embeddings_quick(tmp_path):
    r = experiments.run("bbb-real-embeddings", quick=True, out=tmp_path, allow_missing_models=True)
    minilm = r["encoders"]["minilm"]
    assert minilm["n_lean_man"] + minilm["n_lean_woman"] == minilm["n_professions"]
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
