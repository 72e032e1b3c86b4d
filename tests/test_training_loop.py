"""The shared training loop: resume from a checkpoint equals an uninterrupted run bit for bit; non-finite steps are
skipped; checkpoints are atomic, rotated and found by 'latest'."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator

from scaleup.training.checkpoints import (MARKER, CheckpointDamagedError, TrainingProgress, complete_checkpoints,
                                          load_checkpoint, resolve_resume)
from scaleup.training.log import JsonlLog
from scaleup.training.loop import MAX_SKIPS_IN_A_ROW, NonFiniteTrainingError, run_training

DATA = torch.linspace(-1, 1, 64).reshape(32, 2)


def _job(out, *, resume=None, until=None, poison_step=None, n_iterations=6, poison_from=None, lr=1e-2):
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(123)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    progress = TrainingProgress()
    path = resolve_resume(out, resume)
    if path is not None:
        load_checkpoint(accelerator, path, {"progress": progress})
    log = JsonlLog(out / "log.jsonl", resume_step=progress.step if path is not None else None)

    def step_fn(p):
        batch = DATA[(p.data_position * 4) % 32:(p.data_position * 4) % 32 + 4]
        p.data_position += 1
        noise = torch.randn(4, 1)  # the global RNG: restored by load_state
        loss = ((model(batch) - noise) ** 2).mean()
        if p.step == poison_step or (poison_from is not None and p.step >= poison_from):
            loss = loss * float("inf")
        accelerator.backward(loss)
        return {"loss": float(loss.detach())}

    run_training(accelerator, step_fn=step_fn, parameters=list(model.parameters()), optimizer=optimizer,
                 lr_scheduler=scheduler, progress=progress, n_iterations=n_iterations, output_dir=out, log=log,
                 checkpoint_every=2, total_limit=2, until=until, show_progress=False, states={"progress": progress})
    return [p.detach().clone() for p in model.parameters()], log.read()


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full, full_log = _job(tmp_path / "a")
    _job(tmp_path / "b", until=3)  # "killed" after iteration 3; the last checkpoint is iteration 2
    (tmp_path / "b" / "log.jsonl").open("a").write('{"step": 99}\n')
    resumed, resumed_log = _job(tmp_path / "b", resume="latest")
    assert all(torch.equal(x, y) for x, y in zip(full, resumed))
    assert resumed_log == full_log
    assert [s for s, _ in complete_checkpoints(tmp_path / "b")] == [4, 6]  # total_limit = 2 rotates


def test_non_finite_gradient_skips_the_update(tmp_path):
    params, log = _job(tmp_path, poison_step=1, n_iterations=2)
    assert [entry["skipped"] for entry in log] == [False, True]
    one, _ = _job(tmp_path / "one", n_iterations=1)
    assert all(torch.equal(x, y) for x, y in zip(params, one))


def test_a_diverged_run_stops_after_the_stated_number_of_skips_in_a_row(tmp_path):
    """Issue 19: non-finite steps are skipped, but a run that only produces them stops instead of running on."""
    with pytest.raises(NonFiniteTrainingError, match=f"iterations 4-{3 + MAX_SKIPS_IN_A_ROW}: {MAX_SKIPS_IN_A_ROW} "
                                                     "steps in a row .* the last good checkpoint is .*checkpoint-12"):
        _job(tmp_path, poison_from=3, n_iterations=40)
    # skipped steps leave the state untouched, so their checkpoints are sound; none follows the stop
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [10, 12]
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["skipped"] for e in lines] == [False] * 3 + [True] * MAX_SKIPS_IN_A_ROW


def test_an_update_that_makes_a_parameter_non_finite_stops_before_anything_is_saved(tmp_path):
    """Issue 19: PopAlign with --learning-rate inf wrote 64 of 64 LoRA tensors NaN with exit 0."""
    with pytest.raises(NonFiniteTrainingError, match="iteration 1: the update left trained parameters non-finite"):
        _job(tmp_path, lr=float("inf"))
    assert complete_checkpoints(tmp_path) == []


def test_half_written_checkpoint_is_never_resumed(tmp_path):
    _job(tmp_path, n_iterations=2)
    (tmp_path / "checkpoint-4").mkdir()  # no marker: a save that was killed
    (tmp_path / ".checkpoint-6.tmp").mkdir()
    assert resolve_resume(tmp_path, "latest").name == "checkpoint-2"
    with pytest.raises(ValueError, match="not a finished checkpoint"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-4"))
    assert resolve_resume(tmp_path / "nothing", "latest") is None
    assert json.loads((tmp_path / "checkpoint-2" / MARKER).read_text())["step"] == 2


def test_no_job_state_is_pickled_and_every_file_is_verified_on_resume(tmp_path):
    """Issue 19: accelerate's custom_checkpoint_*.pkl was unpickled without weights_only (a crafted file ran a shell
    command), one flipped bit resumed silently into another model, a missing random_states_0.pkl was ignored."""
    _job(tmp_path / "a", n_iterations=4)
    checkpoint = tmp_path / "a" / "checkpoint-4"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert not any(n.startswith("custom_checkpoint") for n in names)
    assert "fairdiff_state_progress.json" in names
    assert json.loads((checkpoint / "fairdiff_state_progress.json").read_text()) == {
        "__dict__": [["step", 4], ["data_position", 4]]}
    marker = json.loads((checkpoint / MARKER).read_text())
    assert set(marker["files"]) == set(names) - {MARKER}

    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(b"crafted")
    with pytest.raises(CheckpointDamagedError, match="custom_checkpoint_0.pkl was added after .* The last good "
                                                     "checkpoint is .*checkpoint-2"):
        _job(tmp_path / "a", resume="latest", n_iterations=6)
    (checkpoint / "custom_checkpoint_0.pkl").unlink()
    state = checkpoint / "random_states_0.pkl"
    kept = state.read_bytes()
    state.unlink()
    with pytest.raises(CheckpointDamagedError, match="random_states_0.pkl is missing"):
        _job(tmp_path / "a", resume="latest", n_iterations=6)
    flipped = bytearray(kept)
    flipped[len(flipped) // 2] ^= 1
    state.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointDamagedError, match="random_states_0.pkl is damaged"):
        _job(tmp_path / "a", resume="latest", n_iterations=6)
    state.write_bytes(kept)
    resumed, _ = _job(tmp_path / "a", resume="latest", n_iterations=6)
    full, _ = _job(tmp_path / "b", n_iterations=6)
    assert all(torch.equal(x, y) for x, y in zip(full, resumed))


def test_replacing_a_checkpoint_never_shows_a_marked_one_without_its_files(tmp_path, monkeypatch):
    """Issue 19: a kill while checkpoint-4 was being replaced left it marked complete without its parameters."""
    import scaleup.training.checkpoints as checkpoints

    _job(tmp_path, n_iterations=4)
    seen = []
    real = checkpoints.atomic_replace_folder

    def spy(src, dst):
        seen.append((tmp_path / "checkpoint-4").exists())
        return real(src, dst)

    monkeypatch.setattr(checkpoints, "atomic_replace_folder", spy)
    _job(tmp_path, resume=str(tmp_path / "checkpoint-2"), n_iterations=4)  # saves checkpoint-4 again
    # the old checkpoint-4 is renamed away whole before the new one takes its name
    assert seen == [True, False]
    assert checkpoints.verify_checkpoint(tmp_path / "checkpoint-4")["step"] == 4
