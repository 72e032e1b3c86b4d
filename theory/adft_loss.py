"""The aDFT objective around the DAL: image-semantics and face-realism preservation, dynamic weights, presets.

Seed 000, [0107]-[0109] (the loss) and [0121]-[0123] (its hyper-parameters); DESIGN.md "Semantics and face losses".
Everything here is a pure torch function of embeddings, masks and class labels, so the Stable Diffusion job computes
the embeddings (CLIP, DINOv2, a face-embedding model) and the face masks, and imports the formulas from here.

    L = L_align + lambda_img L_img + lambda_face L_face                                   (seed 000, [0109])

How the printed formulas are read
---------------------------------
- L_img, eq. 7 ([0107]): (1/N) sum_i [(1 - cos(CLIP(x_i), CLIP(o_i))) + (1 - cos(DINO(x_i), DINO(o_i)))] with o_i the
  frozen model's image from the same initial noise, embeddings of the whole images (:func:`image_semantics_distance`
  gives the bracket per image).
- L_face ([0108]) is printed "(1/N) (1 - min_{F in D_F} cos(emb(d_face(x_i)), emb(F))" with no sum over i and a "min".
  Read as (1/N) sum_{i with a face} (1 - max_F cos(emb(d_face(x_i)), emb(F))): the text says it penalises the
  dissimilarity to "the closest face" of the external set, i.e. the largest cosine, and the leading 1/N needs a sum.
  Images without a face contribute nothing but still count in N, as in eq. 6 ([0109]: "if an image does not contain
  any face, the system only applies L_img"). The official code agrees (top-1 dot-product search over unit
  embeddings; per-image losses averaged over the whole batch).
- L_align ([0108]): the DAL of eq. 6 (:func:`theory.dal.dal_loss`) on the face crops of the N_f images with a face;
  eq. 6 divides by the batch size, so its value on the crops (a mean over N_f) enters L as (N_f / N) times that.
- lambda_img ([0109]) is dynamic, per image i: lambda_img,1 if y_i agrees with the original's class h(d_face(o_i));
  otherwise lambda_img,2 "for the non-face region" and lambda_img,3 "for the face region". Eq. 7 has only whole-image
  embeddings, so the regions are read as regions of the image through which the L_img gradient flows: the term is
  lambda_img,2 (1 - cos ...) and the gradient reaching the face pixels is further multiplied by
  lambda_img,3 / lambda_img,2 (:func:`face_region_gradient`), so the face pixels see lambda_img,3 and the rest
  lambda_img,2. This is how the official code realises it (a gradient hook on the face box of the generated image,
  intersected with the original's). A caller who prefers separate face / non-face embeddings passes (N, 2)
  distances and weights to :func:`adft_loss` instead, which then sums the two regions.
- Several faces in one image: the caller passes the largest ([0109]); these functions see one face per image.
- Images without a face get L_img only, with lambda_img,1 (nothing to edit, so minimal change); images whose original
  has no face (class -1) cannot agree and get lambda_img,2 / lambda_img,3.
- Several attributes at once ([0123], gender x race): each attribute gives its (non-face, face) weights by the rule
  above and the image takes the smallest of each over the attributes (the official code's ``min`` of the factors;
  for the [0123] numbers the two coincide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from theory.sampler_gradient import scale_gradient
from theory.validation import check_count


# ------------------------------------------------------------------------------------------------------ the terms
def cosine_distance(x: torch.Tensor, o: torch.Tensor, *, names: tuple[str, str] = ("x", "o")) -> torch.Tensor:
    """1 - cos(x_i, o_i) per row for two (N, D) batches of embeddings; shape (N,)."""
    _check_embeddings(x, names[0])
    _check_embeddings(o, names[1])
    if x.shape != o.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape (N, D), one embedding per image; got "
                         f"{tuple(x.shape)} and {tuple(o.shape)}")
    return 1.0 - F.cosine_similarity(x, o, dim=1)


def image_semantics_distance(
    clip_x: torch.Tensor, clip_o: torch.Tensor, dino_x: torch.Tensor, dino_o: torch.Tensor
) -> torch.Tensor:
    """(1 - cos(CLIP(x_i), CLIP(o_i))) + (1 - cos(DINO(x_i), DINO(o_i))), the bracket of eq. 7 per image; shape (N,).

    Seed 000, [0107], eq. 7: x_i the finetuned model's image, o_i the frozen model's image from the same noise.
    """
    clip = cosine_distance(clip_x, clip_o, names=("clip_x", "clip_o"))
    dino = cosine_distance(dino_x, dino_o, names=("dino_x", "dino_o"))
    if clip.shape != dino.shape:
        raise ValueError(f"the CLIP and DINO embeddings must cover the same N images; got {clip.shape[0]} and "
                         f"{dino.shape[0]}")
    return clip + dino


def face_realism_distance(face_embeddings: torch.Tensor, external_faces: torch.Tensor) -> torch.Tensor:
    """1 - max_{F in D_F} cos(emb(d_face(x_i)), emb(F)) for each generated face; shape (M,) (seed 000, [0108]).

    ``face_embeddings`` (M, D) are the embeddings of the M generated faces (only images with a face); ``external_faces``
    (|D_F|, D) those of the external real faces (CelebA, FairFace), constants. The gradient reaches the closest
    external face's cosine only, as for any maximum.
    """
    _check_embeddings(face_embeddings, "face_embeddings", allow_empty=True)
    _check_embeddings(external_faces, "external_faces")
    if face_embeddings.shape[1] != external_faces.shape[1]:
        raise ValueError(f"face_embeddings and external_faces must have the same embedding size D; got "
                         f"{face_embeddings.shape[1]} and {external_faces.shape[1]}")
    cos = F.normalize(face_embeddings, dim=1) @ F.normalize(external_faces.detach(), dim=1).T
    return 1.0 - cos.max(dim=1).values


# ------------------------------------------------------------------------------------------------- dynamic weights
@dataclass(frozen=True)
class ImageWeights:
    """lambda_img,1 > lambda_img,2 > lambda_img,3 of seed 000 [0109] for one attribute."""

    agree: float
    """lambda_img,1: the whole image, where the target class agrees with the original's (and images without a face)."""
    outside_face: float
    """lambda_img,2: the non-face region of an image whose target class differs from the original's."""
    face: float
    """lambda_img,3: the face region of such an image."""

    def __post_init__(self) -> None:
        for name in ("agree", "outside_face", "face"):
            value = getattr(self, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if isinstance(value, bool) or not 0.0 <= number < float("inf"):
                raise ValueError(f"ImageWeights.{name} must be a finite number >= 0; got {value!r}")
            object.__setattr__(self, name, number)  # frozen: store the checked float
        if self.outside_face == 0.0 and self.face > 0.0:
            raise ValueError("ImageWeights.outside_face = 0 with face > 0 cannot be realised by scaling the face "
                             "region's gradient relative to the rest of the image")

    @classmethod
    def from_factors(cls, agree: float, outside_factor: float, face_factor: float) -> "ImageWeights":
        """lambda_img,2 = outside_factor * lambda_img,1 and lambda_img,3 = face_factor * lambda_img,2, as [0121]-[0123]
        state them (e.g. 8, 0.2 x 8, 0.2 x 0.2 x 8)."""
        return cls(agree, outside_factor * agree, face_factor * outside_factor * agree)


class RegionWeights(NamedTuple):
    """Per-image lambda_img for the two regions of an image (seed 000, [0109])."""

    outside_face: torch.Tensor
    """(N,) weight of the whole image's L_img term (lambda_img,1 or lambda_img,2)."""
    face: torch.Tensor
    """(N,) weight seen by the face region's pixels (lambda_img,1 or lambda_img,3)."""

    @property
    def face_gradient_scale(self) -> torch.Tensor:
        """face / outside_face: the factor :func:`face_region_gradient` applies to the face pixels (1 where both are 0)."""
        ratio = self.face / torch.where(self.outside_face > 0, self.outside_face, torch.ones_like(self.outside_face))
        return torch.where(self.outside_face > 0, ratio, torch.ones_like(ratio))


def dynamic_image_weights(
    has_face: torch.Tensor,
    target_class: torch.Tensor,
    original_class: torch.Tensor,
    weights: ImageWeights | Sequence[ImageWeights],
    *,
    confident: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> RegionWeights:
    """lambda_img of each image and region (seed 000, [0109]; reading in the module docstring).

    Parameters
    ----------
    has_face : bool Tensor (N,)
        Whether a face was found in the generated image x_i.
    target_class : int Tensor (N,) or (N, A)
        The DAL target y_i per attribute (entries of images without a face are ignored).
    original_class : int Tensor, same shape
        The class h(d_face(o_i)) of the original image per attribute; -1 where the original has no face.
    weights : ImageWeights or a sequence of A of them
        One per attribute (column of the class tensors).
    confident : bool Tensor, same shape, optional
        If given, an image whose target is below the DAL's confidence threshold C never counts as agreeing (the
        official code's choice); by default agreement compares y_i alone, as [0109] states it.
    dtype : torch.dtype, optional
        Of the returned weights; the default float dtype by default.
    """
    has_face = _check_mask(has_face, "has_face")
    n = has_face.shape[0]
    target = _check_classes(target_class, "target_class", n)
    original = _check_classes(original_class, "original_class", n)
    if target.shape != original.shape:
        raise ValueError(f"target_class and original_class must have the same shape; got {tuple(target.shape)} and "
                         f"{tuple(original.shape)}")
    per_attribute = [weights] if isinstance(weights, ImageWeights) else list(weights)
    if len(per_attribute) != target.shape[1] or not all(isinstance(w, ImageWeights) for w in per_attribute):
        raise ValueError(f"weights must be one ImageWeights per attribute ({target.shape[1]} given by the class "
                         f"tensors); got {weights!r}")
    agree = (target == original) & (original >= 0) & has_face[:, None]
    if confident is not None:
        confident = _check_mask(confident, "confident", ndims=(1, 2))
        if confident.ndim == 1:
            confident = confident[:, None]
        if confident.shape != target.shape:
            raise ValueError(f"confident must have the shape of target_class {tuple(target.shape)}; got "
                             f"{tuple(confident.shape)}")
        agree = agree & confident
    keep = agree | ~has_face[:, None]  # no face: L_img only, with the "minimal change" weight lambda_img,1
    dtype = dtype or torch.get_default_dtype()

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=target.device)[None, :].expand(n, -1)

    first = column([w.agree for w in per_attribute])
    outside = torch.where(keep, first, column([w.outside_face for w in per_attribute])).min(dim=1).values
    face = torch.where(keep, first, column([w.face for w in per_attribute])).min(dim=1).values
    return RegionWeights(outside, face)


def face_region_gradient(images: torch.Tensor, face_mask: torch.Tensor, face_scale: torch.Tensor) -> torch.Tensor:
    """``images`` unchanged; the gradient reaching image i's face pixels is multiplied by ``face_scale[i]``.

    Realises lambda_img,3 on the face region and lambda_img,2 elsewhere ([0109]) when L_img,i is weighted by
    lambda_img,2 and ``face_scale`` = lambda_img,3 / lambda_img,2 (:attr:`RegionWeights.face_gradient_scale`). Apply it
    to the images that feed CLIP and DINO only, not to the face crops of the DAL and L_face.

    Parameters
    ----------
    images : Tensor (N, C, H, W) (any (N, ...) works)
    face_mask : bool or float Tensor (N, H, W) or (N, 1, H, W)
        1 on the face region (the official code: the face box of x_i intersected with that of o_i), 0 elsewhere.
    face_scale : Tensor (N,)
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim < 2:
        raise ValueError(f"images must be a floating-point tensor (N, ...); got {_describe(images)}")
    n = images.shape[0]
    if not isinstance(face_mask, torch.Tensor) or face_mask.shape[0] != n or face_mask.ndim not in (images.ndim - 1,
                                                                                                   images.ndim):
        raise ValueError(f"face_mask must be a tensor (N, H, W) or (N, 1, H, W) for images of shape "
                         f"{tuple(images.shape)}; got {_describe(face_mask)}")
    mask = face_mask.to(images.dtype)
    if mask.ndim == images.ndim - 1:
        mask = mask.unsqueeze(1)
    scale = torch.as_tensor(face_scale, dtype=images.dtype, device=images.device)
    if scale.shape != (n,):
        raise ValueError(f"face_scale must have one entry per image, shape ({n},); got {tuple(scale.shape)}")
    factor = 1.0 + (scale.reshape((n,) + (1,) * (images.ndim - 1)) - 1.0) * mask
    return scale_gradient(images, factor)


# ------------------------------------------------------------------------------------------------- the total loss
class AdftLossTerms(NamedTuple):
    """L and its parts, each a scalar (seed 000, [0109])."""

    total: torch.Tensor
    """L = align + semantics + lambda_face * face."""
    align: torch.Tensor
    """L_align, the DAL normalised by the whole batch N (eq. 6)."""
    semantics: torch.Tensor
    """lambda_img L_img = (1/N) sum_i lambda_img,i d_i with the dynamic per-image weights (eq. 7, [0109])."""
    face: torch.Tensor
    """L_face = (1/N) sum_{i with a face} (1 - max_F cos) ([0108]), unweighted."""


def adft_loss(
    *,
    align_on_faces: torch.Tensor | None,
    semantics: torch.Tensor,
    semantics_weight: torch.Tensor,
    face: torch.Tensor,
    has_face: torch.Tensor,
    lambda_face: float,
) -> AdftLossTerms:
    """L = L_align + lambda_img L_img + lambda_face L_face over a batch of N images (seed 000, [0107]-[0109]).

    Parameters
    ----------
    align_on_faces : scalar Tensor or None
        :func:`theory.dal.dal_loss` of the classifier logits of the N_f face crops (a mean over N_f; the sum over
        attributes when there are several); rescaled here by N_f / N. None or 0 when no image has a face.
    semantics : Tensor (N,) or (N, R)
        d_i of eq. 7 per image (:func:`image_semantics_distance`), computed from images passed through
        :func:`face_region_gradient`; or R region distances per image (e.g. non-face and face embeddings).
    semantics_weight : Tensor of the same shape
        lambda_img per image (and region): :attr:`RegionWeights.outside_face` (or both regions' weights).
    face : Tensor (N_f,)
        :func:`face_realism_distance` of the N_f images with a face, in batch order.
    has_face : bool Tensor (N,)
    lambda_face : float >= 0

    Non-finite inputs are not refused here (a check would synchronise a GPU on every step): a NaN or an infinity in
    ``align_on_faces``, ``semantics``, ``semantics_weight`` or ``face`` gives a non-finite loss and non-finite
    gradients, and the jobs' loop (:func:`scaleup.training.loop.run_training`) skips such a step and stops after ten
    in a row. Settings (weights, coefficients) are checked.
    """
    has_face = _check_mask(has_face, "has_face")
    n = has_face.shape[0]
    if n == 0:
        raise ValueError("has_face is empty; the loss needs a batch of N >= 1 images")
    n_faces = int(has_face.sum())
    if not isinstance(semantics, torch.Tensor) or not semantics.is_floating_point() or semantics.ndim not in (1, 2) \
            or semantics.shape[0] != n:
        raise ValueError(f"semantics must be a floating-point tensor (N,) or (N, R) with N = {n}; got "
                         f"{_describe(semantics)}")
    if not isinstance(semantics_weight, torch.Tensor) or semantics_weight.shape != semantics.shape:
        raise ValueError(f"semantics_weight must have the shape of semantics {tuple(semantics.shape)}; got "
                         f"{_describe(semantics_weight)}")
    if not isinstance(face, torch.Tensor) or not face.is_floating_point() or face.shape != (n_faces,):
        raise ValueError(f"face must be a floating-point tensor with one entry per image with a face, shape "
                         f"({n_faces},); got {_describe(face)}")
    lambda_face = float(lambda_face)
    if not 0.0 <= lambda_face < float("inf"):
        raise ValueError(f"lambda_face must be a finite number >= 0; got {lambda_face!r}")
    if align_on_faces is None:
        align_on_faces = semantics.new_zeros(())
    if not isinstance(align_on_faces, torch.Tensor) or align_on_faces.ndim != 0:
        raise ValueError(f"align_on_faces must be a scalar tensor (dal_loss of the face crops); got "
                         f"{_describe(align_on_faces)}")
    align = align_on_faces * (n_faces / n)
    semantics_term = (semantics_weight.to(semantics.dtype) * semantics).sum() / n
    face_term = face.sum() / n
    return AdftLossTerms(align + semantics_term + lambda_face * face_term, align, semantics_term, face_term)


# --------------------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class AttributeSetting:
    """One debiased attribute of a preset: its classes (uniform target, [0120]) and lambda_img weights."""

    name: str
    n_classes: int
    weights: ImageWeights

    @property
    def target(self) -> tuple[float, ...]:
        """The uniform target distribution over the classes ([0120])."""
        return (1.0 / self.n_classes,) * self.n_classes


@dataclass(frozen=True)
class AdftPreset:
    """Hyper-parameters of one debiasing experiment of seed 000 ([0121]-[0123])."""

    name: str
    paragraph: str
    attributes: tuple[AttributeSetting, ...]
    lambda_face: float
    batch_size: int
    threshold: float
    iterations: int
    learning_rate: float
    external_faces: str
    classifier_data: str

    def __post_init__(self) -> None:
        check_count(self.batch_size, "batch_size", minimum=1)
        check_count(self.iterations, "iterations", minimum=1)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1]; got {self.threshold!r}")

    @property
    def image_weights(self) -> tuple[ImageWeights, ...]:
        """One ImageWeights per attribute, in the order of :attr:`attributes` (for :func:`dynamic_image_weights`)."""
        return tuple(a.weights for a in self.attributes)


#: Seed 000 [0121] (gender), [0121]-[0122] (race) and [0123] (gender x race jointly). Optimiser AdamW, checkpoints
#: every 200 iterations, the best reported. [0123] prints "W_img,1 = 8", read as lambda_img,1 = 8 for both attributes.
PRESETS: dict[str, AdftPreset] = {
    preset.name: preset
    for preset in (
        AdftPreset("gender", "[0121]", (AttributeSetting("gender", 2, ImageWeights.from_factors(8.0, 0.2, 0.2)),),
                   lambda_face=1.0, batch_size=24, threshold=0.8, iterations=10_000, learning_rate=5e-5,
                   external_faces="CelebA", classifier_data="CelebA"),
        AdftPreset("race", "[0121]-[0122]", (AttributeSetting("race", 4, ImageWeights.from_factors(6.0, 0.6, 0.3)),),
                   lambda_face=0.1, batch_size=32, threshold=0.8, iterations=12_000, learning_rate=5e-5,
                   external_faces="FairFace", classifier_data="FairFace"),
        AdftPreset("gender-race", "[0123]",
                   (AttributeSetting("gender", 2, ImageWeights.from_factors(8.0, 0.2, 0.2)),
                    AttributeSetting("race", 4, ImageWeights.from_factors(8.0, 0.6, 0.3))),
                   lambda_face=0.1, batch_size=32, threshold=0.6, iterations=14_000, learning_rate=5e-5,
                   external_faces="FairFace", classifier_data="FairFace"),
    )
}


def adft_preset(name: str) -> AdftPreset:
    """The preset called ``name`` (one of :data:`PRESETS`), or a ValueError listing the names."""
    if name not in PRESETS:
        raise ValueError(f"unknown aDFT preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


# ------------------------------------------------------------------------------------------------------ validation
def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_embeddings(x: object, name: str, *, allow_empty: bool = False) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 or \
            (x.shape[0] == 0 and not allow_empty) or x.shape[1] == 0:
        raise ValueError(f"{name} must be a floating-point tensor (N, D) of embeddings, one row per image; got "
                         f"{_describe(x)}")


def _check_mask(x: object, name: str, *, ndims: tuple[int, ...] = (1,)) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.bool or x.ndim not in ndims:
        raise ValueError(f"{name} must be a bool tensor with one entry per image (and attribute); got {_describe(x)}")
    return x


def _check_classes(x: object, name: str, n: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.is_floating_point() or x.dtype == torch.bool or x.ndim not in (1, 2) \
            or x.shape[0] != n:
        raise ValueError(f"{name} must be an integer tensor (N,) or (N, A) of class indices with N = {n}; got "
                         f"{_describe(x)}")
    return x[:, None] if x.ndim == 1 else x
