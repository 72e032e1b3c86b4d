"""A labelled folder of the testbed's attribute, from its real data: scikit-learn's digits drawn in red or blue ink
(``OUT/red/*.png``, ``OUT/blue/*.png``, the ``folder`` layout of :mod:`scaleup.perception.labelled_faces`).

It plays the part FairFace or CelebA play for a face attribute: ``scaleup.evaluate --labelled-folder OUT`` measures
the evaluation classifier on it and corrects the bias for the classifier's confusion (CLEAM). The images are drawn
from the half of the digits the evaluation classifier was not fitted on, with the same colour jitter as its training
data, so its accuracy here is an honest estimate on real (not generated) images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scaleup.atomic_write import atomic_write
from scaleup.testbed import data

__all__ = ["write_labelled_folder"]


def write_labelled_folder(out: str | Path, *, n_per_class: int = 200, seed: int = 0) -> Path:
    """Write ``n_per_class`` images of each ink under ``out`` (class folders red/ and blue/); returns ``out``."""
    from PIL import Image

    from scaleup.testbed.classifiers import _split

    out = Path(out)
    digits = data.load_digits_16()
    not_fitted, _ = _split(len(digits.digits), seed)  # the training classifier's half: unseen by the evaluation one
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20]))
    for blue_share, ink in enumerate(data.INKS):
        chosen = rng.choice(not_fitted, size=n_per_class, replace=n_per_class > len(not_fitted))
        jitter = torch.from_numpy(rng.normal(0, 0.03, (n_per_class, 3)).astype(np.float32))
        images = data.render(torch.from_numpy(digits.ink[chosen]), torch.full((n_per_class,), float(blue_share)),
                             jitter=jitter)
        pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for i, array in enumerate(pixels):
            atomic_write(out / ink / f"{ink}-{i:04d}.png", lambda f, a=array: Image.fromarray(a).save(f, format="PNG"))
    return out
