"""A run folder is a contract (issue 19): one run per folder, resumed only with its own settings, one writer.

The unit tests drive :mod:`scaleup.training.run_folder` directly; the job tests run the aDFT job on tiny random
models (``scaleup.jobs.adft.tiny``) and check that what an earlier run wrote is never lost or mixed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scaleup.training.run_folder import (LOCK_FILE, SETTINGS_FILE, RunFolderError, check_run_folder,
                                         claim_run_folder, settings_differences)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------- the module
def test_differences_name_each_setting_and_skip_those_that_may_change():
    stored = {"learning_rate": 1e-3, "seed": 0, "until": 2, "prompts": ["a", "b"]}
    current = {"learning_rate": 5e-3, "seed": 0, "until": None, "prompts": ("a", "b")}
    assert settings_differences(stored, current, may_change=("until",)) == ["learning_rate: 0.001 -> 0.005"]
    assert settings_differences(stored, current, may_change=()) == ["learning_rate: 0.001 -> 0.005",
                                                                     "until: 2 -> None"]


def test_a_fresh_run_writes_its_settings_and_a_second_fresh_run_is_refused(tmp_path):
    out = tmp_path / "run"
    with claim_run_folder(out, job="test", settings={"lr": 1.0}, resume=None) as folder:
        assert folder.fresh and json.loads((out / SETTINGS_FILE).read_text())["settings"] == {"lr": 1.0}
        held = json.loads((out / LOCK_FILE).read_text())
        assert held["host"] == socket.gethostname() and held["job"] == "test"
    assert not (out / LOCK_FILE).exists()
    with pytest.raises(RunFolderError, match="already holds a run; pass --resume latest"):
        check_run_folder(out, settings={"lr": 1.0}, resume=None)
    assert not check_run_folder(out, settings={"lr": 1.0}, resume="latest")  # continues
    with pytest.raises(RunFolderError, match=r"lr: 1\.0 -> 2\.0"):
        check_run_folder(out, settings={"lr": 2.0}, resume="latest")


def test_start_over_moves_the_whole_old_run_aside(tmp_path):
    out = tmp_path / "run"
    claim_run_folder(out, job="test", settings={"lr": 1.0}, resume=None).release()
    (out / "log.jsonl").write_text("old\n")
    with claim_run_folder(out, job="test", settings={"lr": 2.0}, resume=None, start_over=True) as folder:
        assert folder.fresh and folder.moved_aside.name.startswith("run.replaced-")
        assert (folder.moved_aside / "log.jsonl").read_text() == "old\n"
        assert json.loads((folder.moved_aside / SETTINGS_FILE).read_text())["settings"] == {"lr": 1.0}
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, SETTINGS_FILE]


def test_a_live_holder_is_refused_and_a_dead_one_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "job": "other",
                                                 "started_utc": "x"}))
        with pytest.raises(RunFolderError, match=f"in use by other \\(pid {sleeper.pid}"):
            claim_run_folder(out, job="test", settings={}, resume=None)
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = _dead_pid()
    (out / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead, "job": "other"}))
    with claim_run_folder(out, job="test", settings={}, resume=None) as folder:
        assert folder.took_over_lock["pid"] == dead


def test_a_file_is_not_a_run_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="is a file; pass a folder"):
        check_run_folder(tmp_path / "f", settings={}, resume=None)


# ---------------------------------------------------------------------------------------------- the aDFT job
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from scaleup.jobs.adft.tiny import write_tiny_run_inputs

    return write_tiny_run_inputs(tmp_path_factory.mktemp("adft-inputs"))


def _adft(inputs, out, **kw):
    from scaleup.jobs.adft.config import AdftConfig
    from scaleup.jobs.adft.job import run_job
    from scaleup.jobs.adft.tiny import tiny_config_values

    return run_job(AdftConfig(**(tiny_config_values(inputs, out) | {"iterations": 2, "checkpoint_every": 1} | kw)))


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_adft_refuses_a_fresh_run_in_a_used_folder_and_keeps_it_whole(inputs, tmp_path):
    """Issue 19: a rerun without --resume truncated log.jsonl and replaced final/ while keeping old checkpoints."""
    out = tmp_path / "run"
    _adft(inputs, out)
    before = _snapshot(out)
    with pytest.raises(RunFolderError, match="already holds a run"):
        _adft(inputs, out)
    assert _snapshot(out) == before


def test_adft_refuses_a_resume_that_changes_the_result_and_names_the_setting(inputs, tmp_path):
    """Issue 19: a changed learning rate was silently ignored on resume while results.json recorded it."""
    out = tmp_path / "run"
    _adft(inputs, out, until=1)
    before = _snapshot(out)
    for kw, name in ((dict(learning_rate=5e-2), "learning_rate"), (dict(seed=3), "seed"),
                     (dict(batch_size=2), "batch_size"), (dict(lr_scheduler="cosine"), "lr_scheduler")):
        with pytest.raises(RunFolderError, match=f"{name}: .* -> "):
            _adft(inputs, out, resume="latest", **kw)
        assert _snapshot(out) == before
    done = _adft(inputs, out, resume="latest", iterations=3)  # constant schedule: the budget may grow
    assert done["finished"] and done["iterations_done"] == 3


def test_adft_iterations_may_not_change_under_a_decaying_schedule(inputs, tmp_path):
    out = tmp_path / "run"
    _adft(inputs, out, until=1, lr_scheduler="cosine")
    with pytest.raises(RunFolderError, match="iterations: 2 -> 3"):
        _adft(inputs, out, resume="latest", lr_scheduler="cosine", iterations=3)


def test_adft_start_over_moves_the_old_run_aside(inputs, tmp_path):
    out = tmp_path / "run"
    _adft(inputs, out)
    before = _snapshot(out)
    _adft(inputs, out, start_over=True, seed=1)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and _snapshot(aside[0]) == before
    assert json.loads((out / SETTINGS_FILE).read_text())["settings"]["seed"] == 1


def test_adft_refuses_a_folder_another_live_job_holds(inputs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "job": "x"}))
        with pytest.raises(RunFolderError, match="two jobs never write one folder"):
            _adft(inputs, out)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


# ---------------------------------------------------------------------------------------------- PopAlign train
def test_popalign_refuses_a_resume_with_another_beta_and_a_fresh_run_in_a_used_folder(tmp_path):
    """Issue 19: PopAlign resumed with another beta', alpha, loss or seed silently mixed the two runs."""
    from scaleup.jobs.popalign.train import run_train
    from test_popalign_job import _pipe, _train_config, _write_dataset

    _write_dataset(tmp_path / "data", n_sets=3)
    common = dict(max_train_steps=3, checkpoint_every=1, pairs_per_device=2)
    run_train(_train_config(tmp_path, until=1, **common), pipe=_pipe(), progress=False)
    before = _snapshot(tmp_path / "train")
    for kw, name in ((dict(beta_prime=10.0), "beta_prime"), (dict(alpha=0.25), "alpha"), (dict(loss="sft"), "loss"),
                     (dict(seed=2), "seed"), (dict(learning_rate=1e-2), "learning_rate")):
        with pytest.raises(RunFolderError, match=f"{name}: .* -> "):
            run_train(_train_config(tmp_path, resume="latest", **common, **kw), pipe=_pipe(), progress=False)
    with pytest.raises(RunFolderError, match="already holds a run"):
        run_train(_train_config(tmp_path, **common), pipe=_pipe(), progress=False)
    assert _snapshot(tmp_path / "train") == before
    done = run_train(_train_config(tmp_path, resume="latest", **common), pipe=_pipe(), progress=False)
    assert done["finished"]


