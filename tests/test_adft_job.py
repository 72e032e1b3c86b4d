"""The aDFT job (scaleup.jobs.adft) on tiny random SD / CLIP / DINOv2 saved to disk and loaded offline: what one
step changes, its gradient against an independent computation of Algorithm A.1's adjusted gradient, images without
a face, kill-and-resume, two processes against one, and bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scaleup.jobs.adft.components import build_components
from scaleup.jobs.adft.config import AdftConfig, plan_job
from scaleup.jobs.adft.job import run_job
from scaleup.jobs.adft.step import AdftStep, SubBatchContext
from scaleup.jobs.adft.tiny import tiny_config_values, write_tiny_run_inputs
from scaleup.perception.faces import FaceDetection
from scaleup.training.checkpoints import TrainingProgress

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_tiny_run_inputs(tmp_path_factory.mktemp("adft-inputs"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _config(inputs, out, **kw) -> AdftConfig:
    return AdftConfig(**(tiny_config_values(inputs, out) | kw))


def _components(config):
    plan = plan_job(config)
    return plan, build_components(config, plan, "cpu")


def _lora_file(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "lora" / "pytorch_lora_weights.safetensors"))


# ---------------------------------------------------------------------------------------------- one step
@pytest.mark.parametrize("adapter", ["text-encoder-lora", "unet-lora", "soft-prompt"])
def test_one_step_changes_only_the_selected_parameters(inputs, tmp_path, adapter):
    config = _config(inputs, tmp_path, adapter=adapter, iterations=1, checkpoint_every=0)
    plan, comps = _components(config)
    frozen = {name: {k: v.clone() for k, v in module.state_dict().items() if "lora_" not in k}
              for name, module in comps.frozen_modules().items()}
    trained = {name: p.detach().clone() for name, p in comps.named_trainable}
    assert trained and all(p.requires_grad for p in comps.trainable)
    run_job(config, components=comps)
    for name, module in comps.frozen_modules().items():
        after = {k: v for k, v in module.state_dict().items() if "lora_" not in k}
        assert after.keys() == frozen[name].keys()
        assert all(torch.equal(after[k], frozen[name][k]) for k in after), f"{name} changed"
        assert not any(p.requires_grad for n, p in module.named_parameters() if "lora_" not in n), name
    changed = [name for name, p in comps.named_trainable if not torch.equal(p.detach(), trained[name])]
    if adapter == "soft-prompt":
        assert changed == ["soft_prompt.embeddings"]
    else:
        # B starts at zero, so the first gradient reaches B (A moves by weight decay only)
        assert any("lora_B" in name for name in changed)
        prefix = "unet." if adapter == "unet-lora" else "text_encoder."
        assert all(name.startswith(prefix) for name, _ in comps.named_trainable)
    assert (tmp_path / "final").is_dir() and json.loads((tmp_path / "results.json").read_text())["finished"]


# ---------------------------------------------------------------------------------------------- the gradient
def _independent_adjusted_gradient(step: AdftStep, comps, ctx: SubBatchContext, coefficients: str):
    """-sum_i C_i |k_i| (d eps_i / d theta)^T g with z_i fixed, by one autograd call per sampler step (Algorithm A.1),
    written from the pipeline's parts without scaleup.sampling or theory.sampler_gradient."""
    from diffusers import DPMSolverMultistepScheduler

    pipe, batch = comps.pipe, step.last["batch"]
    n, n_steps, guidance = len(batch.seeds), batch.n_steps, step.config.guidance_scale
    tokens = [pipe.tokenizer([text], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids for text in (batch.prompt, "")]

    def eps(z, t):
        cond, uncond = (pipe.text_encoder(ids)[0].expand(n, -1, -1) for ids in tokens)
        out = pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = out.chunk(2)
        return e_u + guidance * (e_c - e_u)

    def scheduler():
        s = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        s.set_timesteps(n_steps)
        return s

    sched = scheduler()
    timesteps = list(sched.timesteps)
    z = torch.cat([torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(s)) for s in batch.seeds])
    trajectory = []
    with torch.no_grad():
        for t in timesteps:
            trajectory.append(z)
            z = sched.step(eps(z, t), t, z).prev_sample
    z0 = z.clone().requires_grad_(True)
    images = (pipe.vae.decode(z0 / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    terms, _ = step.subbatch_loss(images, ctx)
    (g,) = torch.autograd.grad(terms.total * (n / step.plan.batch_size), z0)
    # k_i: coefficient of eps_i in z_0 of the scheduler's chain, by running it on unit inputs (it is linear)
    k = []
    for i in range(n_steps):
        s, zz = scheduler(), torch.zeros(1, dtype=torch.float64)
        for j, t in enumerate(timesteps):
            zz = s.step(torch.full((1,), float(i == j), dtype=torch.float64), t, zz).prev_sample
        k.append(float(zz))
    k = np.array(k)
    if coefficients == "algorithm_a1":
        t_idx = np.array([int(t) for t in timesteps])
        betas, abar = sched.betas.double().numpy(), sched.alphas_cumprod.double().numpy()
        c = 1.0 / (betas[t_idx] / np.sqrt(1.0 - abar[t_idx]) / np.sqrt(abar[t_idx]))
    else:
        c = 1.0 / np.abs(k)
    c = c / np.exp(np.log(c).mean())
    params = comps.trainable
    total = [torch.zeros_like(p) for p in params]
    for i, t in enumerate(timesteps):
        grads = torch.autograd.grad((eps(trajectory[i], t) * g).sum(), params)
        total = [acc + c[i] * k[i] * gi for acc, gi in zip(total, grads)]
    return total, c * k


@pytest.mark.parametrize("coefficients", ["algorithm_a1", "sampler"])
def test_gradient_equals_the_adjusted_gradient_formula(inputs, tmp_path, coefficients):
    from accelerate import Accelerator

    config = _config(inputs, tmp_path, coefficients=coefficients, batch_size=2, sub_batch_size=2,
                     num_inference_steps=4)
    plan, comps = _components(config)
    with torch.no_grad():  # LoRA B starts at zero; give both factors values so both receive gradient
        gen = torch.Generator().manual_seed(7)
        for p in comps.trainable:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    step = AdftStep(Accelerator(cpu=True), config, plan, comps, [inputs["prompts"].read_text().splitlines()[0]])
    step(TrainingProgress())
    job = [p.grad.detach().clone() for p in comps.trainable]
    for p in comps.trainable:
        p.grad = None
    expected, weights = _independent_adjusted_gradient(step, comps, step.last["contexts"][0], coefficients)
    job_flat, expected_flat = torch.cat([x.reshape(-1) for x in job]), torch.cat([x.reshape(-1) for x in expected])
    assert expected_flat.norm() > 0
    assert (job_flat - expected_flat).norm() <= 2e-4 * expected_flat.norm()
    if coefficients == "sampler":  # the sampler's own A_i: every step weighs the same, A -> 1 exactly
        np.testing.assert_allclose(weights, weights[0], rtol=1e-5)
    else:  # Algorithm A.1's DDPM A_t differs from DPM-Solver++'s own coefficients: unequal weights
        assert np.abs(weights).max() / np.abs(weights).min() > 1.05


def test_sub_batches_accumulate_the_gradient_of_the_whole_batch(inputs, tmp_path):
    """One pass over N = 4 images, and the two-pass scheme in sub-batches of 2 and 1: same loss, same gradient."""
    from dataclasses import replace

    from accelerate import Accelerator

    config = _config(inputs, tmp_path, batch_size=4, sub_batch_size=4)
    plan, comps = _components(config)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(11)
        for p in comps.trainable:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    results = {}
    for sub in (4, 2, 1):
        step = AdftStep(Accelerator(cpu=True), replace(config, sub_batch_size=sub), plan, comps,
                        [inputs["prompts"].read_text().splitlines()[1]])
        metrics = step(TrainingProgress())
        results[sub] = (metrics, torch.cat([p.grad.reshape(-1) for p in comps.trainable]))
        for p in comps.trainable:
            p.grad = None
    whole_metrics, whole = results[4]
    assert whole.norm() > 0
    for sub in (2, 1):
        metrics, grad = results[sub]
        assert (grad - whole).norm() <= 1e-5 * whole.norm()
        for key in ("loss", "loss_align", "loss_img", "loss_face"):
            # 1 - cos of nearly equal float32 embeddings: absolute rounding ~1e-7 per image, whatever the batch
            assert metrics[key] == pytest.approx(whole_metrics[key], rel=1e-5, abs=1e-6)
        assert metrics["class_frequencies"] == whole_metrics["class_frequencies"]


# ---------------------------------------------------------------------------------------------- no face
class _FacesAt:
    """A detector that finds a centred face in the images whose index is listed, none in the others."""

    name, expand = "test", 0.0

    def __init__(self, indices):
        self.indices = set(indices)

    def detect(self, images):
        h, w = images.shape[-2:]
        return [[FaceDetection((w / 4, h / 4, 3 * w / 4, 3 * h / 4), 1.0)] if i in self.indices else []
                for i in range(images.shape[0])]


def test_an_image_without_a_face_contributes_no_dal_or_face_term(inputs, tmp_path):
    from accelerate import Accelerator

    config = _config(inputs, tmp_path, batch_size=2, sub_batch_size=2)
    plan, comps = _components(config)
    comps.detector = _FacesAt([0])
    step = AdftStep(Accelerator(cpu=True), config, plan, comps, ["a photo of a person"])
    gen = torch.Generator().manual_seed(3)
    originals = torch.rand(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        clip_o, dino_o = comps.clip(originals), comps.dino(originals)
    ctx = SubBatchContext(y=np.array([[1], [0]]), mask=np.array([[True], [True]]), original_class=np.array([[0], [0]]),
                          original_found=torch.tensor([True, True]),
                          original_boxes=torch.tensor([[8.0, 8, 24, 24]] * 2, dtype=torch.float64),
                          semantics_original=(clip_o, dino_o), batch_size=2)
    images = torch.rand(2, 3, 32, 32, generator=gen).requires_grad_(True)
    terms, extra = step.subbatch_loss(images, ctx)
    assert extra["n_faces"] == 1 and float(terms.align.detach()) > 0 and float(terms.face.detach()) > 0
    (g_align_face,) = torch.autograd.grad(terms.align + terms.face, images, retain_graph=True)
    assert torch.all(g_align_face[1] == 0) and g_align_face[0].abs().sum() > 0
    (g_img,) = torch.autograd.grad(terms.semantics, images)
    assert g_img[1].abs().sum() > 0  # L_img still applies to the faceless image ([0109])
    # and the faceless image's pixels do not enter the DAL or L_face at all
    other = images.detach().clone()
    other[1] = torch.rand(3, 32, 32, generator=gen)
    terms_other, _ = step.subbatch_loss(other, ctx)
    assert torch.equal(terms_other.align, terms.align.detach()) and torch.equal(terms_other.face, terms.face.detach())
    assert not torch.equal(terms_other.semantics, terms.semantics.detach())


# ---------------------------------------------------------------------------------------------- resume
def test_kill_and_resume_equals_an_uninterrupted_run(inputs, tmp_path):
    common = dict(iterations=3, checkpoint_every=1, checkpoints_total_limit=2, ema=True, random_inference_steps=True,
                  inference_steps_range=(2, 4))
    run_job(_config(inputs, tmp_path / "whole", **common))
    run_job(_config(inputs, tmp_path / "killed", until=2, **common))
    assert not (tmp_path / "killed" / "final").exists()
    resumed = run_job(_config(inputs, tmp_path / "killed", resume="latest", **common))
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["finished"]
    for sub in ("", "ema"):
        a, b = _lora_file(tmp_path / "whole" / "final" / sub), _lora_file(tmp_path / "killed" / "final" / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def log(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    assert log("whole") == log("killed") and len(log("whole")) == 3
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


# ---------------------------------------------------------------------------------------------- two processes
@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(inputs, tmp_path):
    import yaml

    values = tiny_config_values(inputs, tmp_path / "two") | dict(iterations=2, checkpoint_every=0)
    values["prompts"] = list(values["prompts"])
    values["test_prompts"] = list(values["test_prompts"])
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump(values))
    # accelerate launch --cpu starts one process; its torchrun launcher with ACCELERATE_USE_CPU starts two over gloo
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "scaleup.jobs.adft", "--config",
         str(config_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert launched.returncode == 0, launched.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["processes"] == 2 and two["parameters_identical_across_processes"] is True
    # the same thread count as the launched processes (OMP_NUM_THREADS=1): float32 reductions split over other
    # thread counts round differently, which is not what this test is about
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_job(AdftConfig(**(values | dict(output_dir=str(tmp_path / "one")))))
    finally:
        torch.set_num_threads(threads)
    assert one["processes"] == 1
    a, b = _lora_file(tmp_path / "one" / "final"), _lora_file(tmp_path / "two" / "final")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
    for x, y in zip(two["last"]["class_frequencies"]["gender"], one["last"]["class_frequencies"]["gender"]):
        assert x == y


# ---------------------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize("kw, error, message", [
    (dict(preset="hair-colour"), ValueError, "unknown preset 'hair-colour'"),
    (dict(pretrained_model="/no/such/sd15"), FileNotFoundError, "not a folder on this machine"),
    (dict(targets={"gender": [0.7, 0.2]}), ValueError, "is not a distribution: it sums to"),
    (dict(targets={"gender": [0.5, 0.3, 0.2]}), ValueError, "has 3 classes"),
    (dict(threshold=1.5), ValueError, "threshold must lie in"),
    (dict(preset="race", batch_size=3), ValueError, "N = 3 is smaller than the 4 classes of race"),
    (dict(targets={"age": [0.5, 0.5]}), ValueError, "not debiased by preset 'gender'"),
    (dict(external_faces=None), ValueError, "external_faces: not given but lambda_face > 0"),
    (dict(classifier="dlib-age"), ValueError, "dlib-age classifies age, not gender"),
    (dict(learning_rate=1e300), ValueError, "learning_rate must be a number in"),
    (dict(lora_rank=0), ValueError, "lora_rank must be an integer >= 1; got 0"),
    (dict(seed=-1), ValueError, "seed must be an integer in"),
    (dict(inference_steps_range=(3, 0)), ValueError, "must be an integer >= 1; got 0"),
    (dict(lambda_img={"gender": [-8, 0.2, 0.2]}), ValueError, "got -8; expected a finite number >= 0"),
])
def test_bad_settings_fail_before_any_compute(inputs, tmp_path, monkeypatch, capsys, kw, error, message):
    config = _config(inputs, tmp_path, **kw)
    with pytest.raises(error, match=message):
        plan_job(config)

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded for a bad configuration")

    monkeypatch.setattr("scaleup.jobs.adft.job.build_components", no_models)
    from scaleup.jobs.adft.__main__ import main

    values = tiny_config_values(inputs, tmp_path) | kw
    argv = []
    for key, value in values.items():
        if value is None:
            value = "none"
        elif isinstance(value, (dict, list, tuple)):
            value = json.dumps(list(value) if isinstance(value, tuple) else value)
        argv += ["--" + key.replace("_", "-"), str(value)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scaleup.jobs.adft: error:") and message.split(":")[0] in err[0]


def test_a_user_attribute_trains_without_clip_or_dinov2_when_l_img_is_off(inputs, tmp_path):
    # ink:red,blue on the whole image with a user's classifier; lambda_img 0 and lambda_face 0: no CLIP, no DINOv2
    config = _config(inputs, tmp_path, attribute="ink:red,blue", lambda_img={"ink": [0, 0, 0]}, lambda_face=0.0,
                     targets={"ink": [0.7, 0.3]}, classifier="test_perception_factory:make_ink_classifier",
                     detector="whole-image", clip_model=str(tmp_path / "no-clip"),
                     dinov2_model=str(tmp_path / "no-dinov2"), iterations=1, checkpoint_every=0)
    results = run_job(config)
    assert results["finished"] and results["models"]["clip"] is None and results["models"]["dinov2"] is None
    last = results["last"]
    assert last["class_frequencies"]["ink"] is not None and last["no_face_share"] == 0.0
    assert last["loss_img"] == 0.0 and np.isfinite(last["loss"])
    assert results["plan"]["attributes"][0]["classes"] == ["red", "blue"]


def test_two_processes_need_a_batch_they_can_share(inputs, tmp_path):
    with pytest.raises(ValueError, match="N = 5 does not split evenly over 2 processes"):
        plan_job(_config(inputs, tmp_path, batch_size=5), num_processes=2)


def test_presets_carry_the_papers_hyper_parameters(inputs, tmp_path):
    plans = {name: plan_job(_config(inputs, tmp_path, preset=name, batch_size=None, learning_rate=None,
                                    iterations=None, prompts=None, test_prompts=None), check_models=False)
             for name in ("gender", "race", "gender-race", "age", "multi-concept")}
    g = plans["gender"]
    assert (g.batch_size, g.threshold, g.lambda_face, g.iterations, g.learning_rate) == (24, 0.8, 1.0, 10_000, 5e-5)
    w = g.attributes[0].weights
    assert (w.agree, w.outside_face, w.face) == pytest.approx((8.0, 1.6, 0.32))  # [0121]: 8, 0.2 x 8, 0.2 x 0.2 x 8
    r = plans["race"]
    assert (r.batch_size, r.lambda_face, r.attributes[0].weights.outside_face) == (32, 0.1, pytest.approx(3.6))
    assert plans["gender-race"].threshold == 0.6 and plans["gender-race"].attribute_names == ("gender", "race")
    age = plans["age"].attributes[2]
    assert age.name == "age" and age.target == (0.75, 0.25) and age.conditional_on == ("gender", "race")
    assert len(plans["multi-concept"].prompts) == 4


# ---------------------------------------------------------------------------------------------- targets, presets
def test_conditional_targets_are_the_dal_within_each_group_and_faceless_images_get_none():
    from theory.dal import dal_targets

    from scaleup.jobs.adft.config import AttributePlan
    from scaleup.jobs.adft.targets import batch_targets

    rng = np.random.default_rng(0)
    n = 12
    probs = {name: rng.dirichlet(np.ones(k), size=n) for name, k in (("gender", 2), ("race", 4), ("age", 2))}
    found = np.ones(n, dtype=bool)
    found[[3, 7]] = False
    weights = plan_job(AdftConfig(preset="age", prompts=("occupations-train",), test_prompts=("occupations-test",),
                                  external_faces=None, lambda_face=0.0), check_models=False).attributes
    attributes = [AttributePlan(a.name, a.class_names, a.target, a.weights, a.conditional_on, a.classifier)
                  for a in weights]
    t = batch_targets(probs, found, attributes, 0.5, seed=3)
    assert (t.y[~found] == -1).all() and not t.mask[~found].any() and np.isnan(t.confidence[~found]).all()
    faces = np.flatnonzero(found)
    # age (column 2) aligned to 75/25 separately inside every predicted gender x race group ([0132])
    group = [f"{probs['gender'][i].argmax()}-{probs['race'][i].argmax()}" for i in faces]
    for label in set(group):
        members = faces[[g == label for g in group]]
        expected = dal_targets(probs["age"][members], [0.75, 0.25], 0.5)
        np.testing.assert_array_equal(t.y[members, 2], expected.y)
        np.testing.assert_allclose(t.confidence[members, 2], expected.c, rtol=0, atol=1e-12)
    expected = dal_targets(probs["gender"][faces], [0.5, 0.5], 0.5)  # unconditional: over all faces at once
    np.testing.assert_array_equal(t.y[faces, 0], expected.y)


def test_age_preset_trains_three_attributes_with_conditional_age(inputs, tmp_path):
    results = run_job(_config(inputs, tmp_path, preset="age", iterations=1, checkpoint_every=0, lambda_face=0.0))
    last = results["last"]
    assert set(last["class_frequencies"]) == {"gender", "race", "age"}
    assert len(last["class_frequencies"]["race"]) == 4 and np.isfinite(last["loss"])
    assert results["plan"]["attributes"][2]["conditional_on"] == ["gender", "race"]


def test_exported_lora_loads_into_a_fresh_pipeline_and_generates_what_the_job_had(inputs, tmp_path):
    from scaleup.models import load_lora, load_sd15
    from scaleup.models.pipelines import generate

    config = _config(inputs, tmp_path, iterations=1, checkpoint_every=1, lora_rank=4)
    plan, comps = _components(config)
    run_job(config, components=comps)
    kwargs = dict(num_inference_steps=3, guidance_scale=7.5, height=32, width=32, progress=False)
    prompt = "a photo of the face of a nurse, a person"
    trained = generate(comps.pipe, prompt, [5, 6], **kwargs)
    fresh = load_lora(load_sd15(str(inputs["sd15"])), tmp_path / "checkpoint-1" / "export" / "lora")
    torch.testing.assert_close(generate(fresh, prompt, [5, 6], **kwargs), trained, rtol=0, atol=1e-6)
    base = generate(load_sd15(str(inputs["sd15"])), prompt, [5, 6], **kwargs)
    assert (base - trained).abs().max() > 1e-4  # the step changed the images


def test_the_lowest_held_out_bias_is_kept_as_best(tmp_path):
    from scaleup.jobs.adft.export import record_evaluation

    for step in (2, 4, 6):
        export = tmp_path / f"checkpoint-{step}" / "export"
        export.mkdir(parents=True)
        (export / "weights.txt").write_text(str(step))
    best = None
    for step, bias in ((2, 0.5), (4, 0.2), (6, None)):
        best = record_evaluation(tmp_path, {"step": step, "mean_bias": bias},
                                 tmp_path / f"checkpoint-{step}" / "export")
    assert best["step"] == 4 and (tmp_path / "best" / "weights.txt").read_text() == "4"
    record_evaluation(tmp_path, {"step": 4, "mean_bias": 0.9}, tmp_path / "checkpoint-4" / "export")  # re-run
    lines = (tmp_path / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 6, 4]


@pytest.mark.slow
def test_quick_experiment_runs_end_to_end(tmp_path):
    import experiments

    results = experiments.run("adft-sd", quick=True, out=tmp_path)
    assert results["resume_equals_uninterrupted"] is True and results["resumed_from"] == "checkpoint-2"
    assert results["evaluations"] and results["evaluations"][0]["step"] == 4
    assert (tmp_path / "adft-sd" / "adft_sd.png").stat().st_size > 10_000


def test_shipped_config_reads_and_flags_override_it(tmp_path):
    from scaleup.job_config import parse_config

    shipped = ROOT / "scaleup" / "jobs" / "adft" / "configs" / "gender_text_encoder.yaml"
    config = parse_config(AdftConfig, ["--config", str(shipped), "--batch-size", "32", "--output-dir", str(tmp_path)])
    assert (config.preset, config.lora_rank, config.mixed_precision, config.random_inference_steps) == \
        ("gender", 50, "bf16", True)
    assert config.batch_size == 32 and config.output_dir == str(tmp_path) and config.checkpoint_every == 200
