"""The evaluation job's debiasing baselines (scaleup.evaluation.debiasing): prompt augmentation and Fair Diffusion's
semantic guidance. Requests are a reproducible function of the image seed with the target's distribution; the
options are checked before any model loads; on the committed testbed both move the ink as asked."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from scaleup.evaluate import EvalConfig, run_eval, validate
from scaleup.evaluation.debiasing import generate_with_semantic_guidance, requested_class
from scaleup.evaluation.loop import image_seed


def test_requests_are_reproducible_and_follow_the_target():
    seeds = [image_seed(0, "a handwritten one", j) for j in range(20000)]
    first = [requested_class(s, (0.3, 0.7)) for s in seeds]
    assert first == [requested_class(s, (0.3, 0.7)) for s in seeds]
    share = np.mean(np.array(first) == 0)
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(seeds))  # binomial sampling error, 4 sd
    shares = np.bincount([requested_class(s, (0.2, 0.3, 0.5)) for s in seeds], minlength=3) / len(seeds)
    assert np.all(np.abs(shares - [0.2, 0.3, 0.5]) < 0.015)
    assert {requested_class(s, (0.0, 1.0)) for s in seeds[:500]} == {1}
    assert {requested_class(s, (1.0, 0.0)) for s in seeds[:500]} == {0}


@pytest.mark.parametrize("kw, message", [
    (dict(augment_template="{prompt} in ink"), r"augment_template must contain \{prompt\} and \{cls\}"),
    (dict(augment_template="{prompt}, {cls}, {age}"), "augment_template must contain"),
    (dict(augment_template="{prompt, {cls}"), "augment_template '{prompt, {cls}' is not a valid template"),
    (dict(edit_template="{prompt} {cls}"), r"edit_template must contain \{cls\} and no other field"),
    (dict(edit_guidance_scale=5.0), "edit_guidance_scale set semantic guidance, which needs --edit-template"),
    (dict(edit_template="{cls} person", edit_threshold=1.0), r"edit_threshold \(SEGA's lambda\) must lie in"),
    (dict(edit_template="{cls} person", edit_guidance_scale=-1.0), "edit_guidance_scale .* must be a finite"),
    (dict(edit_template="{cls} person", edit_warmup_steps=20), r"edit_warmup_steps must be an integer in \[0, "),
    (dict(edit_template="{cls} person", family="sdxl"), "SD 1.x/2.x pipelines only"),
    (dict(augment_template="{prompt}, {cls}", class_phrases=("woman",)), "one non-empty phrase per class"),
    (dict(class_phrases=("woman", "man")), "neither is given"),
])
def test_bad_debiasing_options_fail_before_any_model_loads(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        validate(EvalConfig(out=str(tmp_path), **kw))


def test_sega_defaults_are_fair_diffusions_and_left_unset_without_it(tmp_path):
    config, _ = validate(EvalConfig(out=str(tmp_path), edit_template="{cls} person", num_inference_steps=50))
    assert (config.edit_guidance_scale, config.edit_threshold, config.edit_warmup_steps) == (4.0, 0.95, 10)
    assert validate(EvalConfig(out=str(tmp_path), num_inference_steps=20, edit_template="{cls} person"))[0] \
        .edit_warmup_steps == 4
    # without semantic guidance the settings stay None: an older run folder's settings still match
    config, _ = validate(EvalConfig(out=str(tmp_path), augment_template="{prompt}, {cls}"))
    assert config.edit_guidance_scale is None and config.edit_threshold is None and config.edit_warmup_steps is None


def test_semantic_guidance_without_edit_scale_gives_the_pipelines_images():
    from scaleup.models.pipelines import generate
    from scaleup.models.tiny import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=0)
    seeds, prompts = [3, 7, 11], ["a photo of a nurse", "a photo of a pilot", "a photo of a judge"]
    reference = generate(pipe, prompts, seeds, num_inference_steps=4, guidance_scale=7.5, height=32, width=32,
                         progress=False)
    plain = generate_with_semantic_guidance(pipe, prompts, seeds, [0, 1, 0], ["female person", "male person"],
                                            edit_scale=0.0, threshold=0.9, warmup_steps=0, num_inference_steps=4,
                                            guidance_scale=7.5, height=32, width=32)
    torch.testing.assert_close(plain, reference, rtol=1e-5, atol=1e-5)
    edited = generate_with_semantic_guidance(pipe, prompts, seeds, [0, 1, 0], ["female person", "male person"],
                                             edit_scale=4.0, threshold=0.5, warmup_steps=1, num_inference_steps=4,
                                             guidance_scale=7.5, height=32, width=32)
    assert (edited - reference).abs().max() > 1e-3
    # an image's request and noise are its own: the same seed gives the same image in another batch
    alone = generate_with_semantic_guidance(pipe, prompts[1:2], seeds[1:2], [1], ["female person", "male person"],
                                            edit_scale=4.0, threshold=0.5, warmup_steps=1, num_inference_steps=4,
                                            guidance_scale=7.5, height=32, width=32)
    torch.testing.assert_close(alone[0], edited[1], rtol=1e-5, atol=1e-5)


def _testbed(tmp_path, prompts, n=24, **kw):
    from experiments.testbed import testbed_eval_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    config = testbed_eval_config(prompts=str(path), out=tmp_path / "eval", guidance_scale=7.5, images_per_prompt=n,
                                 num_inference_steps=20, batch_size=n, seed=0, grid_images=0, restart=True, **kw)
    return run_eval(config, progress=False)


def test_prompt_augmentation_removes_the_testbeds_ink_bias_and_records_requests(tmp_path, monkeypatch):
    """At CFG 7.5 the testbed draws "a handwritten one" ~96 % red and "nine" ~96 % blue (bias ~0.92 on 24 images):
    naming a uniformly drawn ink brings the bias near 0 (measured 0.0); ignoring the option would leave ~0.9."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = ["a handwritten one", "a handwritten nine"]
    plain = _testbed(tmp_path / "plain", prompts)
    augmented = _testbed(tmp_path / "aug", prompts, augment_template="{prompt} in {cls} ink")
    assert plain["overall"]["bias"]["mean"] > 0.6
    assert augmented["overall"]["bias"]["mean"] < 0.35
    # records keep the base prompt (the summary is per base prompt) and name the class asked of each image
    assert [p["prompt"] for p in augmented["per_prompt"]] == prompts
    rows = list(csv.DictReader((tmp_path / "aug" / "eval" / "records.csv").open()))
    assert {r["prompt"] for r in rows} == set(prompts) and {r["requested"] for r in rows} == {"red", "blue"}
    assert all(r["requested"] == ["red", "blue"][requested_class(int(r["seed"]), (0.5, 0.5))] for r in rows)
    agree = np.mean([r["requested"] == r["label"] for r in rows])
    assert agree > 0.9
    saved = json.loads((tmp_path / "aug" / "eval" / "results.json").read_text())
    assert saved["config"]["augment_template"] == "{prompt} in {cls} ink"
    assert saved["debiasing"]["method"] == "prompt augmentation"
    assert plain["debiasing"] is None and all(r["requested"] == "" for r in
                                              csv.DictReader((tmp_path / "plain" / "eval" / "records.csv").open()))


