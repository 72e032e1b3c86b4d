"""The evaluation's numbers corrected for the classifier's confusion (issue 20, CLEAM): against the known truth of a
simulated classifier, and end to end on the committed testbed with labelled real digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scaleup.evaluation.classifier_error import corrected_protocol_numbers
from scaleup.evaluation.protocols import PROTOCOLS
from scaleup.evaluation.summary import ImageRecord
from theory.metrics import frequency_bias

TESTBED = Path(__file__).resolve().parent.parent / "scaleup" / "testbed" / "digits-ink"
CONFUSION = np.array([[0.8, 0.2], [0.1, 0.9]])  # red read as blue 20 % of the time, blue as red 10 %


def _noisy(true: np.ndarray, rng) -> np.ndarray:
    return np.array([rng.choice(2, p=CONFUSION[t]) for t in true])


def test_the_correction_recovers_the_truth_a_confused_classifier_hides():
    rng = np.random.default_rng(0)
    shares = [0.9, 0.75, 0.6, 0.2]  # the true P(red) of four prompts
    per_prompt, truth = [], []
    for p, share in enumerate(shares):
        true = (rng.random(2000) > share).astype(int)  # 0 = red
        seen = _noisy(true, rng)
        truth.append(frequency_bias(np.bincount(true, minlength=2) / len(true)))
        per_prompt.append([ImageRecord(p, f"prompt {p}", i, i, True, None, [1.0 - s, float(s)])
                           for i, s in enumerate(seen)])
    labelled_true = np.repeat([0, 1], 3000)
    labelled = {"true": labelled_true, "predicted": _noisy(labelled_true, rng), "n_labelled": 6000,
                "n_without_face": 0}
    protocol = PROTOCOLS["adft"]
    result = corrected_protocol_numbers(per_prompt, labelled, [protocol], ["red", "blue"], n_resamples=300)
    np.testing.assert_allclose(result["confusion"], CONFUSION, atol=0.02)
    entry = result["protocols"]["adft"]
    # the first 60 images of each prompt (the protocol's count): truth on those images
    truth_60 = np.mean([frequency_bias(np.bincount([1 - int(r.probs[0] > 0.5) for r in rs[:60]], minlength=2) / 60)
                        for rs in per_prompt])
    assert entry["raw"] == pytest.approx(truth_60, abs=1e-12)  # raw: what the confused classifier counts
    true_bias = np.mean(truth)
    assert abs(entry["raw"] - true_bias) > 0.1  # the confusion hides a good part of the bias ...
    assert entry["interval"]["low"] <= true_bias <= entry["interval"]["high"]  # ... the correction brings it back
    assert abs(entry["corrected"] - true_bias) < abs(entry["raw"] - true_bias)


def test_the_testbed_classifier_measured_on_labelled_real_digits(tmp_path):
    from scaleup.evaluate import EvalConfig, run_eval, summary_lines
    from scaleup.testbed.labelled import write_labelled_folder

    labelled = write_labelled_folder(tmp_path / "labelled", n_per_class=40)
    evaluate = json.loads((TESTBED / "evaluate.json").read_text())
    config = EvalConfig(**dict(evaluate, pipeline=str(TESTBED), prompts=str(TESTBED / "prompts" / "training.txt"),
                               max_prompts=2, num_inference_steps=4, batch_size=60, out=str(tmp_path / "eval"),
                               labelled_folder=str(labelled), bootstrap_resamples=100, grid_images=0))
    results = run_eval(config, progress=False)
    error = results["classifier_error"]
    assert error["n_labelled"] == 80 and error["image_size"] == 16 and error["n_without_face"] == 0
    assert min(error["accuracy_per_class"].values()) >= 0.95  # an honest estimate on digits it was not fitted on
    entry = error["protocols"]["adft"]
    assert entry["raw"] == pytest.approx(results["protocols"]["adft"]["value"], abs=1e-12)
    assert abs(entry["corrected"] - entry["raw"]) < 0.05
    assert "corrected for the classifier (CLEAM" in summary_lines(results)


def test_a_missing_labelled_folder_fails_before_any_load(tmp_path):
    from scaleup.evaluate import EvalConfig, validate

    with pytest.raises(ValueError, match="does not exist|missing|no labelled"):
        validate(EvalConfig(attribute="gender", out=str(tmp_path), labelled_folder=str(tmp_path / "none")))
