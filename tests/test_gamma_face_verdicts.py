"""The paper-vs-here verdicts of the GAMMA-FACE notebook follow their stated criteria (synthetic results dicts whose
verdict is known by construction)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import gamma_face_verdicts as v
from theory.metrics import bias_performance_coefficient


def _toy(plain: list[float], gmm: list[float]) -> dict:
    n = len(plain)
    return {"over_repeats": {
        "n_repeats": n, "chosen_t": [500] * n, "bias_plain_mean_sd": (float(np.mean(plain)), float(np.std(plain))),
        "bias_gmm_at_chosen_t_mean_sd": (float(np.mean(gmm)), float(np.std(gmm))),
        "repeats_halving_bias": sum(g <= p / 2 for g, p in zip(gmm, plain)),
        "repeats_below_plain": sum(g < p for g, p in zip(gmm, plain)),
        "by_t": [{"t": 100, "abar_t": 0.9, "repeats_with_k_at_least_2": n, "bias_gmm_mean_mean": 0.0,
                  "bias_gmm_mean_sd": 0.0},
                 {"t": 500, "abar_t": 0.08, "repeats_with_k_at_least_2": n,
                  "bias_gmm_mean_mean": float(np.mean(gmm)), "bias_gmm_mean_sd": float(np.std(gmm))}]}}


def test_toy_verdict_counts_repeats_by_the_criterion():
    plain = [0.6] * 5
    assert v.toy_balance(_toy(plain, [0.1, 0.2, 0.25, 0.3, 0.05])).verdict == v.REPRODUCED
    partly = v.toy_balance(_toy(plain, [0.1, 0.2, 0.5, 0.55, 0.7]))  # halved in 2, below plain in 4 of 5
    assert partly.verdict == v.PARTLY and "2/5" in partly.conditions and "t <= 100" in partly.conditions
    assert v.toy_balance(_toy(plain, [0.1, 0.65, 0.62, 0.7, 0.6])).verdict == v.NOT_REPRODUCED


def _digits(metric, repeats: int = 12, ratios=(100, 70, 50, 30)) -> dict:
    """Per-repeat downstream metrics from ``metric(setting, repeat) -> dict``, and the table made from them as
    gmm_digits.downstream_table makes it (means, sds, BPC of the means)."""
    settings = ["original/0"] + [f"{s}/{g}" for s in ("gmm", "plain") for g in ratios]
    runs = {s: [{"repeat": i, **metric(s, i)} for i in range(repeats)] for s in settings}
    mean = lambda s, k: float(np.mean([r[k] for r in runs[s]]))  # noqa: E731
    table = []
    for s in settings:
        src, g = s.split("/")
        row = {"data": src, "generated_percent": int(g), "n_runs": repeats}
        for k in ("bias", "ba", "kl", "accuracy", "tpr"):
            row[k], row[f"{k}_std"] = mean(s, k), float(np.std([r[k] for r in runs[s]]))
        row["bpc"] = bias_performance_coefficient(mean("original/0", "bias"), row["bias"],
                                                  mean("original/0", "tpr"), row["tpr"])
        row["bpc_std"] = 0.01
        table.append(row)
    return {"downstream": table, "downstream_runs": runs}


def _noise(s: str, i: int) -> float:
    return 0.001 * ((sum(map(ord, s)) + 7 * i) % 5)  # small, deterministic, varying over repeats


def test_paired_difference_is_the_mean_and_standard_error_over_shared_repeats():
    res = _digits(lambda s, i: {"bias": 0.1 + (0.02 * i if s == "gmm/50" else 0.0), "ba": 0.1, "kl": 1.0,
                                "accuracy": 0.9, "tpr": 0.9})
    m, se, n = v._paired(res, "gmm/50", "original/0", "bias")
    d = 0.02 * np.arange(12)
    assert n == 12 and m == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(12))


def test_downstream_verdict_reproduced_only_when_every_metric_improves():
    def better(s, i):
        gain = 1.0 if s == "gmm/50" else 0.0
        return {"bias": 0.2 - 0.1 * gain + _noise(s, i), "ba": 1.0 - 0.5 * gain + _noise(s, i),
                "kl": 1.5 - 0.5 * gain + _noise(s, i), "accuracy": 0.8 + 0.1 * gain + _noise(s, i),
                "tpr": 0.8 + 0.1 * gain}
    assert v.downstream_at_50(_digits(better)).verdict == v.REPRODUCED

    def lower_accuracy(s, i):
        row = better(s, i)
        if s == "gmm/50":
            row["accuracy"] = 0.7 + _noise(s, i)  # less bias bought with accuracy
        return row
    verdict = v.downstream_at_50(_digits(lower_accuracy))
    assert verdict.verdict == v.NOT_REPRODUCED and "worse in accuracy" in verdict.conditions


def test_mixing_verdict_checks_the_three_claims_of_section_6():
    acc = {"original/0": 0.95, "gmm/100": 0.80, "gmm/70": 0.85, "gmm/50": 0.90, "gmm/30": 0.92}
    bias = {"gmm/50": 0.05}  # the lowest Bias at 50/50 gives it the highest BPC

    def metric(s, i):
        return {"bias": bias.get(s, 0.2) + _noise(s, i), "ba": 1.0, "kl": 1.0,
                "accuracy": acc.get(s, 0.9) + _noise(s, i), "tpr": 0.9}
    assert v.mixing_ratios(_digits(metric)).verdict == v.REPRODUCED
    bias["gmm/70"] = 0.01  # claim (3) fails: the highest BPC is at 70/30
    verdict = v.mixing_ratios(_digits(metric))
    assert verdict.verdict == v.PARTLY and "2 of 3" in verdict.conditions
    acc["gmm/70"] = 0.78  # and claims (1) and (2) fail with it: 70/30 is now the least accurate
    assert v.mixing_ratios(_digits(metric)).verdict == v.NOT_REPRODUCED


def test_celebahq_verdict():
    assert v.celebahq({"weights_available": False, "reason": "absent"}).verdict == v.NOT_RUN
    res = {"weights_available": True, "t": 600, "pca_components": 32, "pca_explained_variance": 0.5,
           "chosen_k": 4, "latents_per_component": [16, 16, 16, 16]}
    assert v.celebahq(res).verdict == v.REPRODUCED
    assert v.celebahq({**res, "chosen_k": 3}).verdict == v.PARTLY
    assert v.celebahq({**res, "chosen_k": 1}).verdict == v.NOT_REPRODUCED
