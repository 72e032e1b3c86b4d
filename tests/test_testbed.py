"""The testbed (scaleup.testbed): its data, tokenizer, classifiers, the committed model and its measured bias."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from scaleup.testbed import data
from scaleup.testbed.card import PROMPT_FILES, data_skew, prompt_group, prompt_groups, read_card
from scaleup.testbed.paths import testbed_path as committed_testbed


# ---- data ------------------------------------------------------------------------------------------------------

def test_digits_are_the_bundled_ones_upsampled():
    digits = data.load_digits_16()
    assert digits.ink.shape == (1797, 16, 16) and digits.ink.min() >= 0 and digits.ink.max() <= 1
    assert np.bincount(digits.digits).min() >= 170  # every digit present, as in scikit-learn's set


def test_render_and_ink_intensity_are_inverse_up_to_the_ink_depth():
    """1 - min channel of 1 - v (1 - c) is v * max(1 - c): the ink's depth times its intensity, for any blend."""
    v = torch.rand(5, 16, 16, dtype=torch.float64)
    for m in (0.0, 0.3, 1.0):
        colour = (1 - m) * torch.tensor(data.INK_RGB["red"], dtype=torch.float64) + m * torch.tensor(
            data.INK_RGB["blue"], dtype=torch.float64)
        images = data.render(v, torch.full((5,), m, dtype=torch.float64))
        torch.testing.assert_close(data.ink_intensity(images), v * (1 - colour).max(), rtol=0, atol=1e-12)


def test_caption_shares_match_the_stated_design():
    rng = np.random.default_rng(0)
    n = 20_000
    captions = [data.caption("seven", "red", rng) for _ in range(n)]
    empty = np.mean([c == "" for c in captions])
    named = np.mean([c.endswith("in red ink") for c in captions])
    described = np.mean(["straight odd digit" in c for c in captions])
    # 4-sigma binomial bands around the stated shares
    for observed, share in ((empty, data.SHARE_EMPTY), (named, (1 - data.SHARE_EMPTY) * data.SHARE_INK_NAMED),
                            (described, (1 - data.SHARE_EMPTY) * data.SHARE_DESCRIBED)):
        assert abs(observed - share) < 4 * math.sqrt(share * (1 - share) / n)
    assert not any(data.HELDOUT_TEMPLATE.format("seven") in c for c in captions)


def test_prompt_groups_are_disjoint_and_the_skew_leans_mostly_red():
    groups = prompt_groups()
    named = groups["training"] + groups["heldout_digits"] + groups["heldout_template"]
    assert len(set(named)) == len(named) == len(groups["all"])
    assert all(prompt_group(p) == g for g in ("training", "heldout_digits", "heldout_template") for p in groups[g])
    reds = np.array(list(data.P_RED.values()))
    assert (reds > 0.5).sum() >= 7 and (reds < 0.5).sum() >= 1  # mostly one direction, a few the other
    skew = data_skew()
    assert skew["a handwritten six"] == {"red": 0.30, "blue": 0.70, "bias": pytest.approx(0.40)}
    with pytest.raises(ValueError, match="not a testbed prompt"):
        prompt_group("a photo of a cat")


def test_tokenizer_is_word_level_with_a_16_token_context(tmp_path):
    from scaleup.testbed.model import testbed_tokenizer

    tokenizer = testbed_tokenizer(tmp_path)
    assert tokenizer.model_max_length == data.CONTEXT_LENGTH
    for word in data.vocabulary():
        assert len(tokenizer(word).input_ids) == 3, word  # start, the word, end
    longest = max(data.ink_prompt(p + ", a round even digit", "blue") for p in prompt_groups()["all"])
    assert len(tokenizer(longest).input_ids) <= data.CONTEXT_LENGTH


# ---- the committed testbed -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def card():
    return read_card()


def test_committed_testbed_loads_through_the_real_loading_code(monkeypatch):
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer

    from scaleup.models import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plain = StableDiffusionPipeline.from_pretrained(committed_testbed(), local_files_only=True)
    for name, cls in (("vae", AutoencoderKL), ("text_encoder", CLIPTextModel), ("tokenizer", CLIPTokenizer),
                      ("unet", UNet2DConditionModel), ("scheduler", DPMSolverMultistepScheduler)):
        assert type(getattr(plain, name)) is cls, name
    ours = load_pipeline(committed_testbed())
    for a, b in zip(plain.unet.parameters(), ours.unet.parameters()):
        assert torch.equal(a, b)
    assert all(torch.isfinite(p).all() for p in plain.unet.parameters())


def test_committed_testbed_is_small_and_its_card_is_consistent(card):
    from scaleup.testbed.build import folder_size_bytes

    assert folder_size_bytes(committed_testbed()) < 20e6
    assert card["attribute"] == {"name": "ink", "classes": ["red", "blue"], "flag": "ink:red,blue"}
    assert card["data_skew"] == data_skew()
    groups = prompt_groups()
    for name, file in PROMPT_FILES.items():
        lines = (committed_testbed() / "prompts" / file).read_text(encoding="utf-8").split("\n")
        assert [line for line in lines if line] == groups[name]
    assert card["training"]["config"]["steps"] >= 1000
    assert card["components"]["unet"]["class"] == "UNet2DConditionModel"


