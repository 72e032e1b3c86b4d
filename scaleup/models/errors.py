"""The one error a missing model raises, naming the id, where a local copy can be given, and the layout expected."""

from __future__ import annotations

from scaleup.errors import ModelUnavailableError  # noqa: F401  (one class for every missing model)


class ModelNotFoundError(ModelUnavailableError, FileNotFoundError):
    """A model (pipeline, CLIP, DINOv2, LoRA or soft-prompt checkpoint) was not found locally.

    Both a :class:`ModelUnavailableError` (so code that already catches that keeps working) and a
    :class:`FileNotFoundError` (so plain ``except OSError`` also sees it). Raised before any weight is read, with a
    message naming the id or path tried, the argument and environment variable that take a local folder, and the
    folder layout expected there.
    """
