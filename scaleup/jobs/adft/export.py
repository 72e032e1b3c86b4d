"""The trained weights as any diffusers user loads them, and the held-out evaluation that picks the best checkpoint.

Every checkpoint ``checkpoint-N/`` (the full training state, :mod:`scaleup.training.checkpoints`) gets an ``export/``
beside the state: ``lora/pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(folder)``, or
:func:`scaleup.models.adapters.load_lora`) and/or ``soft_prompt.safetensors`` (:class:`scaleup.models.SoftPrompt`),
and with EMA the same under ``ema/``. With ``--evaluate-checkpoints`` each export is evaluated on the test prompts
by the evaluation job (:func:`scaleup.evaluate.run_eval`: bias of seed 000 [0124], CLIP-T) with the in-memory
pipeline, and the export with the lowest mean held-out bias is copied to ``best/`` (seed 000 [0121]: "checkpoints
every 200 iterations and reports the best checkpoint").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from scaleup.jobs.adft.components import Components
from scaleup.jobs.adft.config import AdftConfig, JobPlan
from scaleup.atomic_write import atomic_replace_folder, atomic_write_text

EVALUATIONS = "evaluations.jsonl"


def _replace_folder(tmp: Path, final: Path) -> None:
    atomic_replace_folder(tmp, final)


def _write_weights(components: Components, folder: Path) -> None:
    from scaleup.models.adapters import save_lora

    if components.adapted:
        save_lora(components.pipe, folder / "lora")
    if components.soft_prompt is not None:
        components.soft_prompt.save(folder / "soft_prompt.safetensors")
        # the same vectors for plain diffusers: pipe.load_textual_inversion(file, token="<fairdiff>")
        components.soft_prompt.save_textual_inversion(folder / "textual_inversion.safetensors")


def export_weights(components: Components, folder: str | Path, *, ema=None) -> Path:
    """Write the trained adapter (and the EMA weights under ``ema/``) into ``folder``, atomically (main process)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_weights(components, tmp)
    if ema is not None:
        ema.store(components.trainable)
        ema.copy_to(components.trainable)
        try:
            _write_weights(components, tmp / "ema")
        finally:
            ema.restore(components.trainable)
    _replace_folder(tmp, folder)
    return folder


def evaluation_parts(config: AdftConfig, plan: JobPlan, components: Components):
    """The evaluation job's parts bound to the run's models in memory (no second copy of SD or CLIP): the
    finetuned pipeline generates, the evaluation detector and classifier perceive, CLIP (when the run has it) gives
    CLIP-T."""
    from scaleup.evaluate import perceive_faces
    from scaleup.evaluation.loop import EvaluationParts, Perceived
    from scaleup.models.pipelines import generate
    from scaleup.perception.factory import make_classifier, make_detector, resolve_attribute

    device = components.device
    attribute = resolve_attribute(plan.eval_attribute)
    classifier = make_classifier(config.eval_classifier, attribute, clip_embedder=components.clip, device=device)
    detector = make_detector(plan.eval_detector)
    size = config.resolution

    def _generate(prompt: str, seeds: Sequence[int]) -> torch.Tensor:
        return generate(components.pipe, prompt, seeds, num_inference_steps=config.num_inference_steps,
                        guidance_scale=config.guidance_scale, height=size, width=size,
                        batch_size=config.eval_batch_size, soft_prompt=components.soft_prompt, progress=False)

    def _perceive(images: torch.Tensor) -> Perceived:
        return perceive_faces(images, detector, classifier, crop_size=config.crop_size, device=device)

    def _embed(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return components.clip(images.to(device))

    clip = components.clip is not None
    return EvaluationParts(generate=_generate, perceive=_perceive, class_names=attribute.class_names,
                           embed_images=_embed if clip else None,
                           embed_texts=components.clip.embed_texts if clip else None)


def evaluate_export(config: AdftConfig, plan: JobPlan, components: Components, step: int,
                    output_dir: Path) -> dict:
    """Held-out bias of the current weights on every test prompt set (all processes call it); returns the summary
    (main process) with ``mean_bias`` over the sets, None where no face was found."""
    from scaleup.evaluate import EvalConfig, run_eval

    parts = evaluation_parts(config, plan, components)
    dtype = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}[config.mixed_precision]
    summary: dict = {"step": step, "sets": {}}
    for name in plan.test_prompts:
        label = Path(name).stem if name.endswith(".txt") else name
        eval_config = EvalConfig(
            prompts=name, attribute=plan.eval_attribute, classifier=config.eval_classifier,
            images_per_prompt=config.eval_images_per_prompt, max_prompts=config.eval_max_prompts,
            num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
            height=config.resolution, width=config.resolution, batch_size=config.eval_batch_size, dtype=dtype,
            crop_size=config.crop_size, seed=config.seed, out=str(output_dir / "evaluations" / f"step-{step}" / label),
            restart=True)
        results = run_eval(eval_config, parts=parts, progress=False)
        if results:
            bias = results["overall"]["bias"]
            summary["sets"][label] = {"bias": None if bias is None else bias["mean"],
                                      "no_face_share": results["overall"]["pooled"]["no_face_share"],
                                      "clip_t": (results["overall"].get("clip_t") or {}).get("mean")}
    biases = [s["bias"] for s in summary["sets"].values()]
    summary["mean_bias"] = float(np.mean(biases)) if biases and None not in biases else None
    return summary


def read_evaluations(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / EVALUATIONS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def record_evaluation(output_dir: Path, summary: dict, export: Path) -> dict | None:
    """Append ``summary`` to evaluations.jsonl (dropping an earlier line of the same step, as after a resume) and,
    when its mean bias is the lowest so far, copy ``export`` to ``best/``; returns the best evaluation."""
    output_dir = Path(output_dir)
    kept = [e for e in read_evaluations(output_dir) if e["step"] != summary["step"]] + [summary]
    path = output_dir / EVALUATIONS
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))
    ranked = [e for e in kept if e.get("mean_bias") is not None]
    if not ranked:
        return None
    best = min(ranked, key=lambda e: (e["mean_bias"], e["step"]))
    if best["step"] == summary["step"]:
        tmp = output_dir / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(export, tmp)
        atomic_write_text(tmp / "evaluation.json", json.dumps(best, indent=2))
        _replace_folder(tmp, output_dir / "best")
    return best