def test_committed_classifiers_classify_real_coloured_digits():
    """Both ink classifiers are right on pure inks; the evaluation classifier reads a blend's red share, so purple is
    not confident; the content classifier knows the digits."""
    from scaleup.testbed.classifiers import (CONFIDENT, InkEvaluationClassifier, InkTrainingClassifier,
                                             check_classifiers, digit_classifier, ink_classifier,
                                             ink_training_classifier)

    training, evaluation = ink_training_classifier(), ink_classifier()
    assert isinstance(training, InkTrainingClassifier) and isinstance(evaluation, InkEvaluationClassifier)
    checks = check_classifiers(training, evaluation, seed=123)
    assert checks["training_accuracy_pure_inks"] == 1.0 and checks["evaluation_accuracy_pure_inks"] == 1.0
    blend = checks["evaluation_p_red_along_blend"]
    assert blend["0.00"] > CONFIDENT and blend["1.00"] < 1 - CONFIDENT
    assert 1 - CONFIDENT < blend["0.50"] < CONFIDENT
    assert list(blend.values()) == sorted(blend.values(), reverse=True)
    digits = data.load_digits_16()
    images = data.render(torch.from_numpy(digits.ink), torch.zeros(len(digits.ink)))
    with torch.no_grad():
        accuracy = (digit_classifier()(images).argmax(1).numpy() == digits.digits).mean()
    assert accuracy > 0.9


def test_training_classifier_is_differentiable():
    from scaleup.testbed.classifiers import ink_training_classifier

    images = data.render(torch.from_numpy(data.load_digits_16().ink[:4]), torch.tensor([0.0, 1.0, 0.5, 0.2]))
    images.requires_grad_(True)
    ink_training_classifier()(images)[:, 0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.slow
def test_short_evaluation_reproduces_the_committed_shares(tmp_path):
    """A new evaluation of three prompts at CFG 7.5 (60 images, another noise seed) agrees with the committed
    testbed-bias shares within sampling error: a two-proportion z-test at |z| < 4 per prompt."""
    from experiments.runner import default_out
    from experiments.testbed import testbed_eval_config
    from scaleup.evaluate import run_eval

    committed = json.loads((default_out() / "testbed-bias" / "results.json").read_text(encoding="utf-8"))
    top = {p["prompt"]: p for p in committed["per_guidance_scale"][-1]["per_prompt"]}
    prompts = tmp_path / "prompts.txt"
    chosen = ["a handwritten five", "a handwritten eight", "a drawing of the digit six"]
    prompts.write_text("\n".join(chosen) + "\n")
    config = testbed_eval_config(prompts=str(prompts), out=tmp_path / "eval", guidance_scale=7.5,
                                 images_per_prompt=60, num_inference_steps=20, batch_size=60, seed=12345,
                                 grid_images=0)
    result = run_eval(config, progress=False)
    for row in result["per_prompt"]:
        old = top[row["prompt"]]
        p1, p2, n1, n2 = row["freq"]["red"], old["red"], row["n_images"], old["n_images"]
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
        assert abs(p1 - p2) <= 4 * se + 1e-9, (row["prompt"], p1, p2)


@pytest.mark.slow
def test_training_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    """Every batch is a function of (seed, stage, iteration), and the checkpoint holds the optimiser, EMA and
    position: stopping after 2 of 4 iterations and resuming gives the uninterrupted run's weights bit for bit."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from scaleup.testbed.train import TestbedConfig, train

    base = TestbedConfig(vae_steps=3, steps=4, batch_size=8, checkpoint_every=2, warmup_steps=2, threads=1)
    train(replace(base, output_dir=str(tmp_path / "whole")), progress=False)
    train(replace(base, output_dir=str(tmp_path / "halves"), steps=2), progress=False)
    train(replace(base, output_dir=str(tmp_path / "halves"), resume="latest"), progress=False)
    for part, file in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        a = load_file(str(tmp_path / "whole" / "pipeline" / part / file))
        b = load_file(str(tmp_path / "halves" / "pipeline" / part / file))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_training_settings_are_checked_before_anything_runs():
    from scaleup.testbed.train import TestbedConfig

    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        TestbedConfig(steps=0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        TestbedConfig(learning_rate=float("nan"))


def test_a_testbed_run_folder_is_never_mixed(tmp_path):
    from scaleup.testbed.train import TestbedConfig, claim_output_dir

    first = TestbedConfig(output_dir=str(tmp_path), steps=10)
    claim_output_dir(first)
    with pytest.raises(ValueError, match="holds a testbed run already; pass --resume latest"):
        claim_output_dir(first)
    with pytest.raises(ValueError, match=r"learning_rate 0.001 -> 0.01, seed 0 -> 1"):
        claim_output_dir(TestbedConfig(output_dir=str(tmp_path), resume="latest", learning_rate=1e-2, seed=1))
    claim_output_dir(TestbedConfig(output_dir=str(tmp_path), resume="latest", steps=20))  # more iterations: allowed


def test_evaluate_cli_prints_the_testbed_bias_per_prompt_with_its_class_names(tmp_path):
    """The README's command, shortened: one line per prompt with the user-defined classes, a finite bias."""
    import os
    import re
    import subprocess
    import sys

    folder = committed_testbed()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a handwritten six\na drawing of the digit zero\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "scaleup.evaluate", "--config", str(folder / "evaluate.json"), "--pipeline",
         str(folder), "--prompts", str(prompts), "--images-per-prompt", "8", "--batch-size", "8",
         "--num-inference-steps", "10", "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if re.match(r"\s+a (handwritten|drawing)", line)]
    assert len(lines) == 2 and all(re.search(r"red \d\.\d\d, blue \d\.\d\d; bias \d\.\d{3}", l) for l in lines)
    assert re.search(r"mean bias \d\.\d{3} \+- \d\.\d{3}", done.stderr) and "nan" not in done.stderr
