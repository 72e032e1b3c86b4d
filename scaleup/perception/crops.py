"""Differentiable face crops: gradients of a classifier on the crop reach the generated pixels (seed 000 [0108]).

The DAL acts on the face region d_face(x) of every generated image x ([0108]); for its gradient to reach the
diffusion model the crop must be differentiable in x (the box itself comes from a non-differentiable detector and
is a constant). A crop is a resampling of x on a grid: ``torch.nn.functional.affine_grid`` + ``grid_sample``,
bilinear, zero-padded outside the image (the official aDFT code pads with black too). Downscaling by more than the
output size first samples at the box's own resolution and then resizes with ``interpolate(antialias=True)``, so a
large face is not aliased; for an axis-aligned integer box this equals slicing the box and resizing it.

Coordinates are continuous pixel coordinates: pixel (row i, column j) covers [j, j + 1] x [i, i + 1], so the box
(x0, y0, x1, y1) = (2, 3, 10, 11) is the slice ``image[..., 3:11, 2:10]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["box_masks", "check_images", "crop_faces", "crop_frames", "images_to_uint8", "square_boxes"]


def check_images(images: torch.Tensor, *, name: str = "images") -> None:
    """Refuse anything but a float tensor (B, 3, H, W) with B >= 1 (values are expected in [0, 1]).

    Raises
    ------
    ValueError
        Naming ``name``, what it was and what is expected.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (B, 3, H, W) in [0, 1]; got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1 or min(images.shape[2:]) < 1:
        raise ValueError(f"{name} must have shape (B, 3, H, W) with B >= 1 (RGB); got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1]; got dtype {images.dtype}")


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """A detached (B, H, W, 3) uint8 RGB copy of float images in [0, 1], for the non-differentiable detectors."""
    check_images(images)
    out = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(out.permute(0, 2, 3, 1).cpu().numpy())


def _as_boxes(boxes: torch.Tensor | Sequence[Sequence[float]], batch: int | None = None, *,
              name: str = "boxes") -> torch.Tensor:
    try:
        b = boxes.detach().double() if isinstance(boxes, torch.Tensor) else torch.as_tensor(boxes, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a (B, 4) array of (x0, y0, x1, y1); got {type(boxes).__name__}") from err
    if b.ndim != 2 or b.shape[1] != 4 or (batch is not None and b.shape[0] != batch):
        expected = "B" if batch is None else str(batch)
        raise ValueError(f"{name} must have shape ({expected}, 4) as (x0, y0, x1, y1) per image; "
                         f"got {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError(f"{name} must be finite; an image without a face needs a placeholder box "
                         "(find_faces gives the whole image) and its mask entry False")
    if ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError(f"{name} must satisfy x1 > x0 and y1 > y0; got {b.tolist()}")
    return b.cpu()


def square_boxes(boxes: torch.Tensor | Sequence[Sequence[float]], expand: float) -> torch.Tensor:
    """Square boxes on the same centres, side (1 + ``expand``) x max(width, height).

    This is the official aDFT code's ``expand_bbox`` with target ratio 1 (it uses ``expand`` = 0.5 for insightface
    boxes and 1.1 for the tighter dlib boxes), without its rounding to integers: the crop is sampled, so fractional
    boxes are exact. Boxes may extend past the image; the crop pads there.

    Returns
    -------
    torch.Tensor
        (B, 4) float64.
    """
    if not (isinstance(expand, (int, float)) and math.isfinite(expand) and expand > -1):
        raise ValueError(f"expand must be a finite number > -1 (0 = no expansion); got {expand!r}")
    b = _as_boxes(boxes)
    side = (1 + expand) * torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


def crop_frames(images: torch.Tensor, frames: torch.Tensor, size: int, *, fill: float = 0.0,
                antialias: bool = True) -> torch.Tensor:
    """Resample a parallelogram of every image onto a ``size`` x ``size`` grid, differentiably in ``images``.

    Parameters
    ----------
    images : torch.Tensor
        (B, 3, H, W) float.
    frames : torch.Tensor
        (B, 3, 2): per image the origin o (the crop's top-left corner) and the edge vectors e_x, e_y, in continuous
        pixel coordinates (x, y); output point (u, v) in [0, 1]^2 samples the image at o + u e_x + v e_y. An
        axis-aligned box is o = (x0, y0), e_x = (x1 - x0, 0), e_y = (0, y1 - y0); a rotated one (a dlib face chip)
        has rotated edges.
    size : int
        Output side in pixels.
    fill : float
        Value outside the image.
    antialias : bool
        When a frame edge is longer than ``size`` pixels, sample at the longest edge's resolution and downscale
        with ``interpolate(..., antialias=True)`` instead of point-sampling (which aliases).

    Returns
    -------
    torch.Tensor
        (B, 3, size, size), same dtype as ``images``; its gradient w.r.t. ``images`` is the bilinear scatter.
    """
    check_images(images)
    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"size must be a positive int; got {size!r}")
    batch, _, height, width = images.shape
    f = torch.as_tensor(frames, dtype=torch.float64).cpu()
    if f.shape != (batch, 3, 2) or not torch.isfinite(f).all():
        raise ValueError(f"frames must be a finite ({batch}, 3, 2) tensor (origin, e_x, e_y); got {tuple(f.shape)}")
    origin, ex, ey = f[:, 0], f[:, 1], f[:, 2]
    longest = float(torch.maximum(ex.norm(dim=1), ey.norm(dim=1)).max())
    resolution = max(size, math.ceil(longest - 1e-6)) if antialias else size
    # affine_grid maps output coordinates in [-1, 1] (align_corners=False: pixel edges) to input coordinates in
    # [-1, 1]; continuous pixel x in [0, W] is 2x / W - 1 there, and output (u + 1) / 2 is the fraction along e_x.
    scale = torch.tensor([width, height], dtype=torch.float64)
    theta = torch.empty(batch, 2, 3, dtype=torch.float64)
    theta[:, :, 0] = ex / scale
    theta[:, :, 1] = ey / scale
    theta[:, :, 2] = (2 * origin + ex + ey) / scale - 1
    grid = F.affine_grid(theta.to(images.device, images.dtype), [batch, 3, resolution, resolution],
                         align_corners=False)
    shifted = images - fill if fill != 0 else images
    # grid_sample pads with zeros; sampling (x - fill) and adding fill back pads with `fill`, exactly and linearly
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if fill != 0:
        out = out + fill
    if resolution != size:
        out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out


