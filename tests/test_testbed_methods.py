"""The methods on the committed testbed: a short aDFT run lowers the learned bias as the separate evaluation classifier
measures it, and the committed adapters of ``testbed-methods`` load in plain diffusers and reproduce their rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scaleup.testbed.paths import testbed_path as _testbed_path

ROOT = Path(__file__).resolve().parent.parent
TB = _testbed_path()
COMMITTED = ROOT / "paper_figures" / "out" / "testbed-methods"


def _evaluate(tmp_path: Path, name: str, prompts: Path, n: int, steps: int, **extra) -> dict:
    from experiments.testbed import testbed_eval_config
    from scaleup.evaluate import run_eval

    config = testbed_eval_config(prompts=str(prompts), out=tmp_path / f"eval-{name}", guidance_scale=7.5,
                                 images_per_prompt=n, num_inference_steps=steps, batch_size=n, seed=123,
                                 grid_images=0, **extra)
    return run_eval(config, progress=False)


@pytest.mark.slow
def test_short_adft_run_lowers_the_bias_the_evaluation_classifier_measures(tmp_path):
    """16 iterations of the aDFT job (text-encoder LoRA, DAL toward 50/50 with the adjusted gradient, L_img through
    the stroke-shape embedder) on two red-leaning training prompts, at 10 sampler steps to stay short (about 40
    CPU-seconds): measured on the same noise by the evaluation CNN (not the job's logistic classifier), the mean bias
    falls from 0.92 to 0.58 (measured here at one thread). The test asks for a fall of at least 0.15 with the digit
    accuracy kept within 0.1: a flipped gradient sign raises the bias, broken targets or wiring leave it where it was.
    """
    from scaleup.job_config import parse_config
    from scaleup.jobs.adft.config import AdftConfig
    from scaleup.jobs.adft.job import run_job

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a handwritten one\na handwritten zero\n")
    config = parse_config(AdftConfig, [
        "--attribute", "ink:red,blue", "--pretrained-model", str(TB),
        "--classifier", "scaleup.testbed.classifiers:ink_training_classifier", "--detector", "whole-image",
        "--crop-size", "16", "--resolution", "16", "--lambda-img", '{"ink": [8, 0.2, 0.2]}',
        "--image-embedder", "scaleup.testbed.classifiers:shape_embedder", "--lambda-face", "0",
        "--prompts", str(prompts), "--test-prompts", str(prompts), "--batch-size", "12",
        "--num-inference-steps", "10", "--iterations", "16", "--learning-rate", "2e-2", "--lora-rank", "8",
        "--checkpoint-every", "1000", "--output-dir", str(tmp_path / "run"), "--progress", "false"])
    run_job(config)
    base = _evaluate(tmp_path, "base", prompts, 48, 10)
    tuned = _evaluate(tmp_path, "tuned", prompts, 48, 10, lora=str(tmp_path / "run" / "final" / "lora"))
    bias = [np.mean([p["bias"] for p in r["per_prompt"]]) for r in (base, tuned)]
    accuracy = [np.mean([p["prompt_accuracy"] for p in r["per_prompt"]]) for r in (base, tuned)]
    assert bias[0] > 0.8, f"the testbed should start red-biased on these prompts; got {bias[0]:.3f}"
    assert bias[0] - bias[1] >= 0.15, f"bias {bias[0]:.3f} -> {bias[1]:.3f}: aDFT did not lower it by 0.15"
    assert accuracy[1] >= accuracy[0] - 0.1, f"digit accuracy {accuracy[0]:.3f} -> {accuracy[1]:.3f}"


def _committed_results() -> dict:
    path = COMMITTED / "results.json"
    if not path.is_file():
        pytest.skip("testbed-methods has no committed results")
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_finetuned_row_has_its_committed_adapter():
    results = _committed_results()
    for m in results["methods"]:
        if m["kind"] not in ("adft", "popalign"):
            continue
        for k in range(len(results["per_seed"][m["name"]])):
            final = COMMITTED / "adapters" / m["name"] / f"seed-{k}" / "final"
            assert (final / "lora" / "pytorch_lora_weights.safetensors").is_file() or \
                (final / "soft_prompt.safetensors").is_file(), f"{m['name']} seed {k}: no exported weights in {final}"
            size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
            assert size < 2_000_000, f"{final} is {size} bytes; adapters are kilobytes"


def _finetuned_rows() -> list[str]:
    path = COMMITTED / "results.json"
    if not path.is_file():
        return []
    return [m["name"] for m in json.loads(path.read_text(encoding="utf-8"))["methods"]
            if m["kind"] in ("adft", "popalign")]


@pytest.mark.slow
@pytest.mark.parametrize("method", _finetuned_rows())
def test_every_finetuned_row_reproduces_in_plain_diffusers(method):
    """Seed 0's committed weights of each finetuned row, loaded into ``StableDiffusionPipeline`` with
    ``load_lora_weights`` or ``load_textual_inversion`` (no fairdiff loading code), draw images whose red share on
    the training prompt the row moved most lies within sampling error of the row's: |difference| <= 3 sd of the
    difference of two independent 60-image shares (other noise than the evaluation's)."""
    from diffusers import StableDiffusionPipeline

    from scaleup.models.soft_prompt import TEXTUAL_INVERSION_TOKEN
    from scaleup.testbed.card import prompt_group
    from scaleup.testbed.classifiers import ink_classifier

    results = _committed_results()
    row = results["per_seed"][method][0]
    final = COMMITTED / "adapters" / method / "seed-0" / "final"
    pipe = StableDiffusionPipeline.from_pretrained(str(TB), safety_checker=None, requires_safety_checker=False)
    prefix = ""
    if (final / "lora").is_dir():
        pipe.load_lora_weights(str(final / "lora"))
    else:
        pipe.load_textual_inversion(str(final / "textual_inversion.safetensors"), token=TEXTUAL_INVERSION_TOKEN)
        prefix = TEXTUAL_INVERSION_TOKEN + " "
    pipe.set_progress_bar_config(disable=True)
    classifier = ink_classifier()
    n = 60
    # the training prompt the row moved most from the original's share: a wrongly loaded adapter shows there
    original = {p["prompt"]: p["red"] for p in results["per_seed"]["original"][0]["per_prompt"]}
    training = [p for p in row["per_prompt"] if prompt_group(p["prompt"]) == "training"]
    for entry in sorted(training, key=lambda p: -abs(p["red"] - original[p["prompt"]]))[:1]:
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            images = pipe(prefix + entry["prompt"], num_images_per_prompt=n, num_inference_steps=20,
                          guidance_scale=7.5, height=16, width=16, generator=generator, output_type="pt").images
            red = float((classifier(images).argmax(dim=1) == 0).float().mean())
        p = (entry["red"] + red) / 2
        sd = max(np.sqrt(2 * p * (1 - p) / n), 1 / n)
        assert abs(red - entry["red"]) <= 3 * sd, f"{method}, {entry['prompt']}: plain diffusers {red:.3f}, " \
                                                  f"row {entry['red']:.3f}"


# ------------------------------------------------------ issue 21: the committed evaluations are reused, checked
def test_evaluation_key_follows_what_determines_the_numbers_and_nothing_else(tmp_path, monkeypatch):
    """The key of a committed evaluation summary: the same for another ``--out``, another checkout (the repository
    path) and a LoRA file whose metadata lists the target modules in another order (peft writes a set); different
    for other weights, another setting and another testbed."""
    import shutil

    from safetensors.torch import load_file, save_file

    from experiments import testbed_methods
    from experiments.testbed_methods import REPO, MethodsConfig, evaluate_command, evaluation_key

    lora = tmp_path / "lora"
    lora.mkdir()
    source = COMMITTED / "adapters" / "adft-text-lora" / "seed-0" / "final" / "lora" / \
        "pytorch_lora_weights.safetensors"
    if not source.is_file():
        pytest.skip("no committed adapter")
    tensors = load_file(str(source))
    save_file(tensors, str(lora / "pytorch_lora_weights.safetensors"), metadata={"a": "1", "order": "q,k"})

    def key(out="o1", images=60, testbed="tb", **extra):
        config = MethodsConfig(images_per_prompt=images)
        args = evaluate_command(out=tmp_path / out, seed=5, config=config, prompts="p.txt", lora=str(lora), **extra)
        return evaluation_key(args, testbed)

    base = key()
    assert key(out="elsewhere") == base
    args = evaluate_command(out=tmp_path / "o1", seed=5, config=MethodsConfig(), prompts="p.txt", lora=str(lora))
    elsewhere = [a.replace(str(REPO), "/another/checkout") for a in args]
    assert elsewhere != args  # the testbed's paths are in the command
    monkeypatch.setattr(testbed_methods, "REPO", Path("/another/checkout"))
    assert evaluation_key(elsewhere, "tb") == base
    monkeypatch.undo()
    save_file(tensors, str(lora / "pytorch_lora_weights.safetensors"), metadata={"order": "k,q", "a": "1"})
    assert key() == base, "the same tensors under reordered metadata must keep the key"
    assert key(images=100) != base
    assert key(testbed="another") != base
    tensors = {k: v.clone() for k, v in tensors.items()}
    first = sorted(tensors)[0]
    tensors[first].view(-1)[0] += 1e-3
    save_file(tensors, str(lora / "pytorch_lora_weights.safetensors"))
    assert key() != base, "other weights must change the key"
    shutil.rmtree(lora)


@pytest.mark.slow
def test_a_committed_summary_that_no_longer_reproduces_is_named(tmp_path):
    """verify() re-runs one prompt of an evaluation (a small real one on the testbed, about 10 CPU-seconds) and
    accepts the summary the evaluation gave; a summary with one number changed is refused with an error naming the
    evaluation, the prompt and the number."""
    from experiments.testbed_methods import Evaluation, MethodsConfig, _evaluate, evaluate_command, verify

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a handwritten two\na handwritten six\n")
    config = MethodsConfig(images_per_prompt=6, num_inference_steps=4, batch_size=6, grid_images=0)
    args = evaluate_command(out=tmp_path / "full", seed=11, config=config, prompts=str(prompts))
    summary = _evaluate(args, tmp_path / "full")
    e = Evaluation("original/seed-0", tuple(args))
    checked = verify([(e, "a handwritten six")], {e.folder: summary}, tmp_path / "verify", workers=1)
    assert checked == [{"evaluation": "original/seed-0", "prompt": "a handwritten six", "identical": True}]
    tampered = json.loads(json.dumps(summary))
    tampered["per_prompt"][1]["red"] = 1.0 - tampered["per_prompt"][1]["red"] + 1e-3
    with pytest.raises(RuntimeError, match=r"original/seed-0, 'a handwritten six': red"):
        verify([(e, "a handwritten six")], {e.folder: tampered}, tmp_path / "verify", workers=1)


def test_the_committed_evaluation_summaries_are_the_table_s():
    """Every per-seed row of the committed results.json is the committed summary of its evaluation (the file a
    default run reuses), so the table cannot drift from what is reused."""
    results = _committed_results()
    path = COMMITTED / "evaluations.json"
    assert path.is_file(), "testbed-methods' evaluations.json is not committed beside its results.json"
    summaries = json.loads(path.read_text(encoding="utf-8"))["evaluations"]
    per_prompt = [json.dumps(s["per_prompt"], sort_keys=True) for s in summaries.values()]
    for name, seeds in results["per_seed"].items():
        for entry in seeds:
            assert json.dumps(entry["per_prompt"], sort_keys=True) in per_prompt, \
                f"{name} seed {entry['seed_index']}: its per-prompt numbers are in no committed summary"
    assert "verified" in results["evaluation_reuse"]
