"""The PopAlign job on tiny random SD 1.5 / SDXL pipelines (seed 001, Sec. 3.1, 3.3 eq. 9, App. A.3, E).

The loss is checked against theory.popalign.popalign_loss on errors recomputed by hand (x_t from the DDPM
coefficients, not the scheduler's add_noise); the reference against a fresh copy of the pretrained model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scaleup.jobs.popalign.config import BuildSetsConfig, GenerateConfig, TrainConfig
from scaleup.jobs.popalign.keywords import augment_prompt, keyword_set
from scaleup.jobs.popalign.sanity import Perception, check_pair
from scaleup.jobs.popalign.sets import systematic_counts
from scaleup.models.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline
from theory.denoising import denoising_loss
from theory.popalign import popalign_loss

REPO = Path(__file__).resolve().parent.parent


def _pipe(sdxl: bool = False):
    pipe = (tiny_sdxl_pipeline if sdxl else tiny_sd_pipeline)(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _write_dataset(folder: Path, n_sets: int = 2, n: int = 2, size: int = 32, seed: int = 0) -> Path:
    """A preference dataset in the build-sets layout with random images (two captions)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sets):
        for role in ("winner", "loser"):
            for i in range(n):
                name = f"images/{s:06d}-{role[0]}{i}.png"
                (folder / "images").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
                rows.append({"file_name": name, "caption": f"a photo of a doctor {s % 2}", "set_id": s,
                             "role": role, "position": i})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _train_config(tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(data=str(tmp_path / "data"), out=str(tmp_path / "train"), pairs_per_device=2, max_train_steps=2,
                  learning_rate=1e-3, lr_warmup_steps=0, checkpoint_every=0, reward_accuracy_sets=0,
                  use_8bit_adam=False)
    values.update(overrides)
    return TrainConfig(**values)


def _perturb(module: torch.nn.Module, scale: float = 1e-2, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# -- the loss --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
@pytest.mark.parametrize("alpha", [0.5, 0.75])
def test_job_loss_equals_popalign_loss_on_the_same_noise_timesteps_and_errors(tmp_path, sdxl, alpha):
    from accelerate import Accelerator

    from scaleup.jobs.popalign.preference_data import read_preference_pairs
    from scaleup.jobs.popalign.step import noised_pairs, popalign_step
    from scaleup.jobs.popalign.train import PopAlignTrainer

    _write_dataset(tmp_path / "data")
    config = _train_config(tmp_path, alpha=alpha)
    trainer = PopAlignTrainer(config, Accelerator(cpu=True), _pipe(sdxl), read_preference_pairs(config.data))
    _perturb(trainer.unet)  # the model must differ from its reference for r to be non-zero
    latents_w, latents_l, cond = trainer.batch([0, 3])
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(latents_w.shape, generator=g)
    timesteps = torch.tensor([17, 803])
    noisy, target, t = noised_pairs(trainer.noise_scheduler, latents_w, latents_l, noise, timesteps)
    result = popalign_step(trainer.model, trainer.reference, noisy, target, t, cond, beta_prime=config.beta_prime,
                           alpha=alpha)

    # by hand: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for winners and losers with the same eps_i and t_i
    abar = trainer.noise_scheduler.alphas_cumprod[timesteps].double()[:, None, None, None]
    errors = {}
    for role, latents in (("w", latents_w), ("l", latents_l)):
        x_t = (abar.sqrt() * latents.double() + (1 - abar).sqrt() * noise.double()).float()
        half = cond.select(slice(0, 2) if role == "w" else slice(2, 4))
        kwargs = dict(encoder_hidden_states=half.encoder_hidden_states, added_cond_kwargs=half.added_cond_kwargs)
        with torch.no_grad():
            model = trainer.pipe.unet(x_t, timesteps, **kwargs).sample.double()
            reference = trainer.reference_unet(x_t, timesteps, **kwargs).sample.double()
        errors[role] = (((noise.double() - reference) ** 2).mean(dim=(1, 2, 3))
                        - ((noise.double() - model) ** 2).mean(dim=(1, 2, 3)))
    r = torch.cat([errors["w"], errors["l"]])
    assert r.abs().min() > 1e-5  # far from 0: the check below is not a comparison of two log(2)s
    # r agrees to the float32 rounding of the job's MSEs (means of 1024 float32 squared errors of size ~1)
    gap = float((result.r.double() - r).abs().max())
    assert gap < 2e-6
    expected = popalign_loss(r, torch.tensor([True, True, False, False]), config.beta_prime, alpha)
    # each term -log sigma(gamma beta (r_i - mu)) moves by at most beta (|dr_i| + |dmu|) <= 2 beta gap
    assert abs(float(result.loss.detach()) - float(expected)) <= 2 * config.beta_prime * gap + 1e-6
    assert float(result.loss.detach()) == pytest.approx(
        float(popalign_loss(result.r.double(), torch.tensor([True, True, False, False]), config.beta_prime, alpha)),
        rel=1e-6)
    mu = alpha * errors["w"].mean() + (1 - alpha) * errors["l"].mean()
    assert abs(result.metrics["mu"] - float(mu)) <= gap
    if sdxl:  # SDXL's added conditioning: (original size, crop corner, target size) per image
        assert torch.equal(cond.added_cond_kwargs["time_ids"][0], torch.tensor([32.0, 32, 0, 0, 32, 32]))
        assert cond.added_cond_kwargs["text_embeds"].shape == (4, 32)


def test_sft_step_is_the_denoising_loss_on_the_winners(tmp_path):
    from accelerate import Accelerator

    from scaleup.jobs.popalign.preference_data import read_preference_pairs
    from scaleup.jobs.popalign.step import noised_pairs, sft_step
    from scaleup.jobs.popalign.train import PopAlignTrainer

    _write_dataset(tmp_path / "data")
    config = _train_config(tmp_path, loss="sft")
    trainer = PopAlignTrainer(config, Accelerator(cpu=True), _pipe(), read_preference_pairs(config.data))
    latents_w, latents_l, cond = trainer.batch([1, 2])
    noise, timesteps = torch.randn(latents_w.shape, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 500])
    noisy, target, t = noised_pairs(trainer.noise_scheduler, latents_w, latents_l, noise, timesteps)
    result = sft_step(trainer.model, noisy[:2], target[:2], t[:2], cond.select(slice(0, 2)))
    with torch.no_grad():
        states = cond.encoder_hidden_states[:2]
        prediction = trainer.pipe.unet(noisy[:2], timesteps, encoder_hidden_states=states).sample
    assert float(result.loss.detach()) == pytest.approx(float(denoising_loss(noise, prediction)), rel=1e-6)
    assert float(result.loss.detach()) == pytest.approx(float(F.mse_loss(prediction, noise)), rel=1e-5)


# -- the reference stays frozen; weights saved diffusers-loadable ------------------------------------------------------

def test_full_finetune_keeps_the_reference_bit_identical_and_saves_a_loadable_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    from scaleup.jobs.popalign.train import run_train

    _write_dataset(tmp_path / "data")
    pretrained = _pipe().unet
    results, trainer = run_train(_train_config(tmp_path, max_train_steps=2), pipe=_pipe(), progress=False,
                                 return_trainer=True)
    assert results["finished"]
    reference = dict(trainer.reference_unet.named_parameters())
    assert all(torch.equal(reference[name], p) for name, p in pretrained.named_parameters())
    trained = dict(trainer.pipe.unet.named_parameters())
    assert any(not torch.equal(trained[name], p) for name, p in pretrained.named_parameters())
    loaded = UNet2DConditionModel.from_pretrained(results["weights"]["unet"])
    assert all(torch.equal(trained[name], p) for name, p in loaded.named_parameters())


def test_lora_reference_is_the_base_model_and_the_adapter_reloads(tmp_path):
    from scaleup.jobs.popalign.train import run_train
    from scaleup.models.adapters import adapters_disabled, load_lora

    _write_dataset(tmp_path / "data")
    config = _train_config(tmp_path, finetune="lora", lora_rank=4, learning_rate=1e-2, max_train_steps=2)
    results, trainer = run_train(config, pipe=_pipe(), progress=False, return_trainer=True)
    unet = trainer.pipe.unet
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 600])
    with torch.no_grad():
        base = _pipe().unet(x, t, encoder_hidden_states=states).sample
        tuned = unet(x, t, encoder_hidden_states=states).sample
        with adapters_disabled(unet):
            disabled = unet(x, t, encoder_hidden_states=states).sample
        reloaded_pipe = load_lora(_pipe(), results["weights"]["lora"])
        reloaded = reloaded_pipe.unet(x, t, encoder_hidden_states=states).sample
    assert not torch.equal(tuned, base)
    assert torch.equal(disabled, base)
    torch.testing.assert_close(reloaded, tuned, rtol=1e-5, atol=1e-6)
    assert results["trainable_parameters"] < sum(p.numel() for p in _pipe().unet.parameters())


