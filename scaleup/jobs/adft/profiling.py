"""Per-component wall time and peak memory of an aDFT iteration (what ``benchmarks/adft_step.py`` prints).

The step wraps each of its parts in ``timer("name")``; by default that is a no-op. A :class:`ComponentTimer`
synchronises the GPU around each part (so the time is the part's, not the queue's) and records the peak memory
allocated during it: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU, where torch keeps no such counter,
the process's peak resident set size so far (``getrusage``), which only grows, so there it says which part first
reached the peak.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections import defaultdict

import torch


class NoTimer:
    """The default: every section is a no-op."""

    def __call__(self, name: str):
        return contextlib.nullcontext()


class ComponentTimer:
    """Accumulates seconds and peak memory (bytes) per named section over any number of calls."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_bytes: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._active: list[str] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self._active:  # a nested section counts towards the outer one only
            yield
            return
        self._active.append(name)
        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start
            self.peak_bytes[name] = max(self.peak_bytes[name], self._peak())
            self.calls[name] += 1
            self._active.pop()

    def reset(self) -> None:
        self.seconds.clear()
        self.peak_bytes.clear()
        self.calls.clear()