def test_semantic_guidance_toward_blue_lowers_a_red_prompts_red_share(tmp_path, monkeypatch):
    """"a handwritten one" is ~96 % red at CFG 7.5; asking every image for blue ink (target (0, 1)) with edit scale
    10 (threshold 0.5, no warm-up) measured 4 % red on 24 images. Ignoring the option would leave ~90 % red."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _testbed(tmp_path, ["a handwritten one"], edit_template="{cls} ink", target=(0.0, 1.0),
                      edit_guidance_scale=10.0, edit_threshold=0.5, edit_warmup_steps=0)
    assert result["per_prompt"][0]["freq"]["red"] < 0.4
    assert result["debiasing"]["edit_guidance_scale"] == 10.0


def test_recorded_requests_do_not_depend_on_batch_size(tmp_path):
    from scaleup.evaluation.loop import EvaluationParts, Perceived, run_evaluation
    from scaleup.evaluation.store import RecordStore

    def perceive(images):
        p = images.mean(dim=(1, 2, 3)).numpy()
        return Perceived(has_face=np.ones(len(p), bool), boxes=[[0.0, 0.0, 1.0, 1.0]] * len(p),
                         probs=np.stack([p, 1 - p], axis=1))

    parts = EvaluationParts(generate=lambda prompt, seeds: torch.stack([torch.rand(3, 4, 4, generator=torch.Generator()
                                                                                   .manual_seed(s)) for s in seeds]),
                            perceive=perceive, class_names=("red", "blue"),
                            request=lambda seed: requested_class(seed, (0.5, 0.5)))
    stores = []
    for batch in (3, 5):
        store = RecordStore(tmp_path / str(batch), {})
        run_evaluation(parts, ["a", "b"], store, n_images=11, base_seed=0, batch_size=batch, progress=False)
        stores.append([r.requested for i in range(2) for r in store.load(i)])
    assert stores[0] == stores[1] and set(stores[0]) == {"red", "blue"}