# -- resume ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(tmp_path, finetune):
    from scaleup.jobs.popalign.train import LORA_STATE_FILE, run_train

    _write_dataset(tmp_path / "data", n_sets=3)
    common = dict(max_train_steps=4, checkpoint_every=2, pairs_per_device=2, finetune=finetune, lora_rank=4)
    full, full_trainer = run_train(_train_config(tmp_path, out=str(tmp_path / "a"), **common), pipe=_pipe(),
                                   progress=False, return_trainer=True)
    stopped = run_train(_train_config(tmp_path, out=str(tmp_path / "b"), until=3, **common), pipe=_pipe(),
                        progress=False)
    assert not stopped["finished"] and stopped["iterations_done"] == 3
    with pytest.raises(ValueError, match="--resume latest"):
        run_train(_train_config(tmp_path, out=str(tmp_path / "b"), **common), pipe=_pipe(), progress=False)
    resumed, resumed_trainer = run_train(_train_config(tmp_path, out=str(tmp_path / "b"), resume="latest", **common),
                                         pipe=_pipe(), progress=False, return_trainer=True)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    if finetune == "lora":  # the checkpoint holds the adapter only, not the frozen base
        saved = sorted(p.name for p in (tmp_path / "b" / "checkpoint-2").iterdir())
        assert LORA_STATE_FILE in saved and not any(n.startswith("model") for n in saved)
    a = dict(full_trainer.pipe.unet.named_parameters())
    b = dict(resumed_trainer.pipe.unet.named_parameters())
    assert all(torch.equal(a[name], b[name]) for name in a)
    log_a = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert log_a == log_b and [e["step"] for e in log_a] == [1, 2, 3, 4]


