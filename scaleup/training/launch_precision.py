"""The mixed precision ``accelerate launch`` asks for, against the job's own setting.

Both jobs choose their precision themselves (``--mixed-precision``: the frozen models are cast, the trained
parameters stay float32, as diffusers' training scripts do), so ``accelerate launch --mixed_precision bf16`` alone
would change nothing while the user believes it did (issue 19). A launch setting that differs from the job's is
therefore one clear refusal, before anything loads; the same setting in both places is accepted.
"""

from __future__ import annotations

import os

#: What ``accelerate launch --mixed_precision X`` (or its config file) hands every process.
LAUNCH_VARIABLE = "ACCELERATE_MIXED_PRECISION"


def check_launch_precision(job_value: str, *, option: str = "--mixed-precision") -> None:
    """Raise ``ValueError`` when accelerate's launch precision is set, is not "no", and differs from ``job_value``."""
    launched = os.environ.get(LAUNCH_VARIABLE, "no").strip().lower() or "no"
    if launched not in ("no", job_value):
        raise ValueError(
            f"accelerate launch asks for mixed precision {launched!r} ({LAUNCH_VARIABLE}), but the job runs at "
            f"{option} {job_value!r}: the job sets its precision itself, so pass {option} {launched} to the job (or "
            f"launch with --mixed_precision no); nothing was loaded")
