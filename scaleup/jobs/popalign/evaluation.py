"""Evaluating a (finetuned, in-memory) pipeline through the shared evaluation job, :func:`scaleup.evaluate.run_eval`.

- Identity-neutral prompts: discrepancy (seed 001, eq. 11), bias, no-face share, grids, per prompt and overall.
- The identity-specific check of App. B.1: on the identity-augmented prompts, the recall of the asked-for identity
  (the share of face images whose class is the keyword's), so a model that diversifies "a female doctor" into men
  is caught.

:func:`stand_in_parts` binds the evaluation to a :class:`.sanity.Perception` (e.g. the stand-ins of tiny runs);
real runs pass nothing and :func:`scaleup.evaluate.run_eval` builds its configured detector and classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scaleup.jobs.popalign.keywords import KeywordSet
from scaleup.atomic_write import atomic_write_text


def stand_in_parts(pipe, perception, *, num_inference_steps: int, guidance_scale: float, height: int | None,
                   width: int | None):
    """:class:`scaleup.evaluation.loop.EvaluationParts` generating with ``pipe`` and perceiving with ``perception``."""
    from scaleup.evaluation.loop import EvaluationParts, Perceived
    from scaleup.models.pipelines import generate
    from scaleup.perception.faces import find_faces

    def _generate(prompt: str, seeds: Sequence[int]) -> torch.Tensor:
        return generate(pipe, prompt, seeds, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        height=height, width=width, batch_size=len(seeds), progress=False)

    def _perceive(images: torch.Tensor) -> Perceived:
        has_face, probs = perception(images)
        faces = find_faces(images, perception.detector)
        boxes = [faces.detections[i].tolist() if has_face[i] else None for i in range(len(has_face))]
        return Perceived(has_face=has_face, boxes=boxes, probs=np.nan_to_num(probs))

    return EvaluationParts(generate=_generate, perceive=_perceive, class_names=perception.class_names)


def write_prompt_file(path: Path, prompts: Sequence[str]) -> Path:
    """A prompt file (one per line) for the evaluation job."""
    atomic_write_text(path, "".join(p + "\n" for p in prompts))
    return path


def evaluate_prompts(pipe, prompts: Sequence[str], out: Path, *, attribute: str, images_per_prompt: int,
                     num_inference_steps: int, guidance_scale: float, size: int | None, seed: int,
                     target: Sequence[float] | None = None, parts=None, progress: bool = False) -> dict:
    """``run_eval`` on ``prompts`` with ``pipe`` (and ``parts``, when given); returns its results."""
    from scaleup.evaluate import EvalConfig, run_eval

    config = EvalConfig(prompts=str(write_prompt_file(out / "prompts.txt", prompts)), attribute=attribute,
                        images_per_prompt=images_per_prompt, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, height=size, width=size, seed=seed,
                        target=None if target is None else tuple(target), out=str(out), clip_t=parts is None,
                        dtype="float32", grid_images=min(16, images_per_prompt))
    return run_eval(config, pipe=pipe, parts=parts, progress=progress)


def identity_recall(results: dict, prompt_keywords: Sequence[str], keywords: KeywordSet) -> dict:
    """App. B.1: per augmented prompt (``prompt_keywords[i]`` its keyword), the share of its face images classified
    as the keyword's class; and the mean over prompts. ``results`` is run_eval's output on those prompts."""
    from scaleup.perception.factory import resolve_attribute

    if keywords.attribute is None:
        return {"recall": None, "reason": "the keywords name no classifier class"}
    names = resolve_attribute(keywords.attribute).class_names
    per_prompt = []
    for summary, keyword in zip(results["per_prompt"], prompt_keywords):
        freq = summary["freq"]
        per_prompt.append(None if freq is None else freq[names[keywords.class_index(keyword)]])
    kept = [v for v in per_prompt if v is not None]
    return {"recall": float(np.mean(kept)) if kept else None, "per_prompt": per_prompt}