@pytest.mark.parametrize("kw, message", [
    (dict(learning_rate=float("inf")), r"learning_rate must be a number in \(0, 1\)"),
    (dict(learning_rate=1e300), r"learning_rate must be a number in \(0, 1\) \(the public code.*\); got 1e\+300"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm must be a finite number > 0"),
    (dict(max_grad_norm=-1.0), "max_grad_norm must be a finite number > 0"),
    (dict(adam_beta2=1.0), r"adam_beta2 must be a number in \[0, 1\); got 1.0"),
])
def test_popalign_refuses_settings_that_write_nan_weights_or_ascend(tmp_path, kw, message):
    """Issue 19: --learning-rate inf and --max-grad-norm nan wrote NaN weights with exit 0; -1 ascended."""
    from scaleup.jobs.popalign.train import run_train
    from test_popalign_job import _train_config

    with pytest.raises(ValueError, match=message):
        run_train(_train_config(tmp_path, **kw), progress=False)
    assert not (tmp_path / "train").exists()


def test_adft_refuses_an_sdxl_folder_before_loading_it(inputs, tmp_path):
    """Issue 19: an SDXL folder died inside diffusers (TypeError) after 17 s of loading."""
    from scaleup.jobs.adft.config import AdftConfig, plan_job
    from scaleup.jobs.adft.tiny import tiny_config_values
    from scaleup.models.tiny import tiny_sdxl_pipeline

    tiny_sdxl_pipeline(0).save_pretrained(tmp_path / "sdxl")
    config = AdftConfig(**(tiny_config_values(inputs, tmp_path / "run") | {"pretrained_model": str(tmp_path / "sdxl")}))
    with pytest.raises(ValueError, match="pretrained_model: .* is an SDXL pipeline; expected an SD 1.5-architecture"):
        plan_job(config)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- launch precision
def test_a_launch_precision_the_job_would_ignore_is_refused_before_loading(inputs, tmp_path, monkeypatch):
    """Issue 19: ``accelerate launch --mixed_precision bf16`` had no effect on aDFT, silently."""
    from scaleup.jobs.popalign.train import run_train
    from test_popalign_job import _train_config

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError, match="mixed precision 'bf16' .* --mixed-precision 'no'.* pass --mixed-precision "
                                         "bf16"):
        _adft(inputs, tmp_path / "adft")
    with pytest.raises(ValueError, match="mixed precision 'bf16'"):
        run_train(_train_config(tmp_path), progress=False)
    assert not (tmp_path / "adft").exists() and not (tmp_path / "train").exists()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert _adft(inputs, tmp_path / "adft")["finished"]