# -- preference data -------------------------------------------------------------------------------------------------

def test_systematic_counts_match_the_target_exactly_in_expectation():
    # E over u ~ U[0, 1) computed exactly: the counts are piecewise constant in u, breaking at the fractional parts
    for n, target in ((5, [0.5, 0.5]), (5, [0.8, 0.2]), (7, [0.1, 0.25, 0.65]), (12, [1 / 12] * 12)):
        edges = n * np.cumsum(target)
        cuts = np.unique(np.concatenate([[0.0, 1.0], np.mod(edges, 1.0)]))
        expectation = np.zeros(len(target))
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            counts = systematic_counts(n, target, (lo + hi) / 2)
            assert counts.sum() == n
            assert np.all(counts >= np.floor(n * np.array(target) - 1e-9))
            assert np.all(counts <= np.ceil(n * np.array(target) + 1e-9))
            expectation += (hi - lo) * counts
        np.testing.assert_allclose(expectation, n * np.array(target), atol=1e-9)


def test_augmented_prompts_and_keyword_sets():
    assert augment_prompt("best quality, a realistic photo of Engineer", "female") == \
        "best quality, a realistic photo of female Engineer"
    assert augment_prompt("Botanist - cataloging plants.", "white male") == \
        "a realistic photo of a white male Botanist - cataloging plants."
    assert augment_prompt("a couple in a park", "", None) == "a couple in a park"
    assert augment_prompt("a chef", "old", "{prompt}, {keyword} person") == "a chef, old person"
    race = keyword_set("race")
    assert race.class_index("Latino Hispanic") == race.class_index("white") == 0
    assert len(keyword_set("gender_race").keywords) == 12
    np.testing.assert_allclose(keyword_set("race").class_target(race.target()), [0.5, 1 / 6, 1 / 6, 1 / 6])
    custom = keyword_set(["gay", "lesbian", ""])
    assert custom.attribute is None and custom.class_index("gay") is None


