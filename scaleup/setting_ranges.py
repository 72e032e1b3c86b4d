"""Numeric ranges declared on a job's settings, checked together before anything loads.

A job's dataclass declares each numeric setting's interval beside its default, as EDM's training script declares
``click.IntRange`` / ``click.FloatRange`` on its options::

    lora_rank: int = setting(50, Range.integer(1), help="rank of the LoRA")

:func:`check_ranges` checks every declared field of a config at once, so a job's planning function keeps only the
checks that relate several settings (N against the classes, the batch against the processes), and ``--help`` shows
each range (:mod:`scaleup.job_config` appends :meth:`Range.describe`). ``None`` passes for an optional setting
(its default is resolved later, from a preset); the elements of a tuple setting are checked one by one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Range", "setting", "check_ranges", "range_of"]


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


@dataclass(frozen=True)
class Range:
    """The interval ``low .. high`` (each end open or closed, either absent) of a finite number or an integer."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    """Integers only (``bool`` is refused, though Python counts it as one)."""
    note: str = ""
    """Said after the range in the error, e.g. where the paper's value lies."""

    @classmethod
    def integer(cls, low: int | None = None, high: int | None = None, *, high_open: bool = False,
                note: str = "") -> "Range":
        return cls(low, high, high_open=high_open, whole=True, note=note)

    @classmethod
    def number(cls, low: float | None = None, high: float | None = None, *, low_open: bool = False,
               high_open: bool = False, note: str = "") -> "Range":
        return cls(low, high, low_open=low_open, high_open=high_open, note=note)

    def describe(self) -> str:
        """E.g. ``an integer >= 1``, ``a number in (0, 1)``, ``a finite number > 0``."""
        if self.low is not None and self.high is not None:
            return (f"{'an integer' if self.whole else 'a number'} in {'(' if self.low_open else '['}"
                    f"{_number(self.low)}, {_number(self.high)}{')' if self.high_open else ']'}")
        kind = "an integer" if self.whole else "a finite number"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_number(self.high)}"
        return kind

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.whole:
            if not isinstance(value, int):
                return False
        elif not (isinstance(value, (int, float)) and math.isfinite(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def check(self, name: str, value: Any) -> None:
        """Raise ``ValueError("name must be <range>[; note]; got value")`` unless ``value`` lies in the range."""
        if not self.contains(value):
            note = f" ({self.note})" if self.note else ""
            raise ValueError(f"{name} must be {self.describe()}{note}; got {value!r}")


def setting(default: Any = dataclasses.MISSING, range: Range | None = None, *, help: str | None = None,
            **metadata: Any) -> Any:
    """A dataclass field with its default, its :class:`Range` and its ``--help`` text (other metadata, e.g.
    ``aliases``, passes through)."""
    if range is not None:
        metadata["range"] = range
    if help is not None:
        metadata["help"] = help
    return dataclasses.field(default=default, metadata=metadata)


def range_of(field: dataclasses.Field) -> Range | None:
    """The :class:`Range` declared on ``field``, if any."""
    return field.metadata.get("range")


def check_ranges(config: Any) -> None:
    """Check every field of the dataclass ``config`` that declares a :class:`Range`; the first value outside its
    range raises one ``ValueError`` naming the setting, the range and the value."""
    for field in dataclasses.fields(config):
        declared = range_of(field)
        value = getattr(config, field.name)
        if declared is None or value is None:
            continue
        if isinstance(value, (tuple, list)):
            for i, element in enumerate(value):
                declared.check(f"{field.name}[{i}]", element)
        else:
            declared.check(field.name, value)
