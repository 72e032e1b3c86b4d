"""The ot-targets experiment's fixed-split counterpart and its three figures (quick configuration)."""

from __future__ import annotations

import numpy as np

from experiments import ot_targets
from experiments.experiment import RunContext


def test_fixed_split_gives_class_1_to_the_n_d1_most_likely_images(tmp_path):
    cfg = ot_targets.make_config(quick=True)
    r = ot_targets.run(cfg, RunContext("ot-targets", tmp_path, 0, True))
    for panel in r["binary_panels"]:
        p1, fixed = np.asarray(panel["p1"]), np.asarray(panel["q1_fixed_split"])
        n1 = int(round(cfg.n_images * panel["target"][0]))
        # brute force: with costs ||p_i - e_k||, class 1 goes to the images of largest p_i1 (no ties here)
        expected = np.zeros_like(p1)
        expected[np.argsort(-p1)[:n1]] = 1.0
        np.testing.assert_array_equal(fixed, expected)
        assert list(panel["fixed_split_counts"]) == [n1, cfg.n_images - n1]
        # the expected targets are soft where the fixed split is hard: some image lies strictly between 0.2 and 0.8
        q = np.asarray(panel["q1_exact"])
        assert ((q > 1 - cfg.threshold) & (q < cfg.threshold)).any()
    figures = ot_targets.plot({**r, "config": {**cfg.__dict__}})
    assert set(figures) == {"ot_targets", "ot_targets_multiclass", "ot_targets_cost"}
