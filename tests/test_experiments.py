"""The experiments command line and the ot-targets experiment (quick configuration)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import experiments

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_list_names_every_experiment():
    listed = run_cli("list")
    assert listed.returncode == 0, listed.stderr
    for name in experiments.EXPERIMENTS:
        assert name in listed.stdout


def test_unknown_experiment_is_a_clear_error(tmp_path):
    result = run_cli("run", "no-such-thing", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown experiment 'no-such-thing'" in result.stderr and "ot-targets" in result.stderr
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.run("no-such-thing", out=tmp_path)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^64 - 1\]"):
        experiments.run("ot-targets", out=tmp_path, seed=-1)


def test_ot_targets_quick_run_writes_results_and_figure(tmp_path):
    result = run_cli("run", "ot-targets", "--quick", "--out", str(tmp_path), "--seed", "3")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "ot-targets"
    payload = json.loads((out / "results.json").read_text())
    assert (out / "ot_targets.png").stat().st_size > 10_000
    assert payload["seed"] == 3 and payload["quick"] is True
    assert payload["config"]["n_images"] == 24
    assert payload["versions"]["numpy"] == np.__version__
    assert sorted(payload["figures"]) == ["ot_targets.png", "ot_targets_cost.png", "ot_targets_multiclass.png"]
    # Monte Carlo consistent with the exact targets (exact binomial test; fails by chance with probability < 1e-4),
    # closed form equal to the exact enumeration
    assert payload["mc_vs_exact_min_pvalue_bonferroni"] > 1e-4
    assert 0 < payload["max_abs_error_mc_vs_exact"] < 0.1
    for panel in payload["binary_panels"]:
        assert panel["max_abs_error_closed_form_vs_exact"] < 1e-12
        assert abs(panel["sum_q1_minus_n_d1"]) < 1e-11
    assert payload["speedup_closed_form_vs_mc_n24"] > 0  # its size is a benchmark's business, not a unit test's
    no_tmp = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert not no_tmp, f"temporary files left behind: {no_tmp}"


def test_same_seed_same_results(tmp_path):
    a = experiments.run("ot-targets", quick=True, out=tmp_path / "a", seed=1)
    b = experiments.run("ot-targets", quick=True, out=tmp_path / "b", seed=1)
    for key in ("max_abs_error_mc_vs_exact", "binary_panels", "multiclass"):
        assert a[key] == b[key]


# ------------------------------------------------------------------- issue 9, item 1: results are never lost
def _full_result(folder: Path, seed: int = 0) -> bytes:
    folder.mkdir(parents=True)
    data = json.dumps({"experiment": "ot-targets", "seed": seed, "quick": False, "marker": "full run"}).encode()
    (folder / "results.json").write_bytes(data)
    (folder / "ot_targets.png").write_bytes(b"the full run's figure")
    return data


def test_quick_and_other_seed_runs_default_to_their_own_folders(tmp_path, monkeypatch):
    from experiments import runner

    monkeypatch.setattr(runner, "DEFAULT_OUT", tmp_path / "out")
    full = _full_result(tmp_path / "out" / "ot-targets")
    quick = experiments.run("ot-targets", quick=True)
    seeded = experiments.run("ot-targets", quick=True, seed=3)
    assert (tmp_path / "out" / "ot-targets" / "results.json").read_bytes() == full
    assert (tmp_path / "out" / "ot-targets" / "ot_targets.png").read_bytes() == b"the full run's figure"
    assert json.loads((tmp_path / "out-quick" / "ot-targets" / "results.json").read_text())["quick"] is True
    assert json.loads((tmp_path / "out-quick-seed3" / "ot-targets" / "results.json").read_text())["seed"] == 3
    assert quick["seed"] == 0 and seeded["seed"] == 3
    assert runner.default_out(seed=7) == tmp_path / "out-seed7" and runner.default_out() == tmp_path / "out"


def test_an_explicit_out_never_replaces_a_full_run_with_a_smaller_one(tmp_path, monkeypatch):
    from experiments import runner

    full = _full_result(tmp_path / "ot-targets")
    monkeypatch.setattr(runner, "load", lambda name: pytest.fail("refused runs must not compute"))
    for kwargs in ({"quick": True}, {"seed": 5}, {"quick": True, "seed": 5}):
        with pytest.raises(experiments.RunRefused, match=r"holds a full run with seed 0.*--out"):
            experiments.run("ot-targets", out=tmp_path, **kwargs)
    assert (tmp_path / "ot-targets" / "results.json").read_bytes() == full
    # the same full run may be regenerated in place, and a full run at seed 5 replaces only its own kind
    assert runner.prepare_output("ot-targets", quick=False, seed=0, out=tmp_path) == tmp_path / "ot-targets"
    (tmp_path / "garbled" / "ot-targets").mkdir(parents=True)
    (tmp_path / "garbled" / "ot-targets" / "results.json").write_text("{not json")
    with pytest.raises(experiments.RunRefused, match="not a readable results.json"):
        runner.prepare_output("ot-targets", quick=False, seed=0, out=tmp_path / "garbled")


def test_cli_says_where_the_results_went_and_refuses_to_replace_a_full_run(tmp_path):
    full = _full_result(tmp_path / "ot-targets")
    refused = run_cli("run", "ot-targets", "--quick", "--out", str(tmp_path))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "holds a full run" in refused.stderr
    assert (tmp_path / "ot-targets" / "results.json").read_bytes() == full
    ran = run_cli("run", "ot-targets", "--quick", "--out", str(tmp_path / "q"))
    assert ran.returncode == 0, ran.stderr
    assert (f"ot-targets: results in {tmp_path / 'q' / 'ot-targets'} (results.json, ot_targets.png, ot_targets_cost.png, "
            "ot_targets_multiclass.png)") in ran.stderr


# ------------------------------------------------------------------- issue 9, item 5: seeds that mean something
def test_run_seeds_are_independent_spawned_streams(tmp_path):
    from experiments.experiment import RunContext

    def seeds(seed: int, n: int) -> list[int]:
        return RunContext("x", tmp_path, seed, False).seeds(n)

    # numpy's SeedSequence.spawn, computed independently, each child's first 32-bit word
    assert seeds(7, 3) == [int(np.random.SeedSequence(7, spawn_key=(i,)).generate_state(1)[0]) for i in range(3)]
    assert seeds(0, 50)[:5] == seeds(0, 5)  # child i does not depend on how many are drawn
    assert not set(seeds(0, 50)) & set(seeds(1, 50)), "runs at seeds 0 and 1 share a stream"
    assert all(0 <= s < 2**32 for s in seeds(2**64 - 1, 10))  # torch, numpy and scikit-learn all take them
    with pytest.raises(ValueError, match="n must be a positive integer"):
        seeds(0, 0)


def _seed_arithmetic(path: Path) -> list[str]:
    """Expressions that add to or multiply a seed (``seed + s``, ``ctx.seed + 100``): overlapping streams."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            for side in (node.left, node.right):
                name = side.attr if isinstance(side, ast.Attribute) else getattr(side, "id", "")
                if name == "seed" or name.endswith("_seed"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_seed_arithmetic_in_experiments_or_scaleup():
    offenders = [line for pkg in ("experiments", "scaleup") for p in sorted((ROOT / pkg).rglob("*.py"))
                 for line in _seed_arithmetic(p)]
    assert not offenders, "derive streams with RunContext.seeds (SeedSequence.spawn) instead:\n" + "\n".join(offenders)


def test_dft_training_repeats_differ_between_run_seeds(tmp_path):
    """`--seed 0` and `--seed 1` used to share all but one repeat (seed + s); now they share none."""
    from experiments import dft_training as dft
    from experiments.experiment import RunContext

    cfg = dft.TrainingConfig(steps=4, iterations=3, seeds=2)
    a, b = (dft.run_training(cfg, RunContext("dft-training", tmp_path, seed, True)) for seed in (0, 1))
    for opt in ("adam", "sgd"):
        got, other = a["optimisers"][opt]["adjusted"], b["optimisers"][opt]["adjusted"]
        assert len(got["final_loss_per_seed"]) == 2
        assert not set(got["final_loss_per_seed"]) & set(other["final_loss_per_seed"])
        assert got["final_loss"] == pytest.approx(np.mean(got["final_loss_per_seed"]), rel=1e-12)
        assert got["final_loss_sd"] == pytest.approx(np.std(got["final_loss_per_seed"], ddof=1), rel=1e-12)
    # under Adam a global rescale of the gradient is invisible: the standardised and unstandardised runs coincide
    adam = a["optimisers"]["adam"]
    np.testing.assert_allclose(adam["adjusted"]["final_loss_per_seed"],
                               adam["adjusted_unstandardised"]["final_loss_per_seed"], rtol=1e-6)


def test_dft_training_divergence_rule():
    from experiments.dft_training import divergence

    assert divergence(np.array([5.0, 1.0, 0.5, 0.4]), 2) == (False, None)
    assert divergence(np.array([5.0, 6.0, 0.5, 0.4]), 2) == (False, 1)  # a transient excursion is not divergence
    assert divergence(np.array([5.0, 1.0, 9.0, 8.0]), 2) == (True, 2)
    assert divergence(np.array([5.0, 1.0, np.nan, np.nan]), 2) == (True, 2)