def crop_faces(images: torch.Tensor, boxes: torch.Tensor | Sequence[Sequence[float]], size: int, *,
               fill: float = 0.0, antialias: bool = True) -> torch.Tensor:
    """Crop box b of image b and resize it to ``size`` x ``size``, differentiably (seed 000 [0108], d_face(x)).

    Parameters
    ----------
    images : torch.Tensor
        (B, 3, H, W) float in [0, 1].
    boxes : (B, 4) tensor or nested sequence
        (x0, y0, x1, y1) in continuous pixel coordinates; may be fractional and may extend past the image (padded
        with ``fill``; black by default, as the official aDFT code pads).
    size : int
        Output side (224 in the official aDFT code).

    Returns
    -------
    torch.Tensor
        (B, 3, size, size). For an integer box with antialiasing, equals
        ``interpolate(images[b, :, y0:y1, x0:x1], size, mode="bilinear", antialias=True)`` whenever the box's
        longest side is the largest in the batch and at least ``size``.
    """
    check_images(images)
    b = _as_boxes(boxes, images.shape[0])
    frames = torch.zeros(b.shape[0], 3, 2, dtype=torch.float64)
    frames[:, 0] = b[:, :2]
    frames[:, 1, 0] = b[:, 2] - b[:, 0]
    frames[:, 2, 1] = b[:, 3] - b[:, 1]
    return crop_frames(images, frames, size, fill=fill, antialias=antialias)


def box_masks(boxes: torch.Tensor | Sequence[Sequence[float]], height: int, width: int,
              found: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) float masks: the fraction of each pixel covered by box b (1 inside, 0 outside, fractional on a
    fractional edge), all zero where ``found`` is False.

    For the region-dependent weights of seed 000 [0109] (lambda_img,2 on the non-face region, lambda_img,3 on the
    face region of an image whose target class differs from its original's).
    """
    b = _as_boxes(boxes)
    xs = torch.arange(width, dtype=torch.float64)
    ys = torch.arange(height, dtype=torch.float64)
    # overlap of pixel [j, j + 1] with [x0, x1], in [0, 1]
    cover_x = (torch.minimum(xs + 1, b[:, 2:3]) - torch.maximum(xs, b[:, 0:1])).clamp(0, 1)  # (B, W)
    cover_y = (torch.minimum(ys + 1, b[:, 3:4]) - torch.maximum(ys, b[:, 1:2])).clamp(0, 1)  # (B, H)
    masks = cover_y[:, :, None] * cover_x[:, None, :]
    if found is not None:
        masks = masks * torch.as_tensor(found, dtype=torch.float64).view(-1, 1, 1)
    return masks[:, None].float()
