"""Where the committed testbed lies."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Folder name of the committed testbed (a StableDiffusionPipeline folder with its card, classifiers and prompts).
TESTBED_NAME = "digits-ink"


def testbed_path() -> Path:
    """The committed testbed folder inside the installed package (``scaleup/testbed/digits-ink``)."""
    return Path(str(resources.files("scaleup.testbed").joinpath(TESTBED_NAME)))
