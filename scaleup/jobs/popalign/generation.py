"""Stage 1: images of every identity-neutral prompt (M each) and of its identity-augmented versions (m each).

Seed 001, Sec. 5.1: "We generate 100 images for each identity-neutral prompt and 10 images for each
identity-specific prompt." The work is cut into tasks (one prompt text and its images); a task is finished when its
record file ``tasks/TASK.json`` exists (written atomically after its PNGs), so a rerun skips finished tasks. Tasks
are dealt round-robin to the processes of ``accelerate launch`` (each process a GPU) and batched across prompts
through :func:`scaleup.models.generate_batches`. Every image's seed is :func:`scaleup.evaluation.loop.image_seed`
of (base seed, prompt text, index) and recorded, so any image is reproduced by ``generate(pipe, prompt, [seed])``.

Outputs: ``OUT/images/TASK/NNNN.png``, ``OUT/tasks/TASK.json``, ``OUT/generation.json`` (the settings that
determine the images; a rerun with other settings into the same folder is refused) and, once every task is done,
``OUT/generated.jsonl`` (one record per image, all tasks in order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scaleup.atomic_write import atomic_write, atomic_write_text, check_writable_folder
from scaleup.evaluation.loop import image_seed
from scaleup.job_config import config_to_dict
from scaleup.jobs.popalign.config import GenerateConfig
from scaleup.jobs.popalign.keywords import KeywordSet, augment_prompt, keyword_set, keyword_slug
from scaleup.prompts import load_prompt_set

SETTINGS_FILE = "generation.json"
RECORDS_FILE = "generated.jsonl"
# Settings that do not change any image: a rerun may differ in these.
_NOT_DETERMINING = ("out", "batch_size")


@dataclass(frozen=True)
class Task:
    """One prompt and the images it needs: the neutral prompt itself (``keyword`` None) or one augmentation."""

    task_id: str
    neutral_index: int
    neutral_prompt: str
    prompt: str
    keyword: str | None
    n_images: int


def make_tasks(neutral_prompts: list[str], keywords: KeywordSet, n_neutral: int, n_augmented: int,
               template: str | None = None) -> list[Task]:
    """For each neutral prompt: its own task (M images) and one per keyword (m images), in that order."""
    tasks = []
    for i, prompt in enumerate(neutral_prompts):
        tasks.append(Task(f"{i:04d}-neutral", i, prompt, prompt, None, n_neutral))
        for k in keywords.keywords:
            tasks.append(Task(f"{i:04d}-{keyword_slug(k)}", i, prompt, augment_prompt(prompt, k, template), k,
                              n_augmented))
    return tasks


def image_records(task: Task, base_seed: int) -> list[dict]:
    """The records of a task's images: file (relative to the output folder), prompts, keyword, index and seed."""
    return [{"file": f"images/{task.task_id}/{j:04d}.png", "task": task.task_id, "neutral_index": task.neutral_index,
             "neutral_prompt": task.neutral_prompt, "prompt": task.prompt, "keyword": task.keyword,
             "image_index": j, "seed": image_seed(base_seed, task.prompt, j)} for j in range(task.n_images)]


def save_png(image: torch.Tensor, path: Path) -> None:
    """A (3, H, W) float image in [0, 1] as an 8-bit PNG, rounded as diffusers' ``numpy_to_pil`` rounds."""
    from PIL import Image

    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def validate(config: GenerateConfig) -> tuple[list[str], KeywordSet]:
    """Check the settings before any model loads; returns the neutral prompts and the keyword set."""
    for name in ("images_per_neutral", "images_per_augmented", "num_inference_steps", "batch_size"):
        _check_positive(name, getattr(config, name))
    if config.max_prompts is not None:
        _check_positive("max_prompts", config.max_prompts)
    if config.family not in (None, "sd15", "sdxl"):
        raise ValueError(f"family must be sd15 or sdxl (or None to read it from the folder); got {config.family!r}")
    if config.torch_dtype not in ("auto", "fp32", "float32", "fp16", "float16", "bf16", "bfloat16"):
        raise ValueError(f"torch_dtype must be auto, fp32, fp16 or bf16; got {config.torch_dtype!r}")
    prompts = list(load_prompt_set(config.prompts).prompts)
    if config.max_prompts is not None:
        prompts = prompts[:config.max_prompts]
    keywords = keyword_set(config.keywords, attribute=config.keyword_attribute, classes=config.keyword_classes)
    if config.augment_template is not None:
        augment_prompt("x", "y", config.augment_template)  # refuses a template without its placeholders
    return prompts, keywords


def _settings(config: GenerateConfig, prompts: list[str], keywords: KeywordSet) -> dict:
    settings = {k: v for k, v in config_to_dict(config).items() if k not in _NOT_DETERMINING}
    settings.update(neutral_prompts=prompts, keyword_set={"name": keywords.name, "keywords": list(keywords.keywords),
                                                          "attribute": keywords.attribute,
                                                          "classes": list(keywords.classes or []) or None})
    return settings


