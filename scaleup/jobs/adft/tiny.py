"""A whole aDFT run's inputs at toy scale, written to disk and loaded back through the real loaders: tiny random SD
1.5, CLIP and DINOv2 (:mod:`scaleup.models.tiny`), a prompt file, and a folder of external real faces (crops of the
astronaut photograph that scikit-image ships). For the tests, ``experiments run adft-sd`` and the CPU benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scaleup.atomic_write import atomic_write_text

TINY_PROMPTS = ("a photo of the face of a doctor, a person", "a photo of the face of a nurse, a person",
                "a photo of the face of a pilot, a person", "a photo of the face of a chef, a person")
# (top, left, side) of square crops around the astronaut's face in skimage.data.astronaut() (512 x 512)
_FACE_CROPS = ((20, 150, 200), (40, 170, 170), (10, 140, 230), (30, 160, 190))


def write_external_faces(folder: str | Path, *, size: int = 64) -> Path:
    """PNG face crops (and their mirror images) of scikit-image's astronaut photograph in ``folder``."""
    from PIL import Image
    from skimage import data

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = data.astronaut()
    for i, (top, left, side) in enumerate(_FACE_CROPS):
        crop = Image.fromarray(np.ascontiguousarray(photo[top:top + side, left:left + side])).resize(
            (size, size), Image.BICUBIC)
        crop.save(folder / f"face_{i}.png")
        crop.transpose(Image.FLIP_LEFT_RIGHT).save(folder / f"face_{i}_mirrored.png")
    return folder


def write_tiny_run_inputs(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Tiny ``sd15/``, ``clip/``, ``dinov2/`` model folders, ``prompts.txt`` and ``faces/`` under ``root``."""
    from scaleup.models.tiny import tiny_clip_model, tiny_dinov2, tiny_sd_pipeline

    root = Path(root)
    tokenizer = root / "_tokenizer"
    paths = {name: root / name for name in ("sd15", "clip", "dinov2")}
    tiny_sd_pipeline(seed, tokenizer_folder=tokenizer).save_pretrained(paths["sd15"])
    for name, (model, processor) in (("clip", tiny_clip_model(seed, tokenizer_folder=tokenizer)),
                                     ("dinov2", tiny_dinov2(seed))):
        model.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    paths["prompts"] = root / "prompts.txt"
    atomic_write_text(paths["prompts"], "\n".join(TINY_PROMPTS) + "\n")
    paths["faces"] = write_external_faces(root / "faces")
    return paths


def tiny_config_values(paths: dict[str, Path], output_dir: str | Path) -> dict:
    """AdftConfig keyword arguments for a run on :func:`write_tiny_run_inputs`'s files: 32 px, 3 sampler steps,
    N = 4 in sub-batches of 2, the centre-box detector (tiny random images hold no real face), CLIP zero-shot."""
    return dict(pretrained_model=str(paths["sd15"]), clip_model=str(paths["clip"]), dinov2_model=str(paths["dinov2"]),
                external_faces=str(paths["faces"]), prompts=(str(paths["prompts"]),),
                test_prompts=(str(paths["prompts"]),), detector="centre", crop_size=32, lora_rank=4,
                batch_size=4, sub_batch_size=2, num_inference_steps=3, resolution=32, iterations=4,
                checkpoint_every=2, learning_rate=1e-2, output_dir=str(output_dir), eval_images_per_prompt=2,
                eval_max_prompts=2, eval_batch_size=2, progress=False)
