"""Checkpoints through ``accelerator.save_state``, made atomic, verified, pickle-free, and found by ``--resume latest``.

``accelerator.save_state`` writes the prepared models, optimiser, gradient scaler and every process's RNG states;
the job's own state (trained parameters, LR schedule, EMA, :class:`TrainingProgress`) is handed to
:func:`save_checkpoint` as ``states`` and written here as safetensors (tensors) plus JSON (everything else), never
through accelerate's ``register_for_checkpointing``, whose ``custom_checkpoint_*.pkl`` files are unpickled
without torch's ``weights_only`` restriction (arbitrary code). What accelerate itself loads on resume (``optimizer.bin``,
``random_states_*.pkl``) goes through torch's restricted ``weights_only`` unpickler.

A run killed mid-save must never leave a checkpoint that ``latest`` picks: the state goes to a hidden
``.checkpoint-N.tmp`` folder first, the marker file is written last and lists the SHA-256 of every file, and one
rename makes it ``checkpoint-N`` (the layout of diffusers' training examples). An existing ``checkpoint-N`` is
renamed away before the new one takes its name, so no moment shows a marked checkpoint with missing files. Resuming
verifies every listed file (and that no other file was added) and names the damaged file and the last good
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from scaleup.atomic_write import atomic_replace_folder, atomic_write, atomic_write_text

MARKER = "fairdiff_checkpoint.json"
STATE_PREFIX = "fairdiff_state_"
#: Sub-folders a job writes into a finished checkpoint (the aDFT job's weights export): never loaded on resume, so
#: they are outside the checksums.
DERIVED = ("export",)
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointDamagedError(ValueError):
    """A checkpoint's files do not match the checksums recorded when it was saved."""


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


# ---- the job's own state as safetensors + JSON ------------------------------------------------------------------

def _split(value: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """``value`` as JSON, its tensors moved to ``tensors`` under path-like keys (dict keys may be ints: optimiser and
    scheduler states use them, so dicts are stored as key/value pairs)."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[k, _split(v, tensors, f"{key}.{k}")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_split(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"state entry {key} is a {type(value).__name__}; a checkpoint holds tensors, numbers, strings, "
                    "lists and dicts only (nothing that needs pickle)")


def _join(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_join(v, tensors) for v in value["__tuple__"])
        return {k: _join(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def save_states(folder: str | Path, states: Mapping[str, Any]) -> None:
    """Write each object's ``state_dict()`` to ``folder``: ``fairdiff_state_NAME.json`` (+ ``.safetensors``)."""
    from safetensors.torch import save

    folder = Path(folder)
    for name, obj in states.items():
        tensors: dict[str, torch.Tensor] = {}
        tree = _split(obj.state_dict(), tensors, name)
        if tensors:
            data = save(tensors)
            atomic_write(folder / f"{STATE_PREFIX}{name}.safetensors", lambda f: f.write(data))
        atomic_write_text(folder / f"{STATE_PREFIX}{name}.json", json.dumps(tree))


def load_states(folder: str | Path, states: Mapping[str, Any]) -> None:
    """Restore the objects saved by :func:`save_states` in place (``load_state_dict``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name, obj in states.items():
        path = folder / f"{STATE_PREFIX}{name}.json"
        if not path.is_file():
            raise CheckpointDamagedError(f"checkpoint {folder} holds no state {name!r} ({path.name}); it was written "
                                         "by a run with other settings")
        tensor_path = folder / f"{STATE_PREFIX}{name}.safetensors"
        tensors = load_file(str(tensor_path)) if tensor_path.is_file() else {}
        obj.load_state_dict(_join(json.loads(path.read_text(encoding="utf-8")), tensors))


# ---- checksums -----------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> dict[str, str]:
    return {name: _sha256(folder / name) for name in _state_files(folder)}


def _state_files(folder: Path) -> list[str]:
    """The files of a checkpoint that resuming reads: all but the marker and the derived exports."""
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER and p.relative_to(folder).parts[0] not in DERIVED]


def verify_checkpoint(path: str | Path) -> dict:
    """Check every file of a finished checkpoint against its recorded SHA-256; returns the marker's metadata.

    Raises :class:`CheckpointDamagedError` naming the first damaged, missing or unexpected file and the newest
    earlier checkpoint that verifies.
    """
    path = Path(path)
    marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    problem = _problem(path, marker)
    if problem is None:
        return marker
    earlier = [p for step, p in complete_checkpoints(path.parent) if step < marker.get("step", 0)]
    good = next((p for p in reversed(earlier) if _problem(p) is None), None)
    raise CheckpointDamagedError(
        f"checkpoint {path}: {problem}. " + (f"The last good checkpoint is {good}: resume with --resume {good}"
                                             if good is not None else "No earlier checkpoint verifies."))


def _problem(path: Path, marker: dict | None = None) -> str | None:
    """What is wrong with the checkpoint at ``path`` (the first damaged, missing or added file), or None."""
    if marker is None:
        try:
            marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return f"{MARKER} cannot be read ({err})"
    recorded = marker.get("files")
    if recorded is None:
        return (f"{MARKER} lists no checksums: it was written by an older fairdiff, whose job state was pickled; "
                "it is not loaded")
    found = set(_state_files(path))
    for name in sorted(set(recorded) | found):
        if name not in found:
            return f"{name} is missing"
        if name not in recorded:
            return f"{name} was added after the checkpoint was saved"
        if _sha256(path / name) != recorded[name]:
            return f"{name} is damaged (its SHA-256 differs from the one recorded at saving)"
    return None


def save_checkpoint(accelerator, output_dir: str | Path, step: int, *, total_limit: int | None = None,
                    metadata: dict | None = None, states: Mapping[str, Any] | None = None) -> Path:
    """Save the full training state as ``output_dir/checkpoint-{step}``, atomically; keep the newest ``total_limit``.

    ``states``: the job's own stateful objects by name (:func:`save_states`). Every process must call it (each
    saves its own RNG state); the main process writes ``states``, the checksums, finalises and rotates.
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
        save_states(tmp, states or {})
        atomic_write_text(tmp / MARKER, json.dumps({"step": step, **(metadata or {}), "files": _files(tmp)},
                                                   indent=2))
        if final.exists():  # renamed away first: no moment shows a marked checkpoint-N with missing files
            old = atomic_replace_folder(final, root / f".checkpoint-{step}.old")
            atomic_replace_folder(tmp, final)
            shutil.rmtree(old)
        else:
            atomic_replace_folder(tmp, final)
        if total_limit is not None and total_limit > 0:
            for _, old in complete_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path, states: Mapping[str, Any] | None = None) -> dict:
    """Verify (:func:`verify_checkpoint`) and restore the state saved by :func:`save_checkpoint`; returns its
    marker metadata."""
    marker = verify_checkpoint(path)
    accelerator.load_state(str(path))
    load_states(path, states or {})
    return marker
