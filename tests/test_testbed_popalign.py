"""PopAlign and SFT on the committed testbed (experiments.testbed_popalign), and the job's custom-attribute
keywords it relies on."""

from __future__ import annotations

import json

import pytest

from scaleup.jobs.popalign.keywords import augment_prompt, keyword_set


def test_user_keywords_that_are_class_names_need_no_classes():
    ink = keyword_set(["red", "blue"], attribute="ink:red,blue")
    assert ink.classes == ("red", "blue") and ink.class_index("blue") == 1
    assert keyword_set("red,blue".split(","), attribute="ink:red,blue", classes=["blue", "red"]).class_index("red") == 1
    with pytest.raises(ValueError, match="may be left out only when every keyword is a class name"):
        keyword_set(["crimson", "navy"], attribute="ink:red,blue")
    assert augment_prompt("a handwritten zero", "red", "{prompt} in {keyword} ink") == "a handwritten zero in red ink"


def test_generate_config_accepts_ink_keywords_without_classes(tmp_path):
    from scaleup.job_config import parse_config
    from scaleup.jobs.popalign.config import GenerateConfig
    from scaleup.jobs.popalign.generation import validate
    from scaleup.testbed.paths import testbed_path

    config = parse_config(GenerateConfig, ["--out", str(tmp_path), "--prompts",
                                           str(testbed_path() / "prompts" / "training.txt"), "--keywords",
                                           "red,blue", "--keyword-attribute", "ink:red,blue"])
    prompts, keywords = validate(config)
    assert len(prompts) == 8 and keywords.classes == ("red", "blue")


def test_testbed_keywords_and_held_out_prompts_are_refused(tmp_path):
    from experiments.testbed_popalign import check_training_prompts, repeat_seeds, testbed_keywords
    from scaleup.testbed.paths import testbed_path

    flags = testbed_keywords()
    assert flags == {"keywords": ["red", "blue"], "keyword_attribute": "ink:red,blue",
                     "augment_template": "{prompt} in {keyword} ink"}
    assert len(check_training_prompts(testbed_path() / "prompts" / "training.txt")) == 8
    for name in ("all.txt", "heldout-digits.txt", "heldout-template.txt"):
        with pytest.raises(ValueError, match="held-out"):
            check_training_prompts(testbed_path() / "prompts" / name)
    seeds = repeat_seeds(0, 3)
    assert len(set(seeds)) == 3 and seeds != [seeds[0] + i for i in range(3)]


def test_testbed_chain_runs_end_to_end_and_writes_a_loadable_lora(tmp_path):
    """generate -> build-sets -> train (PopAlign, then SFT on the same sets) with tiny settings, a few seconds."""
    from diffusers import StableDiffusionPipeline

    from experiments.testbed_popalign import (TestbedPopAlignSettings, run_popalign_on_testbed,
                                              same_images_as_evaluation)
    from scaleup.testbed.paths import testbed_path

    settings = TestbedPopAlignSettings.tiny()
    result = run_popalign_on_testbed(tmp_path, 7, settings=settings)
    assert result["finite"] and result["train"]["iterations_done"] == settings.max_train_steps
    assert set(result["cpu_seconds"]) == {"generate", "build-sets", "train", "total"}
    assert result["build_sets"]["filter"]["classifier"] == "scaleup.testbed.classifiers:ink_training_classifier"
    assert "--detector whole-image" in result["commands"]["build-sets"]
    records = [json.loads(line) for line in (tmp_path / "generated" / "generated.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in records} == {"a handwritten zero", "a handwritten zero in red ink",
                                              "a handwritten zero in blue ink", "a handwritten one",
                                              "a handwritten one in red ink", "a handwritten one in blue ink"}
    assert len({result["seeds"][s] for s in result["seeds"]}) == 3
    pipe = StableDiffusionPipeline.from_pretrained(str(testbed_path()))
    pipe.load_lora_weights(result["lora"])
    assert sum("lora_A" in name for name, _ in pipe.unet.named_parameters()) > 0
    same = same_images_as_evaluation(result["lora"], seeds=(0, 1), num_inference_steps=3)
    assert same["equal"] and same["adapters"] == ["default_0"]
    sft = run_popalign_on_testbed(tmp_path, 7, sft=True, settings=settings)
    assert sft["build_sets"]["reused"] and sft["lora"].endswith("sft/lora") and sft["finite"]
    with pytest.raises(ValueError, match="earlier training run"):
        run_popalign_on_testbed(tmp_path, 7, settings=settings)
