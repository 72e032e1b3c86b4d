"""Image embedders behind one interface: images (B, 3, H, W) in [0, 1] -> L2-normalised (B, D), differentiable.

Seed 000's image-semantics loss compares CLIP and DINOv2 embeddings of the generated and original images ([0107],
the aDFT code: laion CLIP ViT-H-14 image tower + DINOv2 ViT-B/14 CLS token); the face-realism loss compares face
embeddings ([0108]); CLIP-T / CLIP-I scores of the evaluation compare image and text embeddings. CLIP-like
embedders also embed texts, ``embed_texts(list[str]) -> (T, D)``, in the same space.

Backends (all take an already-loaded model; ``scaleup.models`` loads them):

- :class:`ClipEmbedder`: transformers ``CLIPModel`` (image and text towers, projections).
- :class:`Dinov2Embedder`: transformers ``Dinov2Model``, the layer-normed CLS token (``pooler_output``, what the
  torch.hub ``dinov2_vitb14`` returns).
- :class:`OpenClipEmbedder`: an open_clip model + tokenizer (open_clip is imported by the caller; it needs
  torchvision, so it is the optional extra ``fairdiff[clip]``). Its tests (tests/test_perception_open_clip.py) run
  where open_clip imports, e.g. in a second environment::

      python3 -m venv /tmp/venv-clip && /tmp/venv-clip/bin/pip install torch==2.14.1 torchvision==0.29.1 \
          open_clip_torch pytest numpy scipy
      PYTHONPATH=$PWD /tmp/venv-clip/bin/python -m pytest tests/test_perception_open_clip.py -q

Each applies its model's own preprocessing in torch (:class:`~.preprocessing.ImagePreprocessing`): no PIL
round-trip, so gradients reach the pixels. The embedders never change ``requires_grad`` of the model.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .crops import check_images
from .preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing

__all__ = ["ClipEmbedder", "Dinov2Embedder", "ImageEmbedder", "OpenClipEmbedder", "TextImageEmbedder"]


@runtime_checkable
class ImageEmbedder(Protocol):
    """``embedder(images)`` -> (B, dim) unit-norm float32 embeddings, differentiable in ``images``."""

    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TextImageEmbedder(ImageEmbedder, Protocol):
    """A CLIP-like embedder: also ``embed_texts(texts) -> (T, dim)`` unit-norm, and the model's ``logit_scale``
    (the exponentiated temperature, 100 for trained CLIP)."""

    logit_scale: float

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a non-empty list of strings; got {texts!r:.80}")
    return list(texts)


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _unit(x: torch.Tensor) -> torch.Tensor:
    # normalise in float32 whatever the model's dtype (fp16 norms overflow / lose precision)
    return F.normalize(x.float(), dim=-1)


class ClipEmbedder(nn.Module):
    """A transformers ``CLIPModel`` as an image (and text) embedder.

    Parameters
    ----------
    model : transformers.CLIPModel
    processor : transformers.CLIPProcessor, optional
        Supplies ``tokenizer`` and ``image_processor`` unless they are given separately.
    tokenizer : CLIPTokenizer, optional
        Needed only for :meth:`embed_texts`.
    image_processor : CLIPImageProcessor, optional
        Source of the preprocessing; without one (and without ``preprocessing``), OpenAI CLIP's: shorter side
        resized to the vision tower's ``image_size``, centre crop, CLIP mean / std.
    preprocessing : ImagePreprocessing, optional
        Overrides the above.
    """

    def __init__(self, model: nn.Module, processor=None, *, tokenizer=None, image_processor=None,
                 preprocessing: ImagePreprocessing | None = None) -> None:
        super().__init__()
        for part in ("vision_model", "visual_projection", "text_model", "text_projection", "logit_scale"):
            if not hasattr(model, part):
                raise ValueError(f"model must be a transformers CLIPModel (has no {part!r}); got "
                                 f"{type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        image_processor = image_processor if image_processor is not None else getattr(processor, "image_processor",
                                                                                       None)
        if preprocessing is None:
            if image_processor is not None:
                preprocessing = ImagePreprocessing.from_image_processor(image_processor)
            else:
                side = int(model.config.vision_config.image_size)
                preprocessing = ImagePreprocessing(side, side, CLIP_MEAN, CLIP_STD)
        self.preprocessing = preprocessing
        self.dim = int(model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        """exp of the model's learned temperature (CLIP's 100 after training)."""
        return float(self.model.logit_scale.detach().float().exp())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) unit-norm image embeddings (the projected pooled output)."""
        pixels = self.preprocessing(images).to(_model_dtype(self.model))
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return _unit(self.model.visual_projection(pooled))

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, D) unit-norm text embeddings (the projected end-of-text state)."""
        texts = _check_texts(texts)
        if self.tokenizer is None:
            raise ValueError("embed_texts needs a tokenizer: pass processor= or tokenizer= to ClipEmbedder")
        device = self.model.text_projection.weight.device
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        pooled = self.model.text_model(input_ids=tokens["input_ids"].to(device),
                                       attention_mask=tokens["attention_mask"].to(device)).pooler_output
        return _unit(self.model.text_projection(pooled))


class Dinov2Embedder(nn.Module):
    """A transformers ``Dinov2Model``: the layer-normed CLS token, L2-normalised.

    Parameters
    ----------
    model : transformers.Dinov2Model
    processor : BitImageProcessor, optional
        Source of the preprocessing (DINOv2's: shorter side 256, centre crop 224, ImageNet mean / std). Without it
        (and without ``preprocessing``) images are resized to 224 x 224 and ImageNet-normalised (the aDFT code
        feeds its 224 px images to DINOv2 with ImageNet normalisation only).
    preprocessing : ImagePreprocessing, optional
        Overrides the above.
    """

    def __init__(self, model: nn.Module, processor=None, *, preprocessing: ImagePreprocessing | None = None) -> None:
        super().__init__()
        if not (hasattr(model, "embeddings") and hasattr(model, "layernorm") and hasattr(model, "config")):
            raise ValueError(f"model must be a transformers Dinov2Model; got {type(model).__name__}")
        self.model = model
        if preprocessing is None:
            preprocessing = (ImagePreprocessing.from_image_processor(processor) if processor is not None
                             else ImagePreprocessing(224, 224, IMAGENET_MEAN, IMAGENET_STD))
        self.preprocessing = preprocessing
        self.dim = int(model.config.hidden_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, hidden_size) unit-norm CLS embeddings."""
        pixels = self.preprocessing(images).to(_model_dtype(self.model))
        return _unit(self.model(pixel_values=pixels).pooler_output)


class OpenClipEmbedder(nn.Module):
    """An open_clip CLIP model (``open_clip.create_model(...)``) and its tokenizer (``open_clip.get_tokenizer``).

    The preprocessing is read from ``model.visual.preprocess_cfg`` (size, mean, std, interpolation) when open_clip
    provides it, else from ``model.visual.image_size`` with OpenAI CLIP's mean / std; open_clip's own transform
    resizes the shorter side and centre-crops, as here.
    """

    def __init__(self, model: nn.Module, tokenizer=None, *, preprocessing: ImagePreprocessing | None = None) -> None:
        super().__init__()
        if not (hasattr(model, "encode_image") and hasattr(model, "visual")):
            raise ValueError(f"model must be an open_clip CLIP model (encode_image, visual); got "
                             f"{type(model).__name__}")
        self.model, self.tokenizer = model, tokenizer
        if preprocessing is None:
            cfg = dict(getattr(model.visual, "preprocess_cfg", None) or {})
            if cfg.get("resize_mode", "shortest") != "shortest":
                raise ValueError(f"open_clip resize_mode {cfg['resize_mode']!r} is not reproduced here (only "
                                 "'shortest' + centre crop); pass preprocessing=ImagePreprocessing(...) explicitly")
            size = cfg.get("size", getattr(model.visual, "image_size", 224))
            side = int(size[0] if isinstance(size, (tuple, list)) else size)
            interpolation = cfg.get("interpolation", "bicubic")
            preprocessing = ImagePreprocessing(
                side, side, tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD)),
                interpolation if interpolation in ("bicubic", "bilinear") else "bicubic")
        self.preprocessing = preprocessing
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.preprocessing.crop or self.preprocessing.resize or 224,
                                self.preprocessing.crop or self.preprocessing.resize or 224,
                                dtype=_model_dtype(model), device=next(model.parameters()).device)
            self.dim = int(model.encode_image(probe).shape[-1])

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        pixels = self.preprocessing(images).to(_model_dtype(self.model))
        return _unit(self.model.encode_image(pixels))

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check_texts(texts)
        if self.tokenizer is None:
            raise ValueError("embed_texts needs the open_clip tokenizer: pass tokenizer=open_clip.get_tokenizer(name)")
        tokens = self.tokenizer(texts).to(next(self.model.parameters()).device)
        return _unit(self.model.encode_text(tokens))
