"""Several launched processes split the work of evaluate and PopAlign generate / build-sets, and give the
one-process result (issue 19), on the committed testbed.

The launches use ``torchrun`` without ``ACCELERATE_USE_CPU``: what ``accelerate launch --multi_gpu --num_processes 2``
does on a machine without a GPU, where both processes used to believe they were alone and did all the work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaleup.processes import LaunchError, _check_joined, launched_processes, on_cpu, process_state

ROOT = Path(__file__).resolve().parent.parent
TESTBED = ROOT / "scaleup" / "testbed" / "digits-ink"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ACCELERATE_USE_CPU", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return env | dict(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1") | extra


def _run(args: list[str], *, processes: int, port: int) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                 str(port)] if processes > 1 else [sys.executable])
    done = subprocess.run(launcher + ["-m"] + args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ---------------------------------------------------------------------------------------------- the one helper
def test_one_process_run_directly_is_a_group_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_processes() == 1 and process_state().num_processes == 1


def test_several_launched_processes_on_a_cpu_machine_share_the_cpu(monkeypatch):
    import torch

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert on_cpu() is (not torch.cuda.is_available())
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert on_cpu() is False
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert on_cpu() is True


def test_processes_that_did_not_join_are_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="started 2 processes but accelerate joined 1; each would do all the work"):
        _check_joined(1)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(LaunchError, match="WORLD_SIZE='two' is not a whole number"):
        launched_processes()


# ---------------------------------------------------------------------------------------------- evaluate
@pytest.mark.slow
def test_two_processes_split_the_evaluation_and_give_the_one_process_records(tmp_path):
    args = ["scaleup.evaluate", "--config", str(TESTBED / "evaluate.json"), "--pipeline", str(TESTBED), "--prompts",
            str(TESTBED / "prompts" / "training.txt"), "--images-per-prompt", "4", "--batch-size", "4",
            "--num-inference-steps", "4"]
    _run(args + ["--out", str(tmp_path / "one")], processes=1, port=0)
    _run(args + ["--out", str(tmp_path / "two")], processes=2, port=29531)
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["per_prompt"] == one["per_prompt"] and two["overall"] == one["overall"]
    assert (tmp_path / "two" / "records.csv").read_text() == (tmp_path / "one" / "records.csv").read_text()


# ---------------------------------------------------------------------------------------------- PopAlign
@pytest.mark.slow
def test_two_processes_split_popalign_generate_and_build_sets_and_give_the_one_process_dataset(tmp_path):
    from PIL import Image

    from experiments.testbed_popalign import TestbedPopAlignSettings, stage_arguments

    flags = {}
    for name in ("one", "two"):
        flags[name] = stage_arguments(tmp_path / name, 7, prompts=TESTBED / "prompts" / "training.txt", sft=False,
                                      settings=TestbedPopAlignSettings.tiny(), pipeline=TESTBED)
    for name, processes, port in (("one", 1, 0), ("two", 2, 29533)):
        _run(["scaleup.jobs.popalign", "generate"] + flags[name]["generate"], processes=processes, port=port)
        _run(["scaleup.jobs.popalign", "build-sets"] + flags[name]["build-sets"], processes=processes, port=port + 1)
    gen = {name: tmp_path / name / "generated" for name in ("one", "two")}
    records = {name: (gen[name] / "generated.jsonl").read_text() for name in gen}
    assert records["two"] == records["one"]
    files = [json.loads(line)["file"] for line in records["one"].splitlines()]
    assert len(files) == 2 * (4 + 2 * 2)  # two prompts: 4 neutral images, 2 per keyword
    for file in files:  # the same seed makes the same image whichever process drew it
        a, b = (np.asarray(Image.open(gen[name] / file)) for name in ("one", "two"))
        assert np.array_equal(a, b), file
    data = {name: tmp_path / name / "data" for name in ("one", "two")}
    rows = {name: [json.loads(line) for line in (data[name] / "metadata.jsonl").read_text().splitlines()]
            for name in data}
    assert rows["one"] and len(rows["two"]) == len(rows["one"])
    for a, b in zip(rows["one"], rows["two"]):  # verdicts from the same classifier batches
        assert {k: v for k, v in a.items() if k != "probs"} == {k: v for k, v in b.items() if k != "probs"}
        np.testing.assert_allclose(b["probs"], a["probs"], rtol=0, atol=1e-12)
    reports = [json.loads((data[name] / "build_report.json").read_text()) for name in data]
    assert reports[0]["images"] == reports[1]["images"] and reports[0]["set_pairs"] == reports[1]["set_pairs"]
