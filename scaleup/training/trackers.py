"""``--report-to``: accelerate's experiment trackers, named as diffusers' training scripts name them.

``none`` (the JSONL log alone, which holds every number), ``tensorboard``, ``wandb`` or ``all`` (every tracker
accelerate finds installed). The choice is checked before anything loads, and a tracker whose package is missing is
one clear error. The shared iteration loop (:func:`scaleup.training.loop.run_training`) logs each iteration's numbers
to the trackers started here, so both jobs report the same way.
"""

from __future__ import annotations

import importlib.util

REPORT_TO = ("none", "tensorboard", "wandb", "all")
#: The packages each tracker needs (accelerate's TensorBoard tracker takes tensorboard or tensorboardX).
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_report_to(value: str, *, option: str = "--report-to") -> None:
    """Refuse an unknown tracker, or one whose package is not installed, naming what to do."""
    if value not in REPORT_TO:
        raise ValueError(f"{option}: unknown tracker {value!r}; expected one of {', '.join(REPORT_TO)}")
    needed = _PACKAGES.get(value)
    if needed and not any(importlib.util.find_spec(name) is not None for name in needed):
        raise ValueError(f"{option} {value}: the {needed[0]} package is not installed; pip install {needed[0]}, or "
                         f"pass {option} none (log.jsonl in the output folder has every number)")


def log_with(value: str):
    """What ``Accelerator(log_with=...)`` takes for ``value``: None for ``none``."""
    return None if value == "none" else value


def start_trackers(accelerator, value: str, project: str, config: dict) -> bool:
    """Start the trackers of ``value`` (main process keeps the run's settings as their config); True if any."""
    if value == "none":
        return False
    flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
    accelerator.init_trackers(project, config=flat)
    return True
