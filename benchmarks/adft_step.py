"""Benchmark: one aDFT iteration (seed 000, Algorithm A.1 + the loss of [0105]-[0109]) by component, against the
sampler alone, measured side by side in one run.

The complete iteration of ``scaleup.jobs.adft`` (original images, sampling with the adjusted gradient, decode,
faces, classifier, face embedding, CLIP + DINOv2, losses, backward, the gradient all-reduce) is timed component by
component (``scaleup.jobs.adft.profiling``: the GPU synchronised around each part, its peak memory), then the
sampler-only iteration: the same sub-batches through ``scaleup.sampling.sample_latents`` with the same adjusted
gradient and checkpointing, the VAE decode, a trivial loss (the image mean) and its backward. The ratio of the two is
the cost of everything aDFT adds around the sampler. Writes ``benchmarks/results/adft_step-<device>-<size>.json``.

    python benchmarks/adft_step.py                       # tiny random models on the CPU (what CI machines have)
    python benchmarks/adft_step.py --full-size           # SD 1.5's architecture, laion CLIP ViT-H/14, DINOv2-B,
                                                         # random weights, on the GPU, bf16, N = 24, 20 steps
    python benchmarks/adft_step.py --testbed             # the committed testbed with the testbed-methods settings
                                                         # (ink, stroke-shape L_img, N = 24, 16 px), as trained

The face detector is the centre box (random weights generate no faces); the classifier is CLIP zero-shot.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from scaleup.atomic_write import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scaleup.jobs.adft.components import (Components, WEIGHT_DTYPES, add_adapter,  # noqa: E402
                                          embed_external_faces)
from scaleup.jobs.adft.config import AdftConfig, plan_job  # noqa: E402
from scaleup.jobs.adft.profiling import ComponentTimer  # noqa: E402
from scaleup.jobs.adft.step import AdftStep  # noqa: E402
from scaleup.jobs.adft.tiny import write_external_faces  # noqa: E402
from scaleup.models.pipelines import latent_shape, seed_latents  # noqa: E402
from scaleup.perception.fixed_regions import CentreBoxDetector  # noqa: E402
from scaleup.sampling import decode_latents, sample_latents  # noqa: E402
from scaleup.training.checkpoints import TrainingProgress  # noqa: E402

# laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json (seed 000 [0107]) and facebook/dinov2-base's
CLIP_H14 = dict(text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                          num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=1024),
                vision=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                            image_size=224, patch_size=14, hidden_act="gelu", projection_dim=1024),
                projection_dim=1024)
DINOV2_B14 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, image_size=518,
                  patch_size=14)
COMPONENTS = ("original images", "sampling (targets pass)", "sampling", "decode", "faces", "classifier",
              "face embedding", "clip+dino", "losses", "targets", "backward", "gradient all-reduce")


def _models(full_size: bool, device: torch.device, dtype: torch.dtype):
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

    from scaleup.models.tiny import tiny_clip_model, tiny_clip_tokenizer, tiny_dinov2, tiny_sd_pipeline

    if not full_size:
        pipe = tiny_sd_pipeline(0).to(device)
        clip, processor = tiny_clip_model(0)
        dino, dino_processor = tiny_dinov2(0)
        return pipe, clip.to(device), processor, dino.to(device), dino_processor
    from scaleup.models.full_size import full_size_sd15_pipeline

    pipe = full_size_sd15_pipeline(device=device, torch_dtype=dtype)
    with torch.device(device):
        clip = CLIPModel(CLIPConfig(text_config=CLIP_H14["text"], vision_config=CLIP_H14["vision"],
                                    projection_dim=CLIP_H14["projection_dim"])).to(dtype).eval()
        dino = Dinov2Model(Dinov2Config(**DINOV2_B14)).to(dtype).eval()
    return pipe, clip, tiny_clip_tokenizer(), dino, None


def build(config: AdftConfig, full_size: bool, device: torch.device) -> Components:
    from scaleup.perception import ClipEmbedder, ClipZeroShotClassifier, Dinov2Embedder

    plan = plan_job(config, check_models=False)
    dtype = WEIGHT_DTYPES[config.mixed_precision]
    pipe, clip_model, clip_processor, dino_model, dino_processor = _models(full_size, device, dtype)
    if not full_size and dtype != torch.float32:  # the full-size pipeline is built in dtype already
        pipe.to(dtype=dtype)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, clip_model, dino_model):
        module.requires_grad_(False).eval()
    named, soft_prompt, adapted = add_adapter(config, pipe, device)
    if hasattr(clip_processor, "image_processor"):
        clip = ClipEmbedder(clip_model, clip_processor)
    else:  # a bare tokenizer: CLIP's own preprocessing from the vision config
        clip = ClipEmbedder(clip_model, tokenizer=clip_processor)
    dino = Dinov2Embedder(dino_model, dino_processor)
    classifiers = {a.name: ClipZeroShotClassifier(clip, a.name).to(device) for a in plan.attributes}
    external = embed_external_faces(config.external_faces, clip, size=config.crop_size, limit=256, device=device)
    return Components(pipe=pipe, trainable=[p for _, p in named], named_trainable=named, soft_prompt=soft_prompt,
                      adapted=adapted, detector=CentreBoxDetector(), classifiers=classifiers, clip=clip, dino=dino,
                      semantics=(("clip", clip), ("dinov2", dino)),
                      face_embedder=clip, external_faces=external, device=device, weight_dtype=dtype,
                      used={"benchmark": True})


def sampler_only(step: AdftStep, iteration: int) -> float:
    """Seconds of the sampler-only iteration on the same batch, sub-batches, gradient mode and checkpointing."""
    c, config = step.c, step.config
    batch = step.batch(iteration)
    z_T = seed_latents(batch.seeds, latent_shape(c.pipe, step.height, step.width), device=c.device)
    gradient = step.adjusted_gradient(batch.n_steps)
    sync = torch.cuda.synchronize if c.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for s in range(0, z_T.shape[0], config.sub_batch_size):
        part = z_T[s:s + config.sub_batch_size]
        cond, uncond = step._encode(batch.prompt, part.shape[0], original=False)
        z0 = sample_latents(c.pipe.unet, step._sampler(batch.n_steps), cond, uncond, part, batch.n_steps,
                            config.guidance_scale, gradient, checkpoint=config.gradient_checkpointing)
        images = decode_latents(c.pipe.vae, z0, checkpoint=config.gradient_checkpointing)
        images.mean().backward()
    sync()
    for p in c.trainable:
        p.grad = None
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from accelerate import Accelerator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="SD 1.5 / CLIP ViT-H/14 / DINOv2-B sizes (GPU)")
    parser.add_argument("--testbed", action="store_true", help="the committed testbed, built by the job's own "
                        "build_components, with the settings of experiments/testbed_methods.py")
    parser.add_argument("--batch-size", type=int, default=None, help="N (default 24 full size and testbed, 8 tiny)")
    parser.add_argument("--sub-batch-size", type=int, default=None, help="default 8 full size, 4 tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mixed-precision", default=None, choices=("no", "fp16", "bf16"))
    parser.add_argument("--json", default=None, help="where to write the numbers (default: "
                        "benchmarks/results/adft_step-<device>-<tiny|full>.json)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.full_size and device.type != "cuda":
        print("--full-size needs a GPU (SD 1.5 at 512 px, batch 24); this machine has none", file=sys.stderr)
        return 2
    n = args.batch_size or (24 if args.full_size or args.testbed else 8)
    sub = args.sub_batch_size or (8 if args.full_size or args.testbed else 4)
    precision = args.mixed_precision or ("bf16" if args.full_size else "no")
    torch.manual_seed(0)
    if args.testbed:
        from experiments.testbed_methods import METHODS, AdftSettings, adft_command
        from scaleup.jobs.adft.components import build_components
        from scaleup.job_config import parse_config

        command = adft_command(METHODS[[m.name for m in METHODS].index("adft-text-lora")], AdftSettings(), seed=0,
                               output_dir=Path(tempfile.mkdtemp(prefix="adft-bench-")))
        config = parse_config(AdftConfig, command[3:] + ["--batch-size", str(n), "--sub-batch-size", str(sub),
                                                         "--num-inference-steps", str(args.steps)])
        plan = plan_job(config)
        components = build_components(config, plan, device)
    else:
        faces = write_external_faces(Path(tempfile.mkdtemp(prefix="adft-bench-faces-")))
        config = AdftConfig(preset="gender", detector="centre", batch_size=n, sub_batch_size=sub,
                            num_inference_steps=args.steps, mixed_precision=precision,
                            lora_rank=50 if args.full_size else 4,
                            crop_size=224 if args.full_size else 32, resolution=512 if args.full_size else 32,
                            external_faces=str(faces), prompts=("occupations-train",), progress=False)
        components = build(config, args.full_size, device)
        plan = plan_job(config, check_models=False)
    timer = ComponentTimer(device)
    accelerator = Accelerator(cpu=device.type == "cpu")
    prompt = "a handwritten two" if args.testbed else "a photo of the face of a nurse, a person"
    step = AdftStep(accelerator, config, plan, components, [prompt], timer=timer)
    what = (f"full-size SD 1.5 architecture + CLIP ViT-H/14 + DINOv2-B, random weights, {device.type}, {precision}"
            if args.full_size else f"the committed testbed, {device.type}, {precision}" if args.testbed
            else f"tiny random models, {device.type}, {precision}")
    size = "full" if args.full_size else "testbed" if args.testbed else "tiny"
    print(f"aDFT iteration benchmark: {what}; N = {n}, sub-batches of {sub}, {args.steps} DPM-Solver++ steps, "
          f"CFG 7.5, LoRA r{config.lora_rank} on the text encoder, {config.resolution} px", flush=True)

    def full(iteration: int) -> float:
        start = time.perf_counter()
        step(TrainingProgress() if iteration == 0 else _progress(iteration))
        for p in components.trainable:
            p.grad = None
        return time.perf_counter() - start

    full(0), sampler_only(step, 0)  # warm-up: kernels, allocator, scheduler probes
    timer.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    full_seconds, sampler_seconds, sampler_peak = [], [], 0
    for r in range(args.repeats):  # interleaved, so that drift affects both alike
        full_seconds.append(full(r + 1))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sampler_seconds.append(sampler_only(step, r + 1))
        sampler_peak = max(sampler_peak, torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    per_iter = {name: timer.seconds[name] / args.repeats for name in COMPONENTS if name in timer.seconds}
    gib = 2 ** 30
    print(f"\n{'component':<26}{'s / iteration':>14}{'share':>8}{'peak GiB':>10}")
    total = sum(full_seconds) / args.repeats
    for name, seconds in per_iter.items():
        print(f"{name:<26}{seconds:>14.3f}{seconds / total:>8.1%}{timer.peak_bytes[name] / gib:>10.2f}")
    sampler = sum(sampler_seconds) / args.repeats
    peak_full = max(timer.peak_bytes.values()) / gib
    print(f"{'complete iteration':<26}{total:>14.3f}{1:>8.0%}{peak_full:>10.2f}")
    print(f"{'sampler only':<26}{sampler:>14.3f}{'':>8}{sampler_peak / gib:>10.2f}")
    print(f"\ncomplete / sampler-only time: {total / sampler:.2f}x  (memory: "
          + ("peak GPU memory allocated per component" if device.type == "cuda"
             else "CPU peak resident set of the process so far, which only grows") + ")")
    path = Path(args.json) if args.json else (
        ROOT / "benchmarks" / "results" / f"adft_step-{device.type}-{size}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({
        "what": what, "batch_size": n, "sub_batch_size": sub, "steps": args.steps, "repeats": args.repeats,
        "seconds_per_component": per_iter, "peak_bytes": dict(timer.peak_bytes), "complete_seconds": total,
        "sampler_only_seconds": sampler, "ratio": total / sampler, "sampler_only_peak_bytes": sampler_peak},
        indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def _progress(iteration: int) -> TrainingProgress:
    p = TrainingProgress()
    p.step = p.data_position = iteration
    return p


if __name__ == "__main__":
    sys.exit(main())
