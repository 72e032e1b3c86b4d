"""Diffusers DDPM path of GAMMA-FACE (seed 002) on tiny UNet2DModels built in code: latents, sampling, training,
loading, and the gmm-celebahq dry run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

import experiments
from experiments import gmm_celebahq
from experiments.experiment import RunContext
from scaleup.gamma_face_ddpm import (
    CELEBAHQ_ID,
    collect_latents,
    continue_sampling,
    latent_timestep,
    load_ddpm,
    tiny_unet,
    train_ddpm,
)
from scaleup.errors import CheckpointError, ModelUnavailableError


def small_unet(seed: int = 0, channels: int = 1, size: int = 8):
    torch.manual_seed(seed)
    return tiny_unet(sample_size=size, channels=channels, block_out_channels=(8, 16), norm_num_groups=4)


def test_latent_collection_shapes_and_continuation():
    unet, sched = small_unet(), DDPMScheduler(num_train_timesteps=100)
    lat, x0 = collect_latents(unet, sched, 5, indices=[3, 1], num_inference_steps=6, batch_size=2)
    assert sorted(lat) == [1, 3] and all(v.shape == (5, 1, 8, 8) for v in lat.values()) and x0.shape == (5, 1, 8, 8)
    assert latent_timestep(sched, 6, 1) > latent_timestep(sched, 6, 3)
    # stopping early changes nothing before the stop (same seed, one batch)
    lat_one, _ = collect_latents(unet, sched, 5, indices=[3], num_inference_steps=6, batch_size=5)
    lat_only, none = collect_latents(unet, sched, 5, indices=[3], num_inference_steps=6, batch_size=5, finish=False)
    assert none is None
    np.testing.assert_allclose(lat_only[3], lat_one[3], atol=1e-6)
    out = continue_sampling(unet, sched, lat[3], index=3, num_inference_steps=6, batch_size=2)
    assert out.shape == (5, 1, 8, 8) and np.isfinite(out).all()


def test_ddpm_path_rejects_bad_input():
    unet, sched = small_unet(), DDPMScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="step index"):
        collect_latents(unet, sched, 2, indices=[6], num_inference_steps=6)
    with pytest.raises(ValueError, match="num_inference_steps"):
        collect_latents(unet, sched, 2, indices=[0], num_inference_steps=0)
    with pytest.raises(ValueError, match="n must be"):
        collect_latents(unet, sched, 0, indices=[0], num_inference_steps=2)
    with pytest.raises(ValueError, match="latents must have shape"):
        continue_sampling(unet, sched, np.zeros((2, 3, 8, 8)), index=0, num_inference_steps=2)
    with pytest.raises(ValueError, match="images must have shape"):
        train_ddpm(unet, sched, np.zeros((4, 1, 4, 4)), steps=1)
    with pytest.raises(ValueError, match="model_id_or_path"):
        load_ddpm("")


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (16, 1, 8, 8))
    sched = DDPMScheduler(num_train_timesteps=100)
    straight = small_unet()
    losses = train_ddpm(straight, sched, images, steps=4, batch_size=4, progress=False)
    resumed = small_unet()
    ckpt = tmp_path / "ddpm.pt"
    train_ddpm(resumed, sched, images, steps=2, batch_size=4, checkpoint=ckpt, checkpoint_every=1, progress=False)
    fresh = small_unet(seed=9)  # a different init: everything must come from the checkpoint
    losses_resumed = train_ddpm(fresh, sched, images, steps=4, batch_size=4, checkpoint=ckpt, progress=False)
    assert losses_resumed == losses
    for a, b in zip(straight.state_dict().values(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_weights_give_one_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"google/ddpm-celebahq-256.*local folder"):
        load_ddpm(CELEBAHQ_ID)
    with pytest.raises(ModelUnavailableError, match="not available"):
        load_ddpm(str(tmp_path / "absent"))


def test_celebahq_path_dry_run_on_a_tiny_pipeline(tmp_path, monkeypatch):
    """The gmm-celebahq job end to end on a tiny 3-channel DDPMPipeline saved to disk and loaded by path."""
    folder = tmp_path / "tiny-ddpm"
    DDPMPipeline(unet=small_unet(channels=3, size=16), scheduler=DDPMScheduler(num_train_timesteps=50)) \
        .save_pretrained(folder)
    unet, sched = load_ddpm(str(folder))
    assert unet.config.in_channels == 3 and isinstance(sched, DDPMScheduler)
    cfg = gmm_celebahq.make_config(quick=True)
    out = tmp_path / "out"
    out.mkdir()
    res = gmm_celebahq.run_on_model(unet, sched, cfg, RunContext("gmm-celebahq", out, 0, True))
    assert res["weights_available"] and 1 <= res["chosen_k"] <= cfg.k_max
    assert sorted(res["bic_curve"]) == list(range(1, cfg.k_max + 1))
    assert sum(res["latents_per_component"]) == cfg.n_latents and (out / res["figure"]).exists()
    monkeypatch.setenv(gmm_celebahq.ENV_PATH, str(folder))
    full = experiments.run("gmm-celebahq", quick=True, out=tmp_path / "runs")
    assert full["weights_available"] and full["model"] == str(folder) and full["figures"]


def test_celebahq_job_stops_on_absent_weights_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv(gmm_celebahq.ENV_PATH, raising=False)
    with pytest.raises(ModelUnavailableError, match=r"FAIRDIFF_CELEBAHQ=/path/to/folder.*model_index\.json.*unet/.*"
                                                    r"--allow-missing-models"):
        experiments.run("gmm-celebahq", quick=True, out=tmp_path)
    assert not (tmp_path / "gmm-celebahq" / "results.json").exists()
    res = experiments.run("gmm-celebahq", quick=True, out=tmp_path, allow_missing_models=True)
    assert res["weights_available"] is False and CELEBAHQ_ID in res["reason"]
    assert res["missing_models"] == [res["reason"]] and "FAIRDIFF_CELEBAHQ" in res["reason"]
    assert (tmp_path / "gmm-celebahq" / "results.json").exists()


# -------------------------------------------------------------- issue 9, item 3: a missing model says so
@pytest.mark.parametrize("what", ["absent", "a file", "empty folder", "broken pipeline"])
def test_a_wrong_celebahq_folder_is_an_error_even_when_missing_models_are_allowed(tmp_path, monkeypatch, what):
    folder = tmp_path / "typo"
    if what == "a file":
        folder.write_text("x")
    elif what == "empty folder":
        folder.mkdir()
    elif what == "broken pipeline":
        folder.mkdir()
        (folder / "model_index.json").write_text("{}")
    monkeypatch.setenv(gmm_celebahq.ENV_PATH, str(folder))
    with pytest.raises(ModelUnavailableError) as err:
        experiments.run("gmm-celebahq", quick=True, out=tmp_path / "out", allow_missing_models=True)
    message = str(err.value)
    assert message.startswith(f"FAIRDIFF_CELEBAHQ={folder}: the folder ") and "model_index.json" in message
    assert "scheduler/scheduler_config.json" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "out" / "gmm-celebahq" / "results.json").exists()


def test_cli_exits_non_zero_on_a_mistyped_model_folder(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, FAIRDIFF_CELEBAHQ="/typo")
    result = subprocess.run([sys.executable, "-m", "experiments", "run", "gmm-celebahq", "--quick", "--out",
                             str(tmp_path), "--allow-missing-models"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmm-celebahq: failed: FAIRDIFF_CELEBAHQ=/typo: the folder does "
                                                   "not exist; it must hold a saved DDPMPipeline: model_index.json")
    assert not (tmp_path / "gmm-celebahq" / "results.json").exists()


@pytest.fixture
def unanswering_hub(monkeypatch):
    """A hub endpoint that accepts connections and never answers, like a network that drops packets."""
    import socket

    from huggingface_hub import constants

    from scaleup import hub

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HUB_PROBE_TIMEOUT_S", 1.0)
    yield
    server.close()


def test_allow_download_without_network_fails_in_seconds(unanswering_hub):
    import time

    from scaleup.text_embeddings import clip_text_encoder

    for load in (lambda: load_ddpm(CELEBAHQ_ID, allow_download=True),
                 lambda: clip_text_encoder(allow_download=True)):
        start = time.perf_counter()
        with pytest.raises(ModelUnavailableError, match=r"the hub cannot be used \(http://127\.0\.0\.1:\d+ "
                                                        r"(is unreachable|did not answer within 1 s)"):
            load()
        assert time.perf_counter() - start < 5


def test_pipeline_loaders_share_the_one_hub_probe(unanswering_hub, tmp_path):
    import time

    from scaleup.models import load_sd15

    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=r"127\.0\.0\.1"):
        load_sd15("someone/not-cached-anywhere", allow_download=True, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5


def test_allow_download_under_hf_hub_offline_fails_at_once(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE is set"):
        load_ddpm(CELEBAHQ_ID, allow_download=True)
    assert time.perf_counter() - start < 2


# ------------------------------------------------------------- issue 9, item 1: checkpoints that can be trusted
class _RunsCodeWhenUnpickled:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _RunsCodeWhenUnpickled.ran = True
    return "ran"


def _tiny_training(tmp_path, **kwargs):
    images = np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8))
    return train_ddpm(small_unet(), DDPMScheduler(num_train_timesteps=50), images, batch_size=4, progress=False,
                      **kwargs)


@pytest.mark.parametrize("content", ["empty", "truncated", "garbled", "foreign dict", "pickled code"])
def test_an_unreadable_checkpoint_is_one_clear_error_naming_the_file_and_the_ways_on(tmp_path, content):
    path = tmp_path / "ddpm.pt"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        _tiny_training(tmp_path, steps=2, checkpoint=path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "garbled":
        path.write_bytes(b"garbled bytes, not a checkpoint" * 20)
    elif content == "foreign dict":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        torch.save({"unet": _RunsCodeWhenUnpickled()}, path)
    with pytest.raises(CheckpointError) as err:
        _tiny_training(tmp_path, steps=3, checkpoint=path)
    message = str(err.value)
    assert str(path) in message and "delete it" in message and "--restart" in message
    assert len(message.splitlines()) == 1
    assert not _RunsCodeWhenUnpickled.ran, "loading a checkpoint ran code from it (weights_only must be True)"
    # the second way on: restart trains afresh and replaces the broken file with a readable checkpoint
    losses = _tiny_training(tmp_path, steps=3, checkpoint=path, restart=True)
    assert len(losses) == 3 and torch.load(path, weights_only=True)["step"] == 3


def test_short_runs_checkpoint_during_training(tmp_path, monkeypatch):
    """--quick trains 60 steps: the checkpoint interval follows the step count instead of a fixed 500."""
    saved_steps = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saved_steps.append(obj["step"]),
                                                                real_save(obj, f, *a, **k))[1])
    _tiny_training(tmp_path, steps=20, checkpoint=tmp_path / "ddpm.pt")
    assert saved_steps == list(range(2, 21, 2))