# ---------------------------------------------------------------------------------------------- --report-to
def test_report_to_is_checked_before_loading_and_both_jobs_log_every_iteration(inputs, tmp_path, monkeypatch):
    """Issue 19: ``--report_to`` as diffusers' scripts have it, in both jobs through the one iteration loop. The
    tracker packages are not installed here, so a recording tracker stands in for them (accelerate takes tracker
    instances wherever it takes names)."""
    from accelerate.tracking import GeneralTracker

    import scaleup.jobs.adft.job as adft_job
    import scaleup.jobs.popalign.train as popalign_train
    from scaleup.jobs.popalign.train import run_train
    from scaleup.training.trackers import check_report_to
    from test_popalign_job import _pipe, _train_config, _write_dataset

    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'; expected one of none, tensorboard"):
        check_report_to("tensorbord")
    with pytest.raises(ValueError, match="--report-to wandb: the wandb package is not installed"):
        _adft(inputs, tmp_path / "refused", report_to="wandb")
    assert not (tmp_path / "refused").exists()

    class Recording(GeneralTracker):
        name, requires_logging_directory = "recording", False
        logged: list = []

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            pass

        def log(self, values, step=None, **kwargs):
            Recording.logged.append((step, dict(values)))

    def start(accelerator, value, project, config):  # what start_trackers does for an installed tracker
        accelerator.init_trackers(project, config={"seed": config["seed"]})
        return True

    monkeypatch.setattr(adft_job, "log_with", lambda value: [Recording()])
    monkeypatch.setattr(adft_job, "start_trackers", start)
    _adft(inputs, tmp_path / "adft", iterations=2)
    assert [step for step, _ in Recording.logged] == [1, 2] and "loss_align" in Recording.logged[0][1]

    Recording.logged.clear()
    monkeypatch.setattr(popalign_train, "log_with", lambda value: [Recording()])
    monkeypatch.setattr(popalign_train, "start_trackers", start)
    _write_dataset(tmp_path / "data", n_sets=3)
    run_train(_train_config(tmp_path, max_train_steps=2), pipe=_pipe(), progress=False)
    assert [step for step, _ in Recording.logged] == [1, 2] and "loss" in Recording.logged[0][1]


def test_popalign_refuses_a_corrupt_image_before_any_model_loads(tmp_path):
    """Issue 19: a corrupt image in a PopAlign dataset killed training mid-run."""
    from scaleup.jobs.popalign.train import run_train
    from test_popalign_job import _train_config, _write_dataset

    data = _write_dataset(tmp_path / "data", n_sets=2)
    victim = sorted((data / "images").glob("*.png"))[1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the compressed pixels: the chunk's CRC no longer matches
    victim.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"image {victim} .* cannot be read"):
        run_train(_train_config(tmp_path, pipeline=str(tmp_path / "no-model")), progress=False)
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_output_folder_is_one_clear_error(tmp_path, where):
    """Issue 19: a read-only or file --out gave a raw OSError."""
    if where == "under-a-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
    else:  # nobody, root included, can make a folder in /proc (permissions alone do not stop root)
        if not Path("/proc").is_dir():
            pytest.skip("no /proc on this system")
        out = Path("/proc/fairdiff-run")
    with pytest.raises(RunFolderError, match=f"{out}: cannot create or write the folder"):
        claim_run_folder(out, job="test", settings={}, resume=None)


def test_a_damaged_soft_prompt_file_is_named(tmp_path):
    """Issue 19: damaged soft-prompt files raised without naming the file."""
    import torch

    from scaleup.models.soft_prompt import SoftPrompt

    path = SoftPrompt(torch.zeros(2, 4)).save(tmp_path / "soft_prompt.safetensors")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match=f"soft prompt: '{path}' is damaged or not a safetensors file"):
        SoftPrompt.load(path)
