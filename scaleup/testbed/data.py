"""The testbed's data: scikit-learn's bundled handwritten digits, upsampled to 16 x 16 and drawn in red or blue ink.

Every digit has its own probability of red ink (:data:`P_RED`): most lean red (0.6-0.9, as most occupations lean
male in real Stable Diffusion, seed 000 [0124]), two lean blue, so a shared correction exists and so does a
prompt-dependent one. The ink is drawn afresh for every training example, so the model learns the probability, not
which image was red. Captions follow the prompt design of seed 000 [0134] (training templates, a held-out template
that is never trained on) with three additions a text-to-image model needs:

- 25 % of captions name the ink ("... in red ink"), the explicit-attribute prompts of PopAlign's identity-augmented
  generation (seed 001, Sec. 4.1);
- 30 % describe the digit with words other digits share ("a round even digit"), so the text side has structure that
  reaches beyond one digit word;
- 10 % are empty, for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
INKS = ("red", "blue")
#: RGB of the two inks on a white page; a blend (1 - m) * red + m * blue is what a finetune that "balances" by
#: mixing would draw (purple), which the evaluation counts as not confident.
INK_RGB = {"red": (0.86, 0.12, 0.10), "blue": (0.10, 0.22, 0.86)}
#: P(red ink) per digit in the training data.
P_RED = {"zero": 0.80, "one": 0.90, "two": 0.70, "three": 0.85, "four": 0.75, "five": 0.65, "six": 0.30,
         "seven": 0.90, "eight": 0.60, "nine": 0.25}
#: Words other digits share: parity and shape (loops / straight strokes / curves).
PARITY = {d: ("even" if i % 2 == 0 else "odd") for i, d in enumerate(DIGIT_WORDS)}
SHAPE = {"zero": "round", "one": "straight", "two": "curly", "three": "curly", "four": "straight", "five": "curly",
         "six": "round", "seven": "straight", "eight": "round", "nine": "round"}

TRAINING_TEMPLATES = ("a handwritten {}", "a photo of a handwritten {}")
#: Never in a training caption: measures generalisation to an unseen template (seed 000 Table 2's test prompts).
HELDOUT_TEMPLATE = "a drawing of the digit {}"
#: Digits a debiasing finetune does not train on (the analogue of seed 000's test occupations).
HELDOUT_DIGITS = ("four", "seven")
IMAGE_SIZE = 16
CONTEXT_LENGTH = 16
SHARE_INK_NAMED, SHARE_DESCRIBED, SHARE_EMPTY = 0.25, 0.30, 0.10


def training_prompts() -> list[str]:
    """Prompts a debiasing finetune trains on: the first training template, held-out digits excluded."""
    return [TRAINING_TEMPLATES[0].format(d) for d in DIGIT_WORDS if d not in HELDOUT_DIGITS]


def heldout_digit_prompts() -> list[str]:
    """The held-out digits under the training template."""
    return [TRAINING_TEMPLATES[0].format(d) for d in HELDOUT_DIGITS]


def heldout_template_prompts() -> list[str]:
    """Every digit under the template no caption ever used."""
    return [HELDOUT_TEMPLATE.format(d) for d in DIGIT_WORDS]


def ink_prompt(prompt: str, ink: str) -> str:
    """``prompt`` naming the ink: "a handwritten seven in blue ink"."""
    if ink not in INKS:
        raise ValueError(f"ink must be one of {INKS}; got {ink!r}")
    return f"{prompt} in {ink} ink"


def vocabulary() -> list[str]:
    """Every word any caption, prompt or template of the testbed uses (the word-level tokenizer's corpus)."""
    texts = [t.format(d) for t in TRAINING_TEMPLATES + (HELDOUT_TEMPLATE,) for d in DIGIT_WORDS]
    texts += [f"a {s} {p} digit in {ink} ink" for s in set(SHAPE.values()) for p in ("even", "odd") for ink in INKS]
    words = sorted({w.strip(",") for t in texts for w in t.split()})
    return words


@dataclass(frozen=True)
class Digits:
    """Ink intensities in [0, 1] of shape (N, 16, 16) and the digit index of each image."""

    ink: np.ndarray
    digits: np.ndarray


def load_digits_16() -> Digits:
    """The 1797 bundled 8 x 8 digits, bilinearly upsampled to 16 x 16 (no download: they ship with scikit-learn)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    small = torch.from_numpy(data.images / 16.0).float()[:, None]
    big = torch.nn.functional.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                          align_corners=False)[:, 0]
    return Digits(big.clamp(0, 1).numpy(), data.target.astype(np.int64))


def render(ink: torch.Tensor, blue_share: torch.Tensor, *, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [0, 1], (N, 3, 16, 16): ink intensity v over a white page in the colour (1 - m) red + m blue.

    ``blue_share`` m is (N,), 0 for red ink and 1 for blue; ``jitter`` (N, 3) is added to the ink's RGB.
    """
    red, blue = (torch.tensor(INK_RGB[c], dtype=ink.dtype) for c in INKS)
    colour = (1 - blue_share)[:, None] * red + blue_share[:, None] * blue
    if jitter is not None:
        colour = (colour + jitter).clamp(0, 1)
    v = ink[:, None]
    return 1 - v * (1 - colour[:, :, None, None])


def ink_intensity(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`render` for shape: 1 - the smallest channel is the ink's weight on any ink (N, 16, 16)."""
    return (1 - images.amin(dim=1)).clamp(0, 1)


def caption(digit: str, ink: str, generator: np.random.Generator) -> str:
    """One training caption of an image of ``digit`` drawn in ``ink`` (see the module docstring for the shares)."""
    u = generator.random()
    if u < SHARE_EMPTY:
        return ""
    text = TRAINING_TEMPLATES[int(generator.integers(len(TRAINING_TEMPLATES)))].format(digit)
    if generator.random() < SHARE_DESCRIBED:
        text += f", a {SHAPE[digit]} {PARITY[digit]} digit"
    if generator.random() < SHARE_INK_NAMED:
        text = ink_prompt(text, ink)
    return text
