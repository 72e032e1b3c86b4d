"""Checkpoints through ``accelerator.save_state``, made atomic, rotated, and found again by ``--resume latest``.

``accelerator.save_state`` writes model, optimiser, LR scheduler, gradient scaler, every process's RNG states and
the objects registered with ``register_for_checkpointing`` (here :class:`TrainingProgress`: iteration and data
position), so loading it continues the run exactly. It writes file by file, so a run killed mid-save would leave a
half checkpoint that ``latest`` must never pick: the state goes to a hidden ``.checkpoint-N.tmp`` folder first, a
marker file is written last, and one ``os.replace`` makes it ``checkpoint-N`` (the layout of diffusers' training
examples).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from scaleup.atomic_write import atomic_replace_folder, atomic_write_text

MARKER = "fairdiff_checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class TrainingProgress:
    """The position of a run, saved with every checkpoint: iterations done and batches consumed."""

    def __init__(self) -> None:
        self.step = 0
        self.data_position = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "data_position": self.data_position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])
        self.data_position = int(state["data_position"])


def complete_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every finished checkpoint under ``output_dir``, oldest first."""
    root = Path(output_dir)
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = _NAME.match(path.name)
            if match and (path / MARKER).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``None`` (fresh run), ``"latest"`` (newest finished one, or a fresh run when
    there is none), or a path to a finished checkpoint folder."""
    if resume in (None, "", "none"):
        return None
    if resume == "latest":
        done = complete_checkpoints(output_dir)
        return done[-1][1] if done else None
    path = Path(resume)
    if not (path / MARKER).is_file():
        raise ValueError(f"--resume {resume}: not a finished checkpoint folder (no {MARKER} in it); pass 'latest' or "
                         f"one of: {', '.join(str(p) for _, p in complete_checkpoints(output_dir)) or 'none exist'}")
    return path


def save_checkpoint(accelerator, output_dir: str | Path, step: int, *, total_limit: int | None = None,
                    metadata: dict | None = None) -> Path:
    """Save the full training state as ``output_dir/checkpoint-{step}``, atomically; keep the newest ``total_limit``.

    Every process must call it (each saves its own RNG state); the main process finalises and rotates.
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # a previous run killed mid-save
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(tmp / MARKER, json.dumps({"step": step, **(metadata or {})}, indent=2))
        atomic_replace_folder(tmp, final)
        if total_limit is not None and total_limit > 0:
            for _, old in complete_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path) -> dict:
    """Restore the state saved by :func:`save_checkpoint`; returns its marker metadata."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