def _claim_folder(out: Path, settings: dict, is_main: bool) -> None:
    path = out / SETTINGS_FILE
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        differing = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if differing:
            raise ValueError(f"out: {out} holds images generated with other settings ({', '.join(differing)} "
                             "differ); choose another output folder so that no image is mixed or overwritten")
    elif is_main:
        atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def resolve_torch_dtype(name: str) -> torch.dtype:
    """'auto': bfloat16 on a GPU (SDXL's VAE overflows in float16), float32 on the CPU."""
    from scaleup.models.loading import resolve_dtype

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return resolve_dtype(name)


def run_generate(config: GenerateConfig, *, pipe=None, progress: bool = True) -> dict:
    """Generate every unfinished task's images on this process's share; returns counts (and the records file).

    ``pipe``: an already-loaded pipeline (tests, experiments); None loads ``config.pipeline``.
    """
    from scaleup.models.pipelines import generate_batches
    from scaleup.processes import process_state

    prompts, keywords = validate(config)
    state = process_state()
    out = check_writable_folder(config.out, option="--out")
    settings = _settings(config, prompts, keywords)
    _claim_folder(out, settings, state.is_main_process)
    tasks = make_tasks(prompts, keywords, config.images_per_neutral, config.images_per_augmented,
                       config.augment_template)
    todo = [t for t in tasks if not (out / "tasks" / f"{t.task_id}.json").exists()]
    state.wait_for_everyone()  # every process has read the same finished set before any writes more
    mine = todo[state.process_index::state.num_processes]
    if mine:
        if pipe is None:
            from scaleup.models.loading import load_pipeline

            pipe = load_pipeline(config.pipeline, family=config.family,
                                 torch_dtype=resolve_torch_dtype(config.torch_dtype), device=state.device,
                                 scheduler=config.scheduler)
        records = [image_records(t, config.seed) for t in mine]
        flat = [(ti, r) for ti, task_records in enumerate(records) for r in task_records]
        remaining = [t.n_images for t in mine]
        batches = generate_batches(pipe, [r["prompt"] for _, r in flat], [r["seed"] for _, r in flat],
                                   num_inference_steps=config.num_inference_steps,
                                   guidance_scale=config.guidance_scale, height=config.height, width=config.width,
                                   batch_size=config.batch_size, progress=progress and state.is_local_main_process,
                                   desc=f"generating (process {state.process_index})")
        for indices, images in batches:
            for i, image in zip(indices, images):
                ti, record = flat[i]
                save_png(image, out / record["file"])
                remaining[ti] -= 1
                if remaining[ti] == 0:  # the task's last image is on disk: mark it finished
                    atomic_write_text(out / "tasks" / f"{mine[ti].task_id}.json", json.dumps(records[ti]) + "\n")
    state.wait_for_everyone()
    summary = {"tasks": len(tasks), "generated_now": len(todo), "skipped_finished": len(tasks) - len(todo),
               "images": sum(t.n_images for t in tasks), "neutral_prompts": len(prompts),
               "keywords": list(keywords.keywords)}
    if state.is_main_process:
        merge_records(out, tasks)
        summary["records"] = str(out / RECORDS_FILE)
    return summary


def merge_records(out: Path, tasks: list[Task]) -> Path:
    """``generated.jsonl``: every finished task's records, in task order."""
    lines = []
    for task in tasks:
        path = out / "tasks" / f"{task.task_id}.json"
        if not path.exists():
            raise RuntimeError(f"task {task.task_id} is not finished ({path} missing); rerun generate to finish it")
        lines += [json.dumps(r) for r in json.loads(path.read_text(encoding="utf-8"))]
    atomic_write_text(out / RECORDS_FILE, "".join(line + "\n" for line in lines))
    return out / RECORDS_FILE


def read_generation(folder: str | Path) -> tuple[dict, list[dict]]:
    """The settings and image records of a finished generate stage, with one clear error when incomplete."""
    folder = Path(folder)
    settings_path, records_path = folder / SETTINGS_FILE, folder / RECORDS_FILE
    if not settings_path.is_file() or not records_path.is_file():
        raise ValueError(f"generated: {folder} is not a finished generate output (expected {SETTINGS_FILE} and "
                         f"{RECORDS_FILE} in it); run `python -m scaleup.jobs.popalign generate --out {folder}` first")
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    records = [json.loads(line) for line in records_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = [r["file"] for r in records if not (folder / r["file"]).is_file()]
    if missing:
        raise ValueError(f"generated: {len(missing)} image(s) listed in {records_path} are missing, e.g. "
                         f"{folder / missing[0]}; rerun generate after deleting their tasks/*.json files")
    return settings, records
