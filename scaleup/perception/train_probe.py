"""Train a CLIP probe (linear or MLP head) for an attribute on a labelled face folder, and report its held-out
accuracy (seed 000 [0121]-[0124], [0132]).

    python -m scaleup.perception.train_probe --clip /models/clip-vit-h-14 --attribute gender \\
        --layout celeba --root /data/celeba --out /runs/gender-probe

writes ``OUT/head.safetensors`` + ``OUT/probe.json`` (classes, sizes, train / evaluation accuracy, per-class
accuracy and confusion matrix, data and seed), loadable with :func:`scaleup.perception.linear_probe.load_probe`.
The evaluation split is the dataset's own (FairFace val CSV, CelebA test partition) or a stratified random
``--eval-fraction``. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from scaleup.atomic_write import check_writable_folder
from scaleup.processes import check_device

from .attributes import ATTRIBUTES
from .embedders import ClipEmbedder
from .factory import DETECTORS, make_detector, resolve_attribute
from .labelled_faces import LAYOUTS, load_image_batch, read_labelled_images
from .linear_probe import fit_probe, save_probe

__all__ = ["embed_paths", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scaleup.perception.train_probe",
                                description="Fit a linear / MLP attribute probe on CLIP image features.")
    p.add_argument("--clip", required=True, help="local folder of a transformers CLIPModel (+ processor), as "
                   "written by save_pretrained")
    p.add_argument("--attribute", required=True, help=f"{', '.join(ATTRIBUTES)}, or your own as name:class1,class2 "
                   "(with --layout folder: one sub-folder per class)")
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--labels", default=None, help="labels file (FairFace CSV / CelebA list_attr_celeba.txt) if not "
                   "at its usual place under --root")
    p.add_argument("--out", required=True, help="output folder for head.safetensors + probe.json")
    p.add_argument("--head", choices=("linear", "mlp"), default="linear")
    p.add_argument("--hidden", type=int, default=256, help="hidden units of the MLP head")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    p.add_argument("--eval-fraction", type=float, default=0.2,
                   help="held-out share when the dataset has no evaluation split of its own")
    p.add_argument("--max-images", type=int, default=None, help="random subset of at most this many images")
    p.add_argument("--image-size", type=int, default=224, help="images are loaded at this square size")
    p.add_argument("--detect-faces", choices=("none", *DETECTORS), default="none",
                   help="crop the largest face first (skipping images without one); FairFace / CelebA images are "
                   "face crops already")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def embed_paths(embedder, paths: list[Path], *, image_size: int, batch_size: int, detector=None,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm embeddings (N, D) of the images at ``paths`` and a (N,) mask of those kept (a face was found)."""
    from .faces import crop_largest_faces

    features, kept = [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(paths), batch_size), desc="embedding", unit="batch"):
            images = load_image_batch(paths[start:start + batch_size], image_size).to(device)
            if detector is not None:
                images, faces = crop_largest_faces(images, detector, image_size)
                kept.append(faces.found.numpy())
            else:
                kept.append(np.ones(images.shape[0], dtype=bool))
            features.append(embedder(images).float().cpu().numpy())
    return np.concatenate(features), np.concatenate(kept)


def _split(labels: np.ndarray, is_eval: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    if is_eval is not None:
        return is_eval
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    _, eval_index = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    mask = np.zeros(len(labels), dtype=bool)
    mask[eval_index] = True
    return mask


def _check_clip_folder(folder: str) -> Path:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ValueError(f"--clip {folder!r} is not a saved CLIPModel folder (config.json + weights, from "
                         "CLIPModel.save_pretrained); nothing is downloaded")
    return path


def _load_clip(folder: str, device: str) -> ClipEmbedder:
    from transformers import CLIPModel, CLIPProcessor

    path = _check_clip_folder(folder)
    model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval().requires_grad_(False).to(device)
    try:
        processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError):  # no processor files saved beside the model: CLIP's defaults
        processor = None
    return ClipEmbedder(model, processor)


def run(args: argparse.Namespace) -> dict:
    if not 0 < args.eval_fraction < 1:
        raise ValueError(f"--eval-fraction must be in (0, 1); got {args.eval_fraction}")
    for name in ("hidden", "image_size", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.max_images is not None and args.max_images < 2:
        raise ValueError(f"--max-images must be >= 2; got {args.max_images}")
    check_device(args.device)
    _check_clip_folder(args.clip)
    data = read_labelled_images(args.root, args.layout, resolve_attribute(args.attribute), labels=args.labels)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(1)[0])
    order = np.arange(len(data.paths))
    if args.max_images is not None and len(order) > args.max_images:
        order = np.sort(rng.choice(order, size=args.max_images, replace=False))
    paths = [data.paths[i] for i in order]
    labels = data.labels[order]
    is_eval = _split(labels, None if data.is_eval is None else data.is_eval[order], args.eval_fraction, args.seed)

    check_writable_folder(args.out, option="--out")  # read-only, or a file in the way: before CLIP loads
    embedder = _load_clip(args.clip, args.device)
    detector = None
    if args.detect_faces != "none":
        detector = make_detector(args.detect_faces)
    features, kept = embed_paths(embedder, paths, image_size=args.image_size, batch_size=args.batch_size,
                                 detector=detector, device=args.device)
    train, held_out = kept & ~is_eval, kept & is_eval
    head, report, _ = fit_probe(features[train], labels[train], data.attribute, eval_features=features[held_out],
                                eval_labels=labels[held_out], hidden=0 if args.head == "linear" else args.hidden,
                                C=args.C, seed=args.seed)
    metadata = {
        "clip": str(args.clip), "embedder_dim": embedder.dim, "head_type": args.head,
        "data": {"layout": args.layout, "root": str(args.root), "labels": args.labels, "num_images": len(paths),
                 "num_without_face": int((~kept).sum()), "eval_split": "dataset" if data.is_eval is not None
                 else f"random {args.eval_fraction}"},
        "config": {k: v for k, v in vars(args).items() if k not in ("clip", "root", "labels", "out")},
        "seed": args.seed, "metrics": report.to_dict(),
    }
    save_probe(args.out, head, data.attribute, metadata)
    return metadata


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        meta = run(args)
    except ValueError as err:
        print(f"train_probe: error: {err}", file=sys.stderr)
        return 2
    m = meta["metrics"]
    eval_acc = "n/a" if m["eval_accuracy"] is None else f"{m['eval_accuracy']:.3f}"
    print(f"{args.attribute} probe ({args.head}) on {m['num_train']} images: train accuracy {m['train_accuracy']:.3f}; "
          f"evaluation ({meta['data']['eval_split']}, {m['num_eval']} images) accuracy {eval_acc}; saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