def test_bad_input_fails_early_with_a_clear_message(tmp_path, capsys):
    from scaleup.jobs.popalign.__main__ import main
    from scaleup.jobs.popalign.build import validate as validate_sets
    from scaleup.jobs.popalign.generation import validate as validate_generation

    with pytest.raises(ValueError, match="at least 2 keywords"):
        keyword_set(["doctor"])
    with pytest.raises(ValueError, match="at least 2 keywords"):
        validate_generation(GenerateConfig(out=str(tmp_path), keywords=("nurse",)))
    empty = tmp_path / "prompts.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        validate_generation(GenerateConfig(out=str(tmp_path), prompts=str(empty)))
    assert main(["generate", "--out", str(tmp_path / "g"), "--prompts", str(tmp_path / "absent.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "absent.txt" in err and "one prompt per line" in err
    gender = keyword_set("gender")
    for bad, message in (((0.7, 0.7), "not a distribution"), ((0.5, 0.3, 0.2), "one probability per keyword"),
                         ((1.2, -0.2), "negative")):
        with pytest.raises(ValueError, match=message):
            validate_sets(BuildSetsConfig(generated="g", out="o", target=bad), gender)
    np.testing.assert_allclose(validate_sets(BuildSetsConfig(generated="g", out="o", target=(0.8, 0.2)), gender),
                               [0.8, 0.2])
    data = _write_dataset(tmp_path / "data")
    (data / "images" / "000001-l0.png").unlink()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t"), "--pipeline",
                 str(tmp_path / "no-model")]) == 2  # the table is read before the (absent) model
    err = capsys.readouterr().err.strip()
    assert "1 image(s)" in err and "000001-l0.png" in err and err.count("\n") == 0
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\] \(App. A.3: 0.5; 0.25 or 0.75\); got 1.5"):
        from scaleup.jobs.popalign.train import validate as validate_training

        validate_training(_train_config(tmp_path, alpha=1.5))


