"""Both papers' protocols from one evaluation, their intervals, and the paired comparison (issue 20), on the committed
testbed: numbers recomputed independently from records.csv, and a run with fewer images reproducing the first ones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from scaleup.evaluate import EvalConfig, run_eval, summary_lines
from scaleup.evaluation.compare import compare_evaluations, main as compare_main

TESTBED = Path(__file__).resolve().parent.parent / "scaleup" / "testbed" / "digits-ink"
ADAPTER = (Path(__file__).resolve().parent.parent / "paper_figures" / "out" / "testbed-methods" / "adapters" /
           "adft-text-lora-long" / "seed-0" / "final" / "lora")


def _config(out, **kw) -> EvalConfig:
    evaluate = json.loads((TESTBED / "evaluate.json").read_text())
    base = dict(evaluate, pipeline=str(TESTBED), prompts=str(TESTBED / "prompts" / "training.txt"), max_prompts=2,
                num_inference_steps=4, batch_size=20, out=str(out), bootstrap_resamples=200, grid_images=0)
    return EvalConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    both = run_eval(_config(root / "both", protocol="both"), progress=False)
    adft = run_eval(_config(root / "adft"), progress=False)
    lora = run_eval(_config(root / "lora", protocol="both", lora=str(ADAPTER), reference=str(root / "both")),
                    progress=False)
    return root, both, adft, lora


def _rows(folder: Path) -> list[dict]:
    with open(folder / "records.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_each_protocol_reads_its_own_images_per_prompt_from_one_run(runs):
    root, both, adft, _ = runs
    assert both["config"]["images_per_prompt"] == 100 and adft["config"]["images_per_prompt"] == 60
    assert set(both["protocols"]) == {"adft", "popalign"} and set(adft["protocols"]) == {"adft"}
    # image i of a prompt has one seed in every run: the 60-image run is the 100-image run's first 60 images (bit
    # for bit: batches of 20 split both runs' images alike)
    first = [r for r in _rows(root / "both") if int(r["image_index"]) < 60]
    assert first == _rows(root / "adft")
    assert both["protocols"]["adft"]["value"] == adft["protocols"]["adft"]["value"]
    assert both["protocols"]["adft"]["images_per_prompt"] == 60 and not both["protocols"]["adft"]["short_of_protocol"]


def test_protocol_numbers_recomputed_from_the_records_table(runs):
    root, both, _, _ = runs
    rows = _rows(root / "both")
    prompts = sorted({int(r["prompt_index"]) for r in rows})
    biases = []
    for p in prompts:  # seed 000 [0124] by hand: mean |freq(red) - freq(blue)| over the first 60 images
        labels = [r["label"] for r in rows if int(r["prompt_index"]) == p and int(r["image_index"]) < 60]
        red = labels.count("red") / len(labels)
        biases.append(abs(red - (1 - red)))
    assert both["protocols"]["adft"]["value"] == pytest.approx(np.mean(biases), abs=1e-12)
    probs = np.array([[float(r["p_red"]), float(r["p_blue"])] for r in rows])  # every image has the whole-image "face"
    assert both["protocols"]["popalign"]["value"] == pytest.approx(np.linalg.norm(probs.mean(0) - 0.5), abs=1e-12)
    for name in ("adft", "popalign"):
        interval = both["protocols"][name]["interval"]
        assert interval["low"] <= both["protocols"][name]["value"] <= interval["high"]
        assert interval["n_resamples"] == 200 and interval["level"] == 0.95
    text = summary_lines(both)
    assert "protocol adft: mean bias over prompts" in text and "comparable to seed 001 Table 1" in text


def test_paired_comparison_of_the_finetune_against_the_original(runs, capsys):
    root, both, _, lora = runs
    same = compare_evaluations(root / "both", root / "both", n_resamples=100)
    for d in same["differences"].values():
        assert d["difference"] == 0.0 and d["interval"]["low"] == d["interval"]["high"] == 0.0
    result = compare_evaluations(root / "both", root / "lora", n_resamples=300)
    for name in ("adft", "popalign"):
        d = result["differences"][name]
        assert d["a"] == both["protocols"][name]["value"] and d["b"] == lora["protocols"][name]["value"]
        assert d["difference"] == pytest.approx(d["b"] - d["a"])
        assert d["interval"]["low"] <= d["difference"] <= d["interval"]["high"]
    assert compare_main([str(root / "both"), str(root / "lora"), "--out", str(root / "cmp.json")]) == 0
    assert "B - A" in capsys.readouterr().out and json.loads((root / "cmp.json").read_text())["differences"]
    # --reference compares the evaluation in memory, before its one write: the same as comparing it from disk
    afterwards = compare_evaluations(root / "both", root / "lora", n_resamples=lora["config"]["bootstrap_resamples"],
                                     level=lora["config"]["confidence"])
    assert lora["comparison"]["differences"] == afterwards["differences"]


def test_evaluations_of_other_noise_are_not_paired(runs, tmp_path, capsys):
    root, _, _, _ = runs
    other = run_eval(_config(tmp_path / "other", seed=5, max_prompts=1, images_per_prompt=4, protocol="adft"),
                     progress=False)
    assert other["protocols"]["adft"]["short_of_protocol"] is True
    capsys.readouterr()
    assert compare_main([str(root / "adft"), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "seeded differently (0 and 5)" in err and err.count("\n") == 1
    assert compare_main([str(root / "adft"), str(tmp_path / "missing")]) == 2
    assert "holds no finished evaluation" in capsys.readouterr().err


@pytest.mark.parametrize("kw, message", [(dict(protocol="deepface"), "protocol must be adft, popalign or both"),
                                         (dict(bootstrap_resamples=-1), "bootstrap_resamples must be an integer"),
                                         (dict(confidence=1.0), r"confidence must lie in \(0, 1\)")])
def test_bad_protocol_settings_fail_before_any_load(tmp_path, kw, message):
    from scaleup.evaluate import validate

    with pytest.raises(ValueError, match=message):
        validate(_config(tmp_path, **kw))


def test_the_report_beside_results_shows_numbers_prompts_grids_and_the_reference(runs):
    root, both, _, lora = runs
    assert lora["comparison"]["differences"]["adft"]["a"] == both["protocols"]["adft"]["value"]
    report = (root / "lora" / "report.md").read_text()
    assert report.startswith("# Bias evaluation: ink:red,blue on training.txt")
    assert f"| adft | {lora['protocols']['adft']['statistic']} | {lora['protocols']['adft']['value']:.3f} |" in report
    assert f"## Against the reference `{root / 'both'}`" in report
    assert "| a handwritten zero |" in report and "![](grids/prompt_00000.png)" not in report  # grid_images 0
    assert "against the reference" in summary_lines(lora)


def test_a_reference_that_is_not_a_finished_evaluation_is_refused_before_any_load(tmp_path):
    from scaleup.evaluate import validate

    with pytest.raises(ValueError, match="reference .* holds no finished evaluation"):
        validate(_config(tmp_path / "x", reference=str(tmp_path)))


def test_a_guidance_sweep_in_one_run_shares_the_noise_and_compares_each_scale_to_the_first(runs, tmp_path, capsys):
    from scaleup.evaluate import main

    root, both, _, _ = runs
    sweep = run_eval(_config(tmp_path / "sweep", protocol="both", guidance_scales=(1.0, 7.5)), progress=False)
    assert [s["guidance_scale"] for s in sweep["per_guidance_scale"]] == [1.0, 7.5]
    at_75 = json.loads((tmp_path / "sweep" / "cfg-7.5" / "results.json").read_text())
    # the 7.5 sub-evaluation is the plain evaluation at 7.5 (the fixture's "both" run), record for record
    assert (tmp_path / "sweep" / "cfg-7.5" / "records.csv").read_text() == (root / "both" / "records.csv").read_text()
    assert at_75["protocols"]["adft"]["value"] == both["protocols"]["adft"]["value"]
    d = sweep["versus_first_scale"][0]
    first = sweep["per_guidance_scale"][0]["protocols"]
    assert d["guidance_scale"] == 7.5 and d["adft"]["a"] == first["adft"]["value"]
    assert d["adft"]["difference"] == pytest.approx(both["protocols"]["adft"]["value"] - first["adft"]["value"])
    assert (tmp_path / "sweep" / "report.md").read_text().startswith("# Bias against guidance scale")
    capsys.readouterr()
    assert main(["--config", str(TESTBED / "evaluate.json"), "--pipeline", str(TESTBED), "--prompts",
                 str(TESTBED / "prompts" / "training.txt"), "--max-prompts", "2", "--num-inference-steps", "4",
                 "--batch-size", "20", "--bootstrap-resamples", "50", "--guidance-scales", "1,7.5", "--protocol", "both",
                 "--grid-images", "0", "--out",
                 str(tmp_path / "sweep")]) == 0  # a rerun resumes every scale's records
    assert "w = 7.5 minus w = 1 (same noise): adft" in capsys.readouterr().err


@pytest.mark.parametrize("scales", [(7.5,), (1.0, 1.0), (1.0, float("nan")), (-1.0, 2.0)])
def test_bad_guidance_scales_are_refused_before_any_load(tmp_path, scales):
    from scaleup.evaluate import validate

    with pytest.raises(ValueError, match="guidance_scales must be two or more distinct finite numbers"):
        validate(_config(tmp_path, guidance_scales=scales))
