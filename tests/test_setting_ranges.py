"""Ranges declared on a job's settings (scaleup.setting_ranges): checked together, shown in --help."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pytest

from scaleup.job_config import parse_config
from scaleup.setting_ranges import Range, check_ranges, setting


@dataclass(frozen=True)
class _Job:
    rank: int = setting(4, Range.integer(1), help="LoRA rank")
    rate: float = setting(1e-4, Range.number(0, 1, low_open=True, high_open=True, note="the paper: 1e-4"))
    decay: Optional[float] = setting(None, Range.number(0))
    steps: tuple[int, ...] = setting((19, 23), Range.integer(1))
    seed: int = setting(0, Range.integer(0, 2 ** 63, high_open=True))


@pytest.mark.parametrize("range_, text", [
    (Range.integer(1), "an integer >= 1"),
    (Range.integer(0, 2 ** 63, high_open=True), "an integer in [0, 9223372036854775808)"),
    (Range.number(0, low_open=True), "a finite number > 0"),
    (Range.number(0, 1, high_open=True), "a number in [0, 1)"),
    (Range.number(high=2.5), "a finite number <= 2.5"),
    (Range.number(), "a finite number"),
])
def test_ranges_describe_themselves(range_, text):
    assert range_.describe() == text


@pytest.mark.parametrize("range_, inside, outside", [
    (Range.integer(1), [1, 7, 10 ** 30], [0, -3, 1.0, 2.5, True, "3", None]),
    (Range.number(0, 1, low_open=True, high_open=True), [1e-300, 0.5, 1 - 1e-16],
     [0, 1, 1e300, math.inf, math.nan, -0.0, False]),
    (Range.number(0), [0, 0.0, 3, 1e300], [-1e-300, -math.inf, math.nan, math.inf]),
    (Range.number(-1, low_open=True), [-0.999, 0], [-1, -2]),
])
def test_ranges_contain_exactly_their_interval(range_, inside, outside):
    assert all(range_.contains(v) for v in inside)
    assert not any(range_.contains(v) for v in outside)


def test_check_ranges_names_the_first_setting_out_of_range():
    check_ranges(_Job())
    check_ranges(_Job(decay=None))  # an optional setting left to its later default
    with pytest.raises(ValueError, match=r"^rank must be an integer >= 1; got 0$"):
        check_ranges(_Job(rank=0))
    with pytest.raises(ValueError, match=r"^rate must be a number in \(0, 1\) \(the paper: 1e-4\); got inf$"):
        check_ranges(_Job(rate=math.inf))
    with pytest.raises(ValueError, match=r"^steps\[1\] must be an integer >= 1; got 0$"):
        check_ranges(_Job(steps=(3, 0)))
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 9223372036854775808\); got -1$"):
        check_ranges(_Job(seed=-1))


def test_help_shows_each_declared_range(capsys):
    with pytest.raises(SystemExit):
        parse_config(_Job, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "LoRA rank; an integer >= 1 (default: 4)" in text and "a number in (0, 1) (default: 0.0001)" in text


def test_the_jobs_declare_their_numeric_settings():
    """Every int / float setting of the aDFT and PopAlign training configs has a range, except the few whose
    check relates it to other settings (listed)."""
    import dataclasses

    from scaleup.jobs.adft.config import AdftConfig
    from scaleup.jobs.popalign.config import TrainConfig

    related = {"threshold"}  # theory.validation.check_threshold, shared with the toy code
    for cls in (AdftConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            numeric = any(t in str(f.type) for t in ("int", "float")) and "str" not in str(f.type) \
                and "dict" not in str(f.type) and "bool" not in str(f.type)
            if numeric and f.name not in related:
                assert f.metadata.get("range") is not None, f"{cls.__name__}.{f.name} declares no range"