def test_sanity_filter_drops_images_and_pairs_that_disagree_with_their_prompt(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from scaleup.jobs.popalign.build import run_build_sets
    from scaleup.jobs.popalign.generation import run_generate

    # pair level: a winning set whose labels disagree with its prompt is dropped, as is one less balanced than
    # its losing set
    ok = {"verdict": "ok"}
    male, female = [0.9, 0.1], [0.1, 0.9]
    winners = [dict(ok, probs=male), dict(ok, probs=female)]
    losers = [dict(ok, probs=male), dict(ok, probs=male)]
    assert check_pair(winners, losers, np.array([0.5, 0.5])) is None
    assert check_pair([dict(ok, probs=male), {"verdict": "disagrees", "probs": male}], losers,
                      np.array([0.5, 0.5])) == "winner_disagrees"
    assert check_pair(losers, winners, np.array([0.5, 0.5])) == "winner_not_closer"
    assert check_pair(losers, winners, np.array([0.5, 0.5]), require_winner_closer=False) is None

    # job level, on images of a tiny pipeline with a stub detector/classifier keyed by file
    config = GenerateConfig(out=str(tmp_path / "gen"), max_prompts=1, images_per_neutral=4,
                            images_per_augmented=3, num_inference_steps=1, height=32, width=32, batch_size=4)
    summary = run_generate(config, pipe=_pipe(), progress=False)
    assert summary["images"] == 10
    assert run_generate(config, pipe=None, progress=False)["generated_now"] == 0  # resumable: nothing left to do
    verdicts = {"images/0000-male/0000.png": (True, male), "images/0000-male/0001.png": (True, male),
                "images/0000-male/0002.png": (False, None),  # no face: the helmeted astronaut
                "images/0000-female/0000.png": (True, male),  # disagrees with "female"
                "images/0000-female/0001.png": (True, [0.45, 0.55]),  # ambiguous at min_confidence 0.6
                "images/0000-female/0002.png": (True, female)}
    verdicts.update({f"images/0000-neutral/{j:04d}.png": (True, male) for j in range(4)})
    # a stub detector + classifier: faces and gender probabilities chosen per image file, not from the pixels
    stub = Perception(detector=None, classifier=SimpleNamespace(class_names=("male", "female")),
                      description={"detector": "stub", "classifier": "stub"})

    def perceive(records, root, perception, **_):
        for r in records:
            r["has_face"], r["probs"] = verdicts[r["file"]]

    monkeypatch.setattr("scaleup.jobs.popalign.build.perceive_records", perceive)
    report = run_build_sets(BuildSetsConfig(generated=config.out, out=str(tmp_path / "data"), set_size=2,
                                            min_confidence=0.6), perception=stub, progress=False)
    assert report["images"]["verdicts"]["augmented"] == {"ok": 3, "no_face": 1, "disagrees": 1, "ambiguous": 1}
    rows = [json.loads(x) for x in (tmp_path / "data" / "metadata.jsonl").read_text().splitlines()]
    used = {r["source"] for r in rows}
    assert not used & {"images/0000-male/0002.png", "images/0000-female/0000.png", "images/0000-female/0001.png"}
    winners = [r for r in rows if r["role"] == "winner"]
    assert all(r["verdict"] == "ok" and r["label"] == r["keyword"] for r in winners)
    assert report["set_pairs"] == 1 and {r["keyword"] for r in winners} == {"male", "female"}
    assert all(r["caption"] == "best quality, a realistic photo of Engineer" for r in rows)
    # every recorded seed reproduces its image through scaleup.models.generate
    from scaleup.models.pipelines import generate
    from scaleup.jobs.popalign.sanity import load_images

    row = winners[0]
    image = generate(_pipe(), row["prompt"], [row["seed"]], num_inference_steps=1, guidance_scale=6.5, height=32,
                     width=32, progress=False)
    on_disk = load_images([tmp_path / "data" / row["file_name"]])
    assert (image - on_disk).abs().max() <= 0.5 / 255 + 1e-6
    # the imagefolder layout: metadata.jsonl beside the images, one row per file, plus the data card
    assert len({r["file_name"] for r in rows}) == len(rows) and (tmp_path / "data" / "README.md").is_file()
    pairs = [json.loads(x) for x in (tmp_path / "data" / "pairs.jsonl").read_text().splitlines()]
    assert {p["jpg_0"] for p in pairs} == {r["file_name"] for r in winners}


# -- several processes -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_form_mu_from_both_processes_means(tmp_path):
    from scaleup.models.tiny import save_tiny_models

    _write_dataset(tmp_path / "data", n_sets=4)
    models = save_tiny_models(tmp_path / "models")
    alpha = 0.75
    # `accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up (its simple launcher);
    # torchrun starts two, and accelerate joins them over gloo (its MULTI_CPU mode) when ACCELERATE_USE_CPU is set
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="true")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "scaleup.jobs.popalign", "train", "--data", str(tmp_path / "data"), "--out",
               str(tmp_path / "train"), "--pipeline", str(models["sd15"]), "--max-train-steps", "3",
               "--pairs-per-device", "2", "--learning-rate", "1e-3", "--lr-warmup-steps", "0", "--alpha", str(alpha),
               "--checkpoint-every", "0", "--reward-accuracy-sets", "0", "--use-8bit-adam", "false"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(x) for x in (tmp_path / "train" / "log.jsonl").read_text().splitlines()]
    for entry in log[1:]:  # step 1: model == reference, r = 0 everywhere
        means = np.array(entry["r_means_per_process"])
        assert means.shape == (2, 2) and not np.allclose(means[0], means[1])
        expected = alpha * means[:, 0].mean() + (1 - alpha) * means[:, 1].mean()
        local = alpha * means[0, 0] + (1 - alpha) * means[0, 1]  # what process 0 alone would have formed
        assert entry["mu"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
        assert entry["mu"] != pytest.approx(local, rel=1e-3)


def test_shipped_configs_parse_into_the_stage_configs():
    from scaleup.job_config import parse_config

    folder = REPO / "scaleup" / "jobs" / "popalign" / "configs"
    full = parse_config(TrainConfig, ["--config", str(folder / "sdxl_full.yaml"), "--data", "d", "--out", "o",
                                      "--max-train-steps", "10"])
    assert (full.finetune, full.mixed_precision, full.learning_rate, full.lr_warmup_steps, full.beta_prime) == \
        ("full", "bf16", 5e-7, 200, 5000.0)
    assert full.max_train_steps == 10  # a flag wins over the file
    gen = parse_config(GenerateConfig, ["--config", str(folder / "generate_sdxl.yaml"), "--out", "o"])
    assert keyword_set(gen.keywords).name == "gender_race"
    for name in ("sdxl_lora.yaml", "sd15_lora.yaml"):
        lora = parse_config(TrainConfig, ["--config", str(folder / name), "--data", "d", "--out", "o"])
        assert lora.finetune == "lora"
    assert parse_config(BuildSetsConfig, ["--config", str(folder / "build_sets.yaml"), "--generated", "g",
                                          "--out", "o"]).set_size == 5


@pytest.mark.slow
def test_popalign_sd_experiment_quick_runs_end_to_end(tmp_path):
    import experiments

    result = experiments.run("popalign-sd", quick=True, out=tmp_path, seed=0)
    assert result["resume"] == {"stopped_after": 2, "resumed_from": result["resume"]["resumed_from"],
                                "weights_equal": True, "logs_equal": True}
    assert result["build"]["set_pairs"] > 0 and "stand-in" in result["build"]["filter"]["classifier"]
    assert result["training"]["popalign"]["finished"] and result["training"]["sft"]["finished"]
    assert set(result["evaluation"]) == {"base", "popalign", "sft"}
    assert (tmp_path / "popalign-sd" / "popalign_sd_training.png").is_file()


def test_full_popalign_sd_without_weights_stops_unless_missing_models_are_allowed(tmp_path, monkeypatch):
    from experiments.runner import run
    from scaleup.errors import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FAIRDIFF_SD15", raising=False)
    with pytest.raises(ModelUnavailableError, match="FAIRDIFF_SD15"):
        run("popalign-sd", out=tmp_path / "a")
    results = run("popalign-sd", out=tmp_path / "b", allow_missing_models=True)
    assert results["weights_available"] is False and results["missing_models"]
    monkeypatch.setenv("FAIRDIFF_SD15", str(tmp_path / "typo"))
    with pytest.raises(ModelUnavailableError, match="typo"):
        run("popalign-sd", out=tmp_path / "c", allow_missing_models=True)


def test_the_train_commands_last_line_says_where_the_weights_are_and_counts_skipped_steps(tmp_path):
    from scaleup.jobs.popalign.__main__ import _train_line

    config = _train_config(tmp_path)
    done = {"finished": True, "iterations_done": 5, "skipped_steps": [2], "weights": {"lora": f"{config.out}/lora"}}
    assert _train_line(config, done) == (f"popalign train: 5 steps (1 skipped as non-finite); wrote "
                                         f"{config.out}/train_results.json; weights in {config.out}/lora")
    assert _train_line(config, {"finished": False, "iterations_done": 2}) == \
        f"popalign train: stopped after 2 steps; continue with --resume latest --out {config.out}"
