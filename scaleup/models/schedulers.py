"""Diffusers schedulers by name, with the noise schedule of the pipeline they replace.

``"dpm++2m"`` is DPM-Solver++(2M), the sampler of seed 000 ([0120]: about 20 steps, CFG 7.5) and of the official
aDFT code (diffusers ``DPMSolverMultistepScheduler``, whose defaults are exactly dpmsolver++ of order 2).
"""

from __future__ import annotations

SCHEDULERS: dict[str, tuple[str, dict]] = {
    # DPM-Solver++(2M): seed 000's sampler ([0120], ~20 steps) and the aDFT code's DPMSolverMultistepScheduler.
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
}


def make_scheduler(name: str, config: dict):
    """A diffusers scheduler named in :data:`SCHEDULERS`, built from another scheduler's ``config`` (its betas)."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}; got {name!r}")
    cls_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(config, **overrides)


def set_scheduler(pipe, name: str):
    """Replace ``pipe.scheduler`` by the scheduler ``name`` with the same noise schedule; returns ``pipe``."""
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    return pipe
