"""The evaluation loop: generate -> detect the largest face -> classify -> score, prompt by prompt, resumable.

The loop is written against four plain callables (:class:`EvaluationParts`), so that the job can bind them to real
Stable Diffusion, face detectors, attribute classifiers and CLIP/DINO embedders, and the tests to tiny ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from scaleup.evaluation.grids import save_grid
from scaleup.evaluation.store import RecordStore
from scaleup.evaluation.summary import ImageRecord
from theory.image_scores import paired_cosine

#: generate(prompt, seeds) -> images (B, 3, H, W) in [0, 1]; image i depends only on seeds[i].
Generate = Callable[[str, Sequence[int]], torch.Tensor]


@dataclass(frozen=True)
class Perceived:
    """Faces and classes of a batch: ``has_face`` (B,), ``boxes`` (largest face or None), ``probs`` (B, K)."""

    has_face: np.ndarray
    boxes: list[list[float] | None]
    probs: np.ndarray


@dataclass
class EvaluationParts:
    """What the loop calls. Only ``generate`` and ``perceive`` are required.

    ``embed_images`` / ``embed_texts`` give CLIP-T; with ``generate_original`` (the frozen model, same seeds) they
    give CLIP-I, and ``embed_images_dino`` the DINO similarity (seed 000 Table 1). ``classify_content`` names each
    image's content class (e.g. which digit), for the prompt accuracy. ``request`` maps an image's seed to the class
    a debiasing option asked of it (:mod:`scaleup.evaluation.debiasing`; ``generate`` must ask the same), recorded
    with the image.
    """

    generate: Generate
    perceive: Callable[[torch.Tensor], Perceived]
    class_names: Sequence[str]
    embed_images: Callable[[torch.Tensor], torch.Tensor] | None = None
    embed_texts: Callable[[Sequence[str]], torch.Tensor] | None = None
    generate_original: Generate | None = None
    embed_images_dino: Callable[[torch.Tensor], torch.Tensor] | None = None
    embed_images_similarity: Callable[[torch.Tensor], torch.Tensor] | None = None
    """The user's own image embedder (``--image-embedder``): same-noise similarity for models without CLIP / DINO."""
    classify_content: Callable[[torch.Tensor], Sequence[str]] | None = None
    request: Callable[[int], int] | None = None


def image_seed(base_seed: int, prompt: str, image_index: int) -> int:
    """The seed of image ``image_index`` of ``prompt``: an independent stream per (run seed, prompt, image).

    Keyed by the prompt's text rather than its position, so reordering or subsetting a prompt file does not change
    any image; derived through ``numpy.random.SeedSequence`` (not ``seed + i``), 63 bits for ``torch.Generator``.
    """
    prompt_key = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "little")
    state = np.random.SeedSequence([base_seed, prompt_key, image_index]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def _cosines(embed: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return paired_cosine(embed(a).double().cpu().numpy(), embed(b).double().cpu().numpy())


def evaluate_prompt(parts: EvaluationParts, prompt_index: int, prompt: str, *, n_images: int, base_seed: int,
                    batch_size: int) -> tuple[list[ImageRecord], torch.Tensor, Perceived]:
    """Generate, perceive and score ``n_images`` images of one prompt, in batches of ``batch_size``."""
    seeds = [image_seed(base_seed, prompt, j) for j in range(n_images)]
    text_embedding = None
    if parts.embed_images is not None and parts.embed_texts is not None:
        with torch.no_grad():
            text_embedding = parts.embed_texts([prompt]).double().cpu().numpy()
    records: list[ImageRecord] = []
    kept_images, kept = [], []
    for start in range(0, n_images, batch_size):
        batch_seeds = seeds[start:start + batch_size]
        with torch.no_grad():
            images = parts.generate(prompt, batch_seeds)
        perceived = parts.perceive(images)
        if perceived.probs.shape[1] != len(parts.class_names):
            raise ValueError(f"the classifier returns {perceived.probs.shape[1]} classes but the attribute has "
                             f"{len(parts.class_names)} ({', '.join(parts.class_names)})")
        clip_t = clip_i = dino = similarity = [None] * len(batch_seeds)
        if text_embedding is not None:
            with torch.no_grad():
                clip_t = paired_cosine(parts.embed_images(images).double().cpu().numpy(), text_embedding).tolist()
        if parts.generate_original is not None:
            with torch.no_grad():
                originals = parts.generate_original(prompt, batch_seeds)
            if parts.embed_images is not None:
                clip_i = _cosines(parts.embed_images, images, originals).tolist()
            if parts.embed_images_dino is not None:
                dino = _cosines(parts.embed_images_dino, images, originals).tolist()
            if parts.embed_images_similarity is not None:
                similarity = _cosines(parts.embed_images_similarity, images, originals).tolist()
        content = [None] * len(batch_seeds)
        if parts.classify_content is not None:
            with torch.no_grad():
                content = list(parts.classify_content(images))
        for j, seed in enumerate(batch_seeds):
            face = bool(perceived.has_face[j])
            records.append(ImageRecord(
                prompt_index=prompt_index, prompt=prompt, image_index=start + j, seed=seed, has_face=face,
                box=[float(v) for v in perceived.boxes[j]] if face else None,
                probs=[float(v) for v in perceived.probs[j]] if face else None,
                clip_t=clip_t[j], clip_i=clip_i[j], dino=dino[j], content=content[j], similarity=similarity[j],
                requested=None if parts.request is None else parts.class_names[parts.request(seed)]))
        kept_images.append(images.detach().float().cpu())
        kept.append(perceived)
    images = torch.cat(kept_images)
    merged = Perceived(has_face=np.concatenate([p.has_face for p in kept]),
                       boxes=[b for p in kept for b in p.boxes], probs=np.concatenate([p.probs for p in kept]))
    return records, images, merged


def run_evaluation(parts: EvaluationParts, prompts: Sequence[str], store: RecordStore, *, n_images: int,
                   base_seed: int, batch_size: int, indices: Sequence[int] | None = None,
                   grid_dir: Path | None = None, grid_images: int = 16, progress: bool = True) -> list[int]:
    """Evaluate the prompts ``indices`` (default all) not yet in ``store``; returns the indices evaluated now."""
    todo = [i for i in (range(len(prompts)) if indices is None else indices) if not store.done(i, prompts[i])]
    # counted in images (with its ETA), as a user thinks of the work; resumed prompts are not counted
    bar = tqdm(total=len(todo) * n_images, desc="images", unit="img", disable=not progress)
    for i in todo:
        records, images, perceived = evaluate_prompt(parts, i, prompts[i], n_images=n_images, base_seed=base_seed,
                                                     batch_size=batch_size)
        bar.update(n_images)
        bar.set_postfix_str(f"prompt {i + 1}/{len(prompts)}", refresh=False)
        if grid_dir is not None and grid_images > 0:
            m = min(grid_images, images.shape[0])
            labels = [parts.class_names[int(np.argmax(perceived.probs[j]))] if perceived.has_face[j] else ""
                      for j in range(m)]
            boxes = [perceived.boxes[j] if perceived.has_face[j] else None for j in range(m)]
            save_grid(grid_dir / f"prompt_{i:05d}.png", images[:m], boxes, labels)
        store.save(i, records)
    bar.close()
    return todo
