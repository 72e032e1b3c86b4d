"""Sample grids of an evaluation: each image with its detected face box and predicted class, no-face images framed.

torchvision's ``make_grid`` would tile the images, but torchvision cannot be installed beside the CPU torch of the
core install, and the tiling is a reshape; the annotation is PIL's ``ImageDraw``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


def tile(images: torch.Tensor, n_cols: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) uint8 array, row-major, white padding."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (B, 3, H, W) with B >= 1; got {tuple(images.shape)}")
    b, _, h, w = images.shape
    cols = n_cols or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i in range(b):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = pixels[i]
    return canvas


def save_grid(path: str | Path, images: torch.Tensor, boxes: Sequence[Sequence[float] | None],
              labels: Sequence[str], n_cols: int | None = None, pad: int = 2) -> Path:
    """Write the annotated grid as PNG: green face box and class name, a red frame where no face was found."""
    b, _, h, w = images.shape
    if len(boxes) != b or len(labels) != b:
        raise ValueError(f"need one box and one label per image: {b} images, {len(boxes)} boxes, {len(labels)} labels")
    cols = n_cols or math.ceil(math.sqrt(b))
    canvas = Image.fromarray(tile(images, cols, pad))
    draw = ImageDraw.Draw(canvas)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        if box is None:
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(220, 30, 30), width=max(1, w // 64))
            continue
        x0, y0, x1, y1 = box
        draw.rectangle([x + x0, y + y0, x + x1, y + y1], outline=(30, 200, 30), width=max(1, w // 128))
        draw.text((x + 2, y + 2), label, fill=(255, 255, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
