"""CLIP zero-shot attribute classifier with prompt ensembles (classifier (a); Radford et al. 2021, Sec. 3.1.4).

Class k's text embedding t_k is the mean of the unit-norm embeddings of its prompts (:mod:`.attributes`),
re-normalised to unit length (CLIP's prompt-ensembling recipe: averaging in embedding space, then projecting back
to the sphere, so the logits stay cosine similarities). The logits of a face crop x are
``logit_scale * <e(x), t_k>`` with e the unit-norm image embedding and ``logit_scale`` the model's learned
temperature (exp(logit_scale) = 100 for trained CLIP), exactly CLIP's ``logits_per_image`` for a single prompt.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .attributes import Attribute
from .classifiers import AttributeClassifier
from .embedders import TextImageEmbedder

__all__ = ["ClipZeroShotClassifier", "ensemble_text_embeddings"]


def ensemble_text_embeddings(embedder: TextImageEmbedder, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """(K, D) unit-norm class embeddings: per class the re-normalised mean of its prompts' unit embeddings."""
    rows = []
    with torch.no_grad():
        for class_prompts in prompts:
            rows.append(F.normalize(embedder.embed_texts(list(class_prompts)).float().mean(dim=0), dim=-1))
    return torch.stack(rows)


class ClipZeroShotClassifier(AttributeClassifier):
    """Face crops -> CLIP zero-shot logits over the attribute's classes.

    Parameters
    ----------
    embedder : TextImageEmbedder
        :class:`~.embedders.ClipEmbedder` or :class:`~.embedders.OpenClipEmbedder`.
    attribute : str or Attribute
    prompts : per-class prompt lists, optional
        Default: the attribute's ensembles (an attribute without them is refused). Must have one non-empty list per
        class.
    logit_scale : float, optional
        Default: the model's (``embedder.logit_scale``).
    """

    def __init__(self, embedder: TextImageEmbedder, attribute: str | Attribute, *,
                 prompts: Sequence[Sequence[str]] | None = None, logit_scale: float | None = None) -> None:
        super().__init__(attribute)
        if not (hasattr(embedder, "embed_texts") and callable(embedder)):
            raise ValueError(f"embedder must embed images and texts (ClipEmbedder, OpenClipEmbedder); got "
                             f"{type(embedder).__name__}")
        if prompts is None and self.attribute.prompts is None:
            raise ValueError(f"CLIP zero-shot needs a prompt ensemble per class, and attribute "
                             f"{self.attribute.name!r} {list(self.class_names)} has none (a user-defined attribute); "
                             "pass prompts=, or classify it with a probe (probe:/path) or your own classifier "
                             "(package.module:factory)")
        prompts = self.attribute.prompts if prompts is None else prompts
        if len(prompts) != self.num_classes or any(isinstance(p, str) or not p for p in prompts):
            raise ValueError(f"prompts must be {self.num_classes} non-empty lists of strings, one per class of "
                             f"{self.attribute.name!r} {list(self.class_names)}; got {len(prompts)}")
        self.embedder = embedder
        self.prompts = tuple(tuple(p) for p in prompts)
        self.register_buffer("class_embeddings", ensemble_text_embeddings(embedder, self.prompts))
        self.logit_scale = float(embedder.logit_scale if logit_scale is None else logit_scale)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, K) logits = logit_scale x cosine(image, class embedding)."""
        image = self.embedder(faces)
        return self.logit_scale * image @ self.class_embeddings.to(image.dtype).T
