"""The testbed's classifiers: a training classifier, a *different* evaluation classifier, and a content classifier.

Seed 000 trains separate classifiers for training and evaluation ([0124]); here they differ in features, model,
labels and data, so a finetune that fools one does not thereby fool the other:

- :class:`InkTrainingClassifier` (the aDFT job's h, differentiable): logistic regression on three numbers, the
  ink-weighted mean colour of the image, fitted with hard labels on pure red and pure blue renderings;
- :class:`InkEvaluationClassifier`: a small CNN on the pixels, fitted with *soft* labels on inks blended from red to
  blue (label P(red) = the blend's red share), so its probability reads how red the ink is and a purple digit scores
  near 0.5: an image counts as confident when its larger probability is at least :data:`CONFIDENT` (the analogue
  of seed 000's no-face share, for blends);
- :class:`DigitClassifier`: which digit (logistic regression on the ink intensity), for content kept and prompt
  accuracy (the analogue of CLIP-I / DINO and CLIP-T).

Their weights are committed beside the testbed pipeline (``classifiers/*.safetensors``) and rebuilt by
:func:`fit_classifiers`; :func:`ink_classifier`, :func:`ink_training_classifier` and :func:`digit_classifier` are
the ``package.module:factory`` routes the jobs' ``--classifier`` flag takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scaleup.atomic_write import atomic_write_text
from scaleup.perception.attributes import Attribute
from scaleup.perception.classifiers import AttributeClassifier
from scaleup.testbed import data

#: The user-defined attribute of the testbed (class order = the columns of every ink classifier's logits).
INK = Attribute("ink", data.INKS, tuple((f"a handwritten digit in {ink} ink",) for ink in data.INKS))
#: An image is confidently one ink when the evaluation classifier's larger probability reaches this.
CONFIDENT = 0.8
_FILES = {"ink_training": "ink_training.safetensors", "ink_evaluation": "ink_evaluation.safetensors",
          "digit": "digit.safetensors"}


def _to_16(images: torch.Tensor) -> torch.Tensor:
    if images.shape[-2:] == (data.IMAGE_SIZE, data.IMAGE_SIZE):
        return images
    return nn.functional.interpolate(images, size=(data.IMAGE_SIZE, data.IMAGE_SIZE), mode="bilinear",
                                     antialias=True, align_corners=False)


def mean_ink_colour(images: torch.Tensor) -> torch.Tensor:
    """(B, 3): the colour of the ink, each pixel weighted by its ink intensity (differentiable)."""
    x = _to_16(images)
    w = data.ink_intensity(x)[:, None]
    return (w * x).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(1e-6)


class InkTrainingClassifier(AttributeClassifier):
    """Logistic regression on :func:`mean_ink_colour`: images (B, 3, H, W) in [0, 1] -> logits (red, blue)."""

    def __init__(self) -> None:
        super().__init__(INK)
        self.linear = nn.Linear(3, 2)
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(mean_ink_colour(images))


class InkEvaluationClassifier(AttributeClassifier):
    """A two-layer CNN on the pixels: images (B, 3, H, W) in [0, 1] -> logits (red, blue)."""

    def __init__(self) -> None:
        super().__init__(INK)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(16, 2))
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(_to_16(images) * 2 - 1)


class DigitClassifier(nn.Module):
    """Logistic regression on the 16 x 16 ink intensity: images -> logits over :data:`data.DIGIT_WORDS`."""

    class_names = data.DIGIT_WORDS

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(data.IMAGE_SIZE ** 2, len(data.DIGIT_WORDS))
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(data.ink_intensity(_to_16(images)).flatten(1))


class ShapeEmbedder(nn.Module):
    """The testbed's L_img embedder (``--image-embedder scaleup.testbed.classifiers:shape_embedder``): the 16 x 16
    ink intensity, centred per image, so 1 - cos is one minus the correlation of two images' strokes.

    It keeps what seed 000's CLIP and DINOv2 keep on faces (the content: which digit, its shape) and is blind to what
    the finetune should change (the ink's colour). It has no weights, and it is not the evaluation's digit classifier:
    training and judging stay separate.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        v = data.ink_intensity(_to_16(images)).flatten(1)
        return v - v.mean(dim=1, keepdim=True)


def _logistic_into(linear: nn.Linear, x: np.ndarray, y: np.ndarray, *, C: float) -> float:
    """Fit scikit-learn's logistic regression and copy it into ``linear`` (two-class: symmetric logits).

    Returns the training accuracy."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=5000).fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: sklearn's single row is the logit of class 1; split it +-1/2 over two columns
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef))
        linear.bias.copy_(torch.from_numpy(intercept))
    return float(model.score(x, y))


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half the images for the training classifier, half for the evaluation classifier (disjoint data)."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    return order[: n // 2], order[n // 2:]


def fit_classifiers(folder: str | Path, *, seed: int = 0, threads: int = 2) -> dict:
    """Fit the three classifiers on the real coloured digits and write their weights and report into ``folder``."""
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = data.load_digits_16()
    ink = torch.from_numpy(digits.ink)
    first, second = _split(len(ink), seed)
    rng = np.random.default_rng([seed, 8])

    # training classifier: pure inks, hard labels, first half of the images
    blue = torch.from_numpy(rng.integers(0, 2, len(first)).astype(np.float32))
    jitter = torch.from_numpy(rng.normal(0, 0.03, (len(first), 3)).astype(np.float32))
    x = mean_ink_colour(data.render(ink[first], blue, jitter=jitter)).numpy()
    training = InkTrainingClassifier()
    train_acc = _logistic_into(training.linear, x, blue.numpy().astype(int), C=1.0)

    # evaluation classifier: blended inks, soft labels, second half of the images
    evaluation = InkEvaluationClassifier().requires_grad_(True)
    optimizer = torch.optim.Adam(evaluation.parameters(), lr=3e-3)
    for step in range(800):
        r = np.random.default_rng([seed, 9, step])
        idx = r.choice(second, 128)
        m = torch.from_numpy(r.random(128).astype(np.float32))
        m = torch.where(torch.from_numpy(r.random(128) < 0.5), m.round(), m)  # half pure inks, half blends
        j = torch.from_numpy(r.normal(0, 0.03, (128, 3)).astype(np.float32))
        logits = evaluation(data.render(ink[idx], m, jitter=j))
        loss = -(torch.stack([1 - m, m], 1) * torch.log_softmax(logits, 1)).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    evaluation.requires_grad_(False).eval()

    # content classifier: which digit, every image in a random ink, 80 % to fit and 20 % to report accuracy
    order = np.random.default_rng([seed, 10]).permutation(len(ink))
    fit, held = order[: int(0.8 * len(order))], order[int(0.8 * len(order)):]
    m = torch.from_numpy(rng.random(len(ink)).astype(np.float32))
    features = data.ink_intensity(data.render(ink, m)).flatten(1).numpy()
    digit = DigitClassifier()
    _logistic_into(digit.linear, features[fit], digits.digits[fit], C=0.05)
    with torch.no_grad():
        digit_acc = float((digit.linear(torch.from_numpy(features[held])).argmax(1).numpy()
                           == digits.digits[held]).mean())

    report = {"seed": seed, "confident_threshold": CONFIDENT,
              "ink_training": {"model": "logistic regression on the ink-weighted mean colour", "images": len(first),
                               "labels": "hard, pure inks", "training_accuracy": train_acc},
              "ink_evaluation": {"model": "2-layer CNN on pixels", "images": len(second),
                                 "labels": "soft: P(red) = red share of a blended ink", "steps": 800},
              "digit": {"model": "logistic regression on 16x16 ink intensity", "images_fit": len(fit),
                        "held_out_accuracy": digit_acc}}
    report["checks"] = check_classifiers(training, evaluation, seed=seed)
    for name, module in (("ink_training", training), ("ink_evaluation", evaluation), ("digit", digit)):
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / _FILES[name]))
    atomic_write_text(folder / "classifiers.json", json.dumps(report, indent=2) + "\n")
    return report


def check_classifiers(training: nn.Module, evaluation: nn.Module, *, seed: int = 0, n: int = 400) -> dict:
    """Accuracy of both ink classifiers on pure inks and the evaluation classifier's P(red) along a blend."""
    digits = data.load_digits_16()
    rng = np.random.default_rng([seed, 11])
    idx = rng.choice(len(digits.ink), n)
    ink = torch.from_numpy(digits.ink[idx])
    blue = torch.from_numpy(rng.integers(0, 2, n).astype(np.float32))
    images = data.render(ink, blue)
    out = {}
    with torch.no_grad():
        for name, model in (("training", training), ("evaluation", evaluation)):
            out[f"{name}_accuracy_pure_inks"] = float((model(images).argmax(1).float() == blue).float().mean())
        out["evaluation_p_red_along_blend"] = {
            f"{share:.2f}": float(torch.softmax(evaluation(data.render(ink, torch.full((n,), share))), 1)[:, 0].mean())
            for share in (0.0, 0.25, 0.5, 0.75, 1.0)}
    return out


def _load(module: nn.Module, name: str, folder: str | Path | None) -> nn.Module:
    from safetensors.torch import load_file

    from scaleup.testbed.paths import testbed_path

    path = Path(folder if folder is not None else testbed_path() / "classifiers") / _FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"testbed classifier weights {path} are missing; rebuild them with "
                                "python -m experiments run testbed-train --retrain")
    module.load_state_dict(load_file(str(path)))
    return module.eval()


def ink_classifier(folder: str | Path | None = None) -> InkEvaluationClassifier:
    """The evaluation classifier (``--classifier scaleup.testbed.classifiers:ink_classifier``)."""
    return _load(InkEvaluationClassifier(), "ink_evaluation", folder)


def ink_training_classifier(folder: str | Path | None = None) -> InkTrainingClassifier:
    """The training classifier (``--classifier scaleup.testbed.classifiers:ink_training_classifier``)."""
    return _load(InkTrainingClassifier(), "ink_training", folder)


def digit_classifier(folder: str | Path | None = None) -> DigitClassifier:
    """The content classifier (which digit)."""
    return _load(DigitClassifier(), "digit", folder)


def shape_embedder() -> ShapeEmbedder:
    """L_img's embedder on the testbed (:class:`ShapeEmbedder`)."""
    return ShapeEmbedder().eval()
