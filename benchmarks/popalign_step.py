"""Benchmark: PopAlign training seconds per step and peak memory (full U-Net and LoRA), and preference-image
generation images per second against plain diffusers pipeline calls at the same settings.

- Training: the job's own iteration (:class:`scaleup.jobs.popalign.train.PopAlignTrainer`: PNG loading, VAE
  encoding, text encoding, model + reference forward, ``theory.popalign`` loss, backward, AdamW step) on a dataset of
  random PNGs, timed per iteration after warm-up; peak GPU memory (``max_memory_allocated``) on CUDA, the process's
  peak resident set on the CPU (which includes everything allocated before).
- Generation: the plain pipeline call (``pipe(prompt, generator=[...])``), ``scaleup.models.generate`` (one seeded
  generator per image) and the job's ``generate`` stage (the same, plus PNG files and records), interleaved over
  repeats; the minimum is reported.

    python benchmarks/popalign_step.py                      # tiny random SD on the CPU
    python benchmarks/popalign_step.py --full-size          # SDXL base architecture, random weights, 1024 px, GPU

Writes ``benchmarks/results/popalign_step-<device>-<size>.json`` and prints which configuration ran.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scaleup.atomic_write import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _pipeline(full_size: bool, device: torch.device, dtype: torch.dtype):
    from scaleup.models.full_size import full_size_sdxl_pipeline
    from scaleup.models.tiny import tiny_sdxl_pipeline

    pipe = full_size_sdxl_pipeline(device=device, torch_dtype=dtype) if full_size else \
        tiny_sdxl_pipeline(0).to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dataset(folder: Path, size: int, n_sets: int, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for s in range(n_sets):
        for role in ("winner", "loser"):
            for i in range(n):
                name = f"images/{s:04d}-{role[0]}{i}.png"
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
                rows.append({"file_name": name, "caption": "best quality, a realistic photo of Engineer",
                             "set_id": s, "role": role, "position": i})
    atomic_write_text((folder / "metadata.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))


def time_training(args, finetune: str, device: torch.device, data: Path) -> dict:
    from accelerate import Accelerator

    from scaleup.jobs.popalign.config import TrainConfig
    from scaleup.jobs.popalign.preference_data import read_preference_pairs
    from scaleup.jobs.popalign.train import PopAlignTrainer
    from scaleup.training.checkpoints import TrainingProgress

    mixed = "bf16" if device.type == "cuda" else "no"
    config = TrainConfig(data=str(data), out=str(data / "unused"), finetune=finetune, lora_rank=args.lora_rank,
                         resolution=args.resolution, pairs_per_device=args.pairs, learning_rate=1e-6,
                         lr_warmup_steps=0, mixed_precision=mixed, gradient_checkpointing=args.full_size,
                         use_8bit_adam=True)
    # the trainer casts what it trains to float32 and the frozen parts to the mixed-precision dtype
    pipe = _pipeline(args.full_size, device, torch.float32 if not args.full_size else torch.bfloat16)
    accelerator = Accelerator(mixed_precision=mixed, cpu=device.type == "cpu")
    trainer = PopAlignTrainer(config, accelerator, pipe, read_preference_pairs(data))
    progress = TrainingProgress()
    times = []
    for i in range(args.warmup + args.train_steps):
        if i == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.step(progress)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    timed = times[args.warmup:]
    row = {"seconds_per_step_median": float(np.median(timed)), "seconds_per_step_min": float(min(timed)),
           "trainable_parameters": sum(p.numel() for p in trainer.parameters), "optimizer": trainer.optimizer_note,
           "mixed_precision": mixed, "gradient_checkpointing": config.gradient_checkpointing}
    if device.type == "cuda":
        row["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        row["process_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    del trainer, pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def time_generation(args, device: torch.device, work: Path) -> dict:
    from scaleup.jobs.popalign.config import GenerateConfig
    from scaleup.jobs.popalign.generation import run_generate
    from scaleup.models.pipelines import generate

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = _pipeline(args.full_size, device, dtype)
    b, size, prompt = args.gen_batch, args.resolution, "best quality, a realistic photo of Engineer"
    seeds = list(range(b))
    kwargs = dict(num_inference_steps=args.gen_steps, guidance_scale=6.5, height=size, width=size)
    runs = iter(range(10 ** 6))

    def plain():
        pipe(prompt, num_images_per_prompt=b, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
             output_type="pt", **kwargs)

    def ours():
        generate(pipe, prompt, seeds, batch_size=b, progress=False, **kwargs)

    def job():  # M = m = b: the neutral prompt and its two gender prompts, b images each, PNGs and records
        config = GenerateConfig(out=str(work / f"gen{next(runs)}"), max_prompts=1, keywords=("gender",),
                                images_per_neutral=b, images_per_augmented=b, batch_size=b,
                                num_inference_steps=args.gen_steps, height=size, width=size)
        run_generate(config, pipe=pipe, progress=False)

    cases = {"plain diffusers pipeline": plain, "scaleup.models.generate": ours, "popalign generate stage": job}
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    images = {name: 3 * b if name == "popalign generate stage" else b for name in cases}
    base = b / min(times["plain diffusers pipeline"])
    return {name: {"seconds": min(t), "images": images[name], "images_per_second": images[name] / min(t),
                   "ratio_to_plain": base / (images[name] / min(t))} for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="SDXL base architecture, random weights (GPU)")
    parser.add_argument("--device", default=None, help="cuda with --full-size when available, else cpu")
    parser.add_argument("--resolution", type=int, default=None, help="1024 full size, 32 tiny")
    parser.add_argument("--pairs", type=int, default=2, help="winner/loser pairs per step")
    parser.add_argument("--lora-rank", type=int, default=None, help="64 full size, 4 tiny")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--gen-batch", type=int, default=4)
    parser.add_argument("--gen-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if args.full_size and torch.cuda.is_available() else "cpu"))
    args.resolution = args.resolution or (1024 if args.full_size else 32)
    args.lora_rank = args.lora_rank or (64 if args.full_size else 4)
    what = ("full-size SDXL base architecture (random weights)" if args.full_size else "tiny random SDXL") + \
        f", {device}, {args.resolution} px"
    print(f"ran: {what}; training {args.pairs} pairs/step (median of {args.train_steps} after {args.warmup} "
          f"warm-up); generation batch {args.gen_batch}, {args.gen_steps} DPM-Solver++ steps, CFG 6.5, "
          f"minimum of {args.repeats} interleaved repeats")
    with tempfile.TemporaryDirectory(prefix="popalign-bench-") as tmp:
        data = Path(tmp) / "data"
        _dataset(data, args.resolution, n_sets=4, n=args.pairs)
        training = {finetune: time_training(args, finetune, device, data) for finetune in ("full", "lora")}
        for finetune, row in training.items():
            memory = (f"{row['peak_gpu_memory_gib']:.2f} GiB peak GPU" if "peak_gpu_memory_gib" in row
                      else f"{row['process_peak_rss_gib']:.2f} GiB process peak RSS")
            print(f"  train {finetune:<5} {row['seconds_per_step_median']:8.3f} s/step  {memory}  "
                  f"({row['trainable_parameters']:,} trainable, {row['optimizer']})")
        generation = time_generation(args, device, Path(tmp))
    for name, row in generation.items():
        print(f"  {name:<28} {row['seconds']:8.3f} s for {row['images']} images  {row['images_per_second']:8.2f} "
              f"img/s  x{row['ratio_to_plain']:.2f} of plain's time per image")
    payload = {"what": what, "device": str(device), "device_name": torch.cuda.get_device_name(device)
               if device.type == "cuda" else platform.processor() or platform.machine(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args),
               "training": training, "generation": generation}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"popalign_step-{device.type}-{'full' if args.full_size else 'tiny'}.json"
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
