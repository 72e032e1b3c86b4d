"""An image model's own preprocessing (resize, centre crop, normalise) in torch, differentiable, with no PIL
round-trip: the losses of seed 000 ([0107] L_img with CLIP and DINOv2, [0108] the classifier on the face) need
gradients from the embedding back to the generated pixels.

The settings are read from the model's transformers image processor (``CLIPImageProcessor``,
``BitImageProcessor``) or given explicitly. Resizing uses ``interpolate(..., antialias=True)``, whose bicubic
kernel is Pillow's (a = -0.5), so the result matches the processor's PIL path up to its uint8 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .crops import check_images

__all__ = ["CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocessing"]

#: OpenAI CLIP's normalisation (also laion's open_clip / transformers CLIP checkpoints).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: ImageNet normalisation (DINOv2).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PIL resample codes a transformers processor stores -> torch interpolate modes
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _field(container, key: str):
    if container is None:
        return None
    if isinstance(container, dict):
        return container.get(key)
    value = getattr(container, key, None)
    if value is None:
        try:
            value = container[key]
        except (KeyError, TypeError, IndexError):
            value = None
    return value


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, normalise with ``mean`` / ``std``.

    ``resize=None`` skips resizing, ``crop=None`` skips cropping (a square input of the model's size then passes
    through unchanged apart from normalisation). ``clamp`` clips the resized image to [0, 1] as Pillow's uint8
    result is clipped (bicubic overshoots at sharp edges by up to ~8%); the clipped pixels pass no gradient.
    """

    resize: int | None
    crop: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    clamp: bool = True

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive int or None; got {value!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 channels with std > 0; got {self.mean}, {self.std}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"interpolation must be bicubic, bilinear or nearest; got {self.interpolation!r}")

    @classmethod
    def from_image_processor(cls, processor) -> "ImagePreprocessing":
        """Settings of a transformers image processor (or a ``CLIPProcessor`` holding one).

        Reads ``size`` (``shortest_edge``, or ``height`` for a square resize), ``crop_size``, ``do_resize``,
        ``do_center_crop``, ``do_normalize``, ``image_mean``, ``image_std`` and ``resample``.
        """
        processor = getattr(processor, "image_processor", processor)
        size = _field(processor, "size")
        resize = _field(size, "shortest_edge") or _field(size, "height")
        if _field(processor, "do_resize") is False:
            resize = None
        crop = _field(_field(processor, "crop_size"), "height") if _field(processor, "do_center_crop") else None
        mean, std = _field(processor, "image_mean"), _field(processor, "image_std")
        if mean is None or std is None or _field(processor, "do_normalize") is False:
            raise ValueError(f"{type(processor).__name__} has no normalisation (image_mean / image_std); pass an "
                             "ImagePreprocessing explicitly")
        resample = _field(processor, "resample")
        interpolation = _PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bicubic") \
            if resample is not None else "bicubic"
        return cls(int(resize) if resize else None, int(crop) if crop else None, tuple(float(m) for m in mean),
                   tuple(float(s) for s in std), interpolation)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the model's pixel values, differentiably."""
        check_images(images)
        x = images
        if self.resize is not None:
            height, width = x.shape[-2:]
            short, long = min(height, width), max(height, width)
            # transformers' get_resize_output_image_size: the longer side is int(resize * long / short)
            new_long = int(self.resize * long / short)
            size = (self.resize, new_long) if height <= width else (new_long, self.resize)
            if size != (height, width):
                kwargs = {} if self.interpolation == "nearest" else {"align_corners": False, "antialias": True}
                x = F.interpolate(x, size=size, mode=self.interpolation, **kwargs)
                if self.clamp:
                    x = x.clamp(0, 1)
        if self.crop is not None:
            height, width = x.shape[-2:]
            if height < self.crop or width < self.crop:
                x = F.pad(x, ((max(self.crop - width, 0) + 1) // 2, max(self.crop - width, 0) // 2,
                              (max(self.crop - height, 0) + 1) // 2, max(self.crop - height, 0) // 2))
                height, width = x.shape[-2:]
            top, left = (height - self.crop) // 2, (width - self.crop) // 2
            x = x[..., top:top + self.crop, left:left + self.crop]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
