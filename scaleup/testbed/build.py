"""Build the whole testbed folder: the trained pipeline, its classifiers, prompt files and card.

``python -m scaleup.testbed --output-dir runs/testbed [--resume latest]`` (flags of
:class:`scaleup.testbed.train.TestbedConfig`) trains into ``OUTPUT_DIR`` and leaves the finished testbed in
``OUTPUT_DIR/pipeline``: a folder that ``StableDiffusionPipeline.from_pretrained`` loads, with ``testbed_card.json``,
``classifiers/`` and ``prompts/`` beside the components (diffusers ignores folders its ``model_index.json`` does not
name). The committed testbed (:func:`scaleup.testbed.paths.testbed_path`) was made this way.
"""

from __future__ import annotations

import time
from pathlib import Path

from scaleup.atomic_write import atomic_write_text
from scaleup.testbed.train import TestbedConfig, train


def folder_size_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def build_testbed(config: TestbedConfig, *, progress: bool = True) -> dict:
    """Train (or resume), fit the classifiers and write the card; returns the card."""
    wall = time.perf_counter()
    summary = train(config, progress=progress)
    summary["wall_seconds_this_process"] = time.perf_counter() - wall
    return finish_testbed(config.output_dir, summary, seed=config.seed, threads=config.threads)


def finish_testbed(output_dir: str | Path, training: dict, *, seed: int = 0, threads: int = 1) -> dict:
    """After training into ``output_dir``: fit the classifiers into ``pipeline/classifiers``, keep the training log
    beside the pipeline and write the card (``training`` is the summary :func:`~scaleup.testbed.train.train`
    returned, recorded in the card)."""
    from diffusers import StableDiffusionPipeline

    from scaleup.testbed.card import write_card
    from scaleup.testbed.classifiers import fit_classifiers
    from scaleup.testbed.model import parameter_count

    folder = Path(output_dir) / "pipeline"
    cpu = time.process_time()
    report = fit_classifiers(folder / "classifiers", seed=seed, threads=threads)
    training = {**training, "classifier_cpu_seconds": time.process_time() - cpu}
    atomic_write_text(folder / "training_log.jsonl", (Path(output_dir) / "log.jsonl").read_text(encoding="utf-8"))
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    components = {name: {"class": type(getattr(pipe, name)).__name__,
                         "parameters": parameter_count(getattr(pipe, name))}
                  for name in ("vae", "text_encoder", "unet")}
    components["scheduler"] = {"class": type(pipe.scheduler).__name__}
    components["tokenizer"] = {"class": type(pipe.tokenizer).__name__, "vocabulary": len(pipe.tokenizer),
                               "context_length": pipe.tokenizer.model_max_length}
    card = write_card(folder, training=training, classifiers=report, components=components)
    card["size_bytes"] = folder_size_bytes(folder)
    return card


def main(argv: list[str] | None = None) -> int:
    from scaleup.job_config import parse_config

    config = parse_config(TestbedConfig, argv, prog="python -m scaleup.testbed")
    card = build_testbed(config)
    print(f"testbed written to {Path(config.output_dir) / 'pipeline'} ({card['size_bytes'] / 1e6:.1f} MB; "
          f"{card['training']['cpu_seconds_this_process']:.0f} CPU-s of training)")
    return 0
