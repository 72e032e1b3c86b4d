"""The errors :mod:`scaleup` raises for what is missing or broken on this machine, not for bad arguments.

They live apart from the model code so that the command line (``python -m experiments``) can catch them, and print
their one-line message, without importing torch, diffusers or transformers.
"""

from __future__ import annotations


class ModelUnavailableError(RuntimeError):
    """A model's weights are not on this machine (or its library is not installed); the message says how to fix it."""


class CheckpointError(RuntimeError):
    """A training checkpoint cannot be read (empty, truncated, garbled, or made for another model).

    The message names the file and the two ways on: delete it, or restart the training.
    """
