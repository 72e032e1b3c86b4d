"""Benchmark: images per second of the bias evaluation against plain ``StableDiffusionPipeline`` at the same settings.

Side by side in one run, interleaved over repeats (the minimum is reported): the plain diffusers pipeline call, the
evaluation's generation (:func:`scaleup.models.pipelines.generate`: one generator per image), the whole evaluation
step (generation + largest-face detection + attribute classification of the crops, on the astronaut photo tiled to
the batch so the classifier runs on real faces), and, with ``--compile``, the same with ``torch.compile`` on the U-Net.

    python benchmarks/sd_eval.py                       # tiny random SD on the CPU (what CI machines can run)
    python benchmarks/sd_eval.py --full-size --device cuda --batch-size 16 --height 512   # SD 1.5 architecture

Writes ``benchmarks/results/sd_eval-<device>-<size>.json`` and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from scaleup.atomic_write import atomic_write_text


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="SD 1.5 architecture with random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float16 on cuda, float32 on cpu by default")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--height", type=int, default=None, help="512 full size, 64 tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(unet)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    from skimage.data import astronaut

    from scaleup.models.full_size import full_size_sd15_pipeline
    from scaleup.models.pipelines import generate
    from scaleup.models.tiny import tiny_sd_pipeline
    from scaleup.perception import DlibFaceDetector, DlibGenderClassifier, classify_largest_faces

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    size = args.height or (512 if args.full_size else 64)
    if args.full_size:
        pipe = full_size_sd15_pipeline(device=device, torch_dtype=dtype)
    else:
        pipe = tiny_sd_pipeline(seed=0).to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    b, prompt = args.batch_size, "a photo of the face of a nurse, a person"
    seeds = list(range(b))
    detector, classifier = DlibFaceDetector(), DlibGenderClassifier().to(device)
    photo = torch.from_numpy(astronaut()).permute(2, 0, 1).float().div(255)
    photo = torch.nn.functional.interpolate(photo[None], size=(size, size), mode="bilinear", antialias=True)
    faces = photo.expand(b, -1, -1, -1).contiguous()

    def plain():
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        pipe(prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, height=size, width=size,
             num_images_per_prompt=b, generator=generators, output_type="pt")

    def ours():
        generate(pipe, prompt, seeds, num_inference_steps=args.steps, guidance_scale=args.guidance, height=size,
                 width=size, batch_size=b, progress=False)

    def evaluation():
        images = generate(pipe, prompt, seeds, num_inference_steps=args.steps, guidance_scale=args.guidance,
                          height=size, width=size, batch_size=b, progress=False)
        with torch.no_grad():
            classify_largest_faces(images, detector, classifier)
            classify_largest_faces(faces, detector, classifier)

    cases = {"plain StableDiffusionPipeline": plain, "fairdiff generate": ours, "evaluation step": evaluation}
    if args.compile:
        compiled_pipe_unet = torch.compile(pipe.unet)

        def compiled():
            original, pipe.unet = pipe.unet, compiled_pipe_unet
            try:
                evaluation()
            finally:
                pipe.unet = original

        cases["evaluation step, torch.compile(unet)"] = compiled
    for fn in cases.values():  # warm-up (and compilation) outside the timing
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(_timed(fn, device))
    base = min(times["plain StableDiffusionPipeline"])
    rows = {name: {"seconds_per_batch": min(t), "images_per_second": b / min(t), "ratio_to_plain": min(t) / base}
            for name, t in times.items()}
    what = f"{'full-size SD 1.5 architecture (random weights)' if args.full_size else 'tiny random SD'}"
    print(f"{what}, {device}, {str(dtype).replace('torch.', '')}, {size} px, batch {b}, {args.steps} DPM-Solver++ "
          f"steps, CFG {args.guidance}; minimum over {args.repeats} interleaved repeats")
    for name, row in rows.items():
        print(f"  {name:<40} {row['seconds_per_batch']:8.3f} s/batch  {row['images_per_second']:8.2f} img/s  "
              f"x{row['ratio_to_plain']:.2f} of plain")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"what": what, "device": str(device), "device_name": torch.cuda.get_device_name(device)
               if device.type == "cuda" else platform.processor() or platform.machine(),
               "dtype": str(dtype), "size": size, "batch_size": b, "steps": args.steps, "guidance": args.guidance,
               "repeats": args.repeats, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "results": rows, "all_times": {k: list(map(float, v)) for k, v in times.items()}}
    path = out / f"sd_eval-{device.type}-{'full' if args.full_size else 'tiny'}.json"
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
