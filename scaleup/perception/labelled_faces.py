"""Readers of labelled face folders for training attribute probes (seed 000 [0121]: CelebA for gender, [0120] /
[0122] FairFace for race and gender x race, [0132] FairFace ages for young / old).

Layouts:

- ``fairface``: ``root/fairface_label_train.csv`` (columns ``file,age,gender,race,...``; ``file`` relative to
  root, e.g. ``train/1.jpg``); if ``root/fairface_label_val.csv`` exists it is the evaluation split.
- ``celeba``: ``root/list_attr_celeba.txt`` (line 1: count, line 2: the 40 attribute names, then
  ``<file> <+1/-1 x 40>``), images in ``root/img_align_celeba/``; if ``root/list_eval_partition.txt`` exists its
  partition 0 is the training split and 2 (test) the evaluation split. Files may also sit in ``root/Anno`` /
  ``root/Eval`` as in the official archive.
- ``folder``: ``root/<class name>/*.jpg|png`` with the attribute's class names (e.g. ``male/``, ``female/``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .attributes import Attribute, celeba_class_index, fairface_class_index, get_attribute

__all__ = ["LAYOUTS", "LabelledImages", "load_image_batch", "read_labelled_images"]

LAYOUTS = ("fairface", "celeba", "folder")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class LabelledImages:
    """Image paths with class indices of an attribute; ``is_eval[i]`` marks the dataset's own evaluation split
    (None when the layout has none, in which case a random fraction is held out)."""

    paths: list[Path]
    labels: np.ndarray
    is_eval: np.ndarray | None
    attribute: Attribute


def _first_existing(root: Path, names: list[str]) -> Path | None:
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def _read_fairface(root: Path, attr: Attribute, labels: Path | None) -> LabelledImages:
    train_csv = labels or _first_existing(root, ["fairface_label_train.csv"])
    if train_csv is None:
        raise ValueError(f"FairFace layout: no labels CSV in {root} (expected fairface_label_train.csv with columns "
                         "file,age,gender,race; or pass --labels)")
    sources = [(train_csv, False)]
    val_csv = root / "fairface_label_val.csv"
    if labels is None and val_csv.is_file():
        sources.append((val_csv, True))
    paths, ys, evals = [], [], []
    for path, is_eval in sources:
        with open(path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if "file" not in row:
                    raise ValueError(f"{path}: no 'file' column (columns: {sorted(row)})")
                try:
                    ys.append(fairface_class_index(row, attr))
                except ValueError as err:
                    raise ValueError(f"{path}:{line}: {err}") from None
                paths.append(root / row["file"])
                evals.append(is_eval)
    return LabelledImages(paths, np.asarray(ys, dtype=np.int64), np.asarray(evals) if len(sources) > 1 else None,
                          attr)


def _read_celeba(root: Path, attr: Attribute, labels: Path | None) -> LabelledImages:
    attr_file = labels or _first_existing(root, ["list_attr_celeba.txt", "Anno/list_attr_celeba.txt"])
    if attr_file is None:
        raise ValueError(f"CelebA layout: no list_attr_celeba.txt in {root} or {root / 'Anno'} (or pass --labels)")
    image_dir = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
    lines = attr_file.read_text(encoding="utf-8").splitlines()
    if len(lines) < 3:
        raise ValueError(f"{attr_file}: expected a count line, an attribute-name line and one line per image")
    names = lines[1].split()
    paths, ys = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{attr_file}:{number}: {len(parts) - 1} values for {len(names)} attributes")
        ys.append(celeba_class_index(dict(zip(names, (int(v) for v in parts[1:]))), attr))
        paths.append(image_dir / parts[0])
    is_eval = None
    partition_file = _first_existing(root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"])
    if partition_file is not None:
        partition = dict(line.split() for line in partition_file.read_text(encoding="utf-8").splitlines()
                         if line.strip())
        split = np.asarray([int(partition.get(p.name, -1)) for p in paths])
        keep = (split == 0) | (split == 2)  # train / test; the validation partition is left out
        paths = [p for p, k in zip(paths, keep) if k]
        ys = list(np.asarray(ys)[keep])
        is_eval = split[keep] == 2
    return LabelledImages(paths, np.asarray(ys, dtype=np.int64), is_eval, attr)


def _read_folders(root: Path, attr: Attribute) -> LabelledImages:
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    unknown = [d for d in subdirs if d not in attr.class_names]
    if unknown or not subdirs:
        raise ValueError(f"folder layout: {root} must hold one sub-folder per class of {attr.name!r} named "
                         f"{list(attr.class_names)}; found {subdirs}")
    paths, ys = [], []
    for k, name in enumerate(attr.class_names):
        if not (root / name).is_dir():
            continue
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                ys.append(k)
    return LabelledImages(paths, np.asarray(ys, dtype=np.int64), None, attr)


def read_labelled_images(root: str | Path, layout: Literal["fairface", "celeba", "folder"],
                         attribute: str | Attribute, *, labels: str | Path | None = None) -> LabelledImages:
    """Image paths and class indices of ``attribute`` from a dataset folder (see the module docstring).

    Raises
    ------
    ValueError
        Unknown layout, a missing folder or label file, a label value the attribute cannot use, no images.
    """
    attr = get_attribute(attribute)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data root {str(root)!r} is not a directory")
    labels = Path(labels) if labels is not None else None
    if labels is not None and not labels.is_file():
        raise ValueError(f"labels file {str(labels)!r} does not exist")
    data = (_read_fairface(root, attr, labels) if layout == "fairface" else
            _read_celeba(root, attr, labels) if layout == "celeba" else _read_folders(root, attr))
    if not data.paths:
        raise ValueError(f"no labelled images found under {root} ({layout} layout)")
    return data


#: The smallest side a labelled image may have: below it no face crop or classifier input means anything.
MIN_IMAGE_SIDE = 8
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _as_rgb(image):
    """8-bit RGB of ``image``, refusing what would train on nothing: an image smaller than
    :data:`MIN_IMAGE_SIDE` pixels a side, or one whose every pixel is transparent. PIL's ``convert("RGB")`` clips
    16-bit greyscale (0..65535) to 255, white; such images are scaled to 8 bits instead."""
    from PIL import Image

    if min(image.size) < MIN_IMAGE_SIDE:
        raise ValueError(f"it is {image.width}x{image.height} pixels; at least {MIN_IMAGE_SIDE} a side expected")
    if image.mode in _SIXTEEN_BIT:
        grey = np.asarray(image, dtype=np.float64) / 65535.0
        return Image.fromarray(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.max() == 0:
            raise ValueError("every pixel is fully transparent (alpha 0): there is no image to learn from")
    return image.convert("RGB")


def load_image_batch(paths: list[Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) float in [0, 1]: each image's shorter side resized to ``size`` and centre-cropped."""
    from PIL import Image

    out = torch.empty(len(paths), 3, size, size)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = _as_rgb(image)
                scale = size / min(image.size)
                w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
                image = image.resize((w, h), Image.BICUBIC)
                left, top = (w - size) // 2, (h - size) // 2
                image = image.crop((left, top, left + size, top + size))
                out[i] = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
    return out
