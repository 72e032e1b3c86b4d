"""The evaluation job end to end on tiny random models saved to disk and loaded offline, and its input checks."""

from __future__ import annotations

import json

import pytest
import torch

from scaleup.evaluate import EvalConfig, main, run_eval, validate
from scaleup.models.adapters import add_lora, save_lora
from scaleup.models.tiny import save_tiny_models, tiny_sd_pipeline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folders = save_tiny_models(root)
    pipe = tiny_sd_pipeline(seed=0)
    params = add_lora(pipe, text_encoder_rank=4)
    for p in params:
        torch.nn.init.normal_(p, std=0.1)
    folders["lora"] = save_lora(pipe, root / "lora")
    prompts = root / "prompts.txt"
    prompts.write_text("a photo of the face of a nurse, a person\na photo of the face of a pilot, a person\n")
    folders["prompts"] = prompts
    return folders


def _config(tiny, out, **kw):
    base = dict(pipeline=str(tiny["sd15"]), clip=str(tiny["clip"]), prompts=str(tiny["prompts"]), detector="haar",
                images_per_prompt=3, num_inference_steps=2, height=32, width=32, batch_size=2, dtype="float32",
                device="cpu", out=str(out), grid_images=3)
    return EvalConfig(**{**base, **kw})


def test_whole_evaluation_on_tiny_models_offline(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = run_eval(_config(tiny, tmp_path), progress=False)
    assert results["overall"]["n_prompts"] == 2
    assert results["overall"]["pooled"]["n_images"] == 6
    # random tiny-model images hold no face: a handled case with no class and no bias
    assert results["overall"]["pooled"]["no_face_share"] == 1.0 and results["overall"]["bias"] is None
    assert results["overall"]["clip_t"]["n_prompts"] == 2
    assert (tmp_path / "records.csv").read_text().count("\n") == 7
    assert len(list((tmp_path / "grids").glob("*.png"))) == 2
    report = (tmp_path / "report.md").read_text()  # the page a person reads, linking each prompt's grid
    assert "![](grids/prompt_00000.png)" in report and "![](grids/prompt_00001.png)" in report
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["per_prompt"] == results["per_prompt"]


def test_lora_and_compare_original_give_clip_i_and_dino(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = run_eval(_config(tiny, tmp_path, lora=str(tiny["lora"]), compare_original=True,
                               dinov2=str(tiny["dinov2"]), max_prompts=1), progress=False)
    clip_i, dino = results["overall"]["clip_i"]["mean"], results["overall"]["dino"]["mean"]
    assert -1.0 <= clip_i < 1.0 - 1e-9 and -1.0 <= dino < 1.0 - 1e-9  # the LoRA changes the images
    base = run_eval(_config(tiny, tmp_path / "base", max_prompts=1), progress=False)
    assert base["per_prompt"][0]["clip_t"] != results["per_prompt"][0]["clip_t"]


# a user's classifier for ink:red,blue, by the documented route (tests/ is on sys.path under pytest)
INK_CLASSIFIER = "test_perception_factory:make_ink_classifier"


def test_whole_image_and_a_module_factory_classifier_give_a_finite_bias_without_clip(tiny, tmp_path, monkeypatch):
    import math

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_clip(*args, **kwargs):
        raise AssertionError("CLIP was loaded though neither CLIP-T nor the classifier needs it")

    monkeypatch.setattr("scaleup.models.load_clip", no_clip)
    results = run_eval(_config(tiny, tmp_path, detector="whole-image", attribute="ink:red,blue",
                               classifier=INK_CLASSIFIER, clip_t=False, clip=None),
                       progress=False)
    overall = results["overall"]
    assert results["class_names"] == ["red", "blue"] and overall["pooled"]["no_face_share"] == 0.0
    assert overall["bias"] is not None and math.isfinite(overall["bias"]["mean"])
    assert results["models"]["detector"] == "whole-image" and "clip" not in results["models"]
    assert "clip_t" not in overall or overall["clip_t"] is None


def test_rerun_resumes_and_other_settings_are_refused(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_eval(_config(tiny, tmp_path, max_prompts=1), progress=False)
    assert main(["--pipeline", str(tiny["sd15"]), "--clip", str(tiny["clip"]), "--prompts", str(tiny["prompts"]),
                 "--detector", "haar", "--images-per-prompt", "4", "--num-inference-steps", "2", "--height", "32",
                 "--width", "32", "--dtype", "float32", "--device", "cpu", "--out", str(tmp_path),
                 "--max-prompts", "1"]) == 2


@pytest.mark.parametrize("kw, message", [
    (dict(images_per_prompt=0), "images_per_prompt must be an integer >= 1"),
    (dict(classifier="dlib-gender", attribute="race"), "classifies gender"),
    (dict(classifier="resnet"), "unknown classifier"),
    (dict(target=(0.2, 0.3)), "target"),
    (dict(attribute="height"), "unknown attribute"),
    (dict(attribute="gender:red,blue"), "'gender' is built in"),
    (dict(attribute="ink:red,blue"), "clip-zero-shot needs zero-shot prompts"),
    (dict(detector="yolo"), "unknown detector 'yolo'"),
    (dict(classifier="mypackage:"), "malformed"),
])
def test_bad_settings_fail_before_any_compute(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        validate(EvalConfig(out=str(tmp_path), **kw))


@pytest.mark.parametrize("content, message", [(b"", "holds no prompts"), (b"\xff\xfe\x00", "not UTF-8")])
def test_bad_prompt_file_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "p.txt"
    path.write_bytes(content)
    assert main(["--prompts", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_model_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FAIRDIFF_SD15", raising=False)
    path = tmp_path / "p.txt"
    path.write_text("a nurse\n")
    assert main(["--prompts", str(path), "--out", str(tmp_path / "o"), "--pipeline", str(tmp_path / "nope"),
                 "--classifier", "dlib-gender", "--clip-t", "false"]) == 2
    err = capsys.readouterr().err
    assert "FAIRDIFF_SD15" in err and "model_index.json" in err


def test_an_edited_prompt_file_is_refused_with_the_line_that_changed(tiny, tmp_path, monkeypatch):
    """Issue 19: records were keyed by line only; after adding a line a rerun listed one prompt twice, exit 0."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of the face of a nurse, a person\na photo of the face of a pilot, a person\n")
    out = tmp_path / "eval"
    run_eval(_config(tiny, out, prompts=str(prompts), images_per_prompt=2, grid_images=0), progress=False)
    before = {p.name: p.read_bytes() for p in sorted((out / "records").iterdir())}
    results = (out / "results.json").read_bytes()
    prompts.write_text("a photo of the face of a chef, a person\n" + prompts.read_text())
    with pytest.raises(ValueError, match=r"line 1 is now 'a photo of the face of a chef, a person', its record "
                                         r"prompt_00000.json was made for 'a photo of the face of a nurse"):
        run_eval(_config(tiny, out, prompts=str(prompts), images_per_prompt=2, grid_images=0), progress=False)
    assert {p.name: p.read_bytes() for p in sorted((out / "records").iterdir())} == before
    assert (out / "results.json").read_bytes() == results


def test_a_run_that_failed_before_any_record_does_not_lock_its_folder(tiny, tmp_path, monkeypatch):
    """Issue 19: a failed evaluation left its settings behind, so the corrected rerun was refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from scaleup.evaluation.store import RecordStore

    RecordStore(tmp_path, {"seed": 0, "detector": "typo"})  # what a run failing after its settings leaves
    done = run_eval(_config(tiny, tmp_path, images_per_prompt=2, grid_images=0, max_prompts=1), progress=False)
    assert len(done["per_prompt"]) == 1
    with pytest.raises(ValueError, match="other settings"):  # records exist now: other settings are refused
        run_eval(_config(tiny, tmp_path, images_per_prompt=3, grid_images=0, max_prompts=1), progress=False)


def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_load(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a-file").write_text("not a folder")
    loaded = []
    monkeypatch.setattr("scaleup.evaluate.build_parts", lambda *a, **k: loaded.append(1))
    argv = ["--pipeline", str(tiny["sd15"]), "--prompts", str(tiny["prompts"]), "--out",
            str(tmp_path / "a-file" / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scaleup.evaluate: error: --out {tmp_path / 'a-file' / 'run'}: cannot create or write "
                          "the folder (") and err.endswith("pass a writable folder") and "\n" not in err
    assert not loaded and (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device, message", [("cuda", "this machine has no CUDA GPU"),
                                             ("cuda:1", "this machine has no CUDA GPU"),
                                             ("gpu0", "'gpu0' is not a device; expected cpu, cuda, cuda:N or mps")])
def test_a_device_this_machine_lacks_is_refused_before_any_load(tmp_path, device, message):
    with pytest.raises(ValueError, match=message):
        validate(EvalConfig(out=str(tmp_path), device=device))
