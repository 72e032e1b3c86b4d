"""The processes of one ``accelerate launch``, on GPU machines and CPU-only ones alike.

accelerate joins the launched processes into one group only when it knows which device they share: on a GPU machine
it finds the GPUs; on a CPU-only machine it needs ``cpu=True``, which ``Accelerator`` reads from
``ACCELERATE_USE_CPU`` but ``PartialState`` does not. Without it, two processes started by
``accelerate launch --multi_gpu --num_processes 2`` (or ``torchrun``) on a machine without a GPU each believe they
are alone and both do all the work (issue 19). Every job of fairdiff makes its state here instead, so that the
processes a launcher started are the processes that split the work, or the job stops with one clear error.
"""

from __future__ import annotations

import os

import torch

__all__ = ["LaunchError", "launched_processes", "on_cpu", "process_state", "make_accelerator", "check_device"]


class LaunchError(RuntimeError):
    """The launcher started several processes that could not join one group."""


def launched_processes() -> int:
    """How many processes the launcher says it started (``WORLD_SIZE``; 1 when run directly)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(value))
    except ValueError:
        raise LaunchError(f"WORLD_SIZE={value!r} is not a whole number; launch with `accelerate launch` or "
                          "`torchrun`, which set it") from None


def on_cpu() -> bool:
    """Whether the launched processes share the CPU: asked for (``accelerate launch --cpu`` or
    ``ACCELERATE_USE_CPU``), or several processes on a machine without a GPU."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU") or (launched_processes() > 1 and not torch.cuda.is_available())


def _check_joined(num_processes: int) -> None:
    launched = launched_processes()
    if num_processes != launched:
        raise LaunchError(f"the launcher started {launched} processes but accelerate joined {num_processes}; each "
                          "would do all the work. Launch with `accelerate launch --num_processes N` on a machine "
                          "with N GPUs, or set ACCELERATE_USE_CPU=1 to split the work over CPU processes")


def process_state():
    """accelerate's ``PartialState`` for this launch (one group of every launched process)."""
    from accelerate import PartialState

    state = PartialState(cpu=on_cpu())
    _check_joined(state.num_processes)
    return state


def make_accelerator(**kwargs):
    """``accelerate.Accelerator(**kwargs)`` joined as :func:`process_state` is (``cpu`` set on CPU-only launches)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=kwargs.pop("cpu", False) or on_cpu(), **kwargs)
    _check_joined(accelerator.num_processes)
    return accelerator


def check_device(name: str, *, option: str = "--device") -> torch.device:
    """The torch device ``name`` names, checked to exist on this machine before any model loads (a missing GPU is
    one ``ValueError`` naming ``option``, not an ``AssertionError`` from deep inside torch)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option}: {name!r} is not a device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{option} {name}: this machine has no CUDA GPU (torch {torch.__version__}"
                             f"{'' if torch.version.cuda else ', a CPU-only build'}); use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{option} {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} {name}: MPS is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{option} {name}: fairdiff runs on cpu, cuda or mps; got {device.type!r}")
    return device
