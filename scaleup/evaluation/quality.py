"""Quality scores of generated images, each optional and loaded by path (issue 20): FID and KID against a reference
folder, with torchmetrics' implementations, and PickScore with its CLIP model.

    python -m scaleup.evaluation.quality --generated runs/popalign/generated/images --reference /data/ffhq-1k \\
        --features inception:/models/pt_inception-2015-12-05.pth --pickscore /models/PickScore_v1 --prompt "..."

``--features`` names what FID / KID measure: ``inception:PATH`` is torchmetrics' FID Inception-v3 (needs
``torch-fidelity`` and the weights file, which no machine here has), ``package.module:factory`` any image embedder
of the user's (a module mapping images in [0, 1] to feature rows, e.g. the testbed's stroke-shape embedder). FID and
KID are not hand-written: torchmetrics computes them, and the tests check it against :mod:`theory.quality_scores`.
HPSv2 (``--hpsv2 HPS_v2.1_compressed.pt``) is its open_clip ViT-H-14 with the HPS weights, loaded by open_clip, so it
runs where open_clip does (the second environment with torchvision; see tests/test_perception_open_clip.py).
ImageReward is not wrapped: its BLIP model and BERT tokenizer come only through the ``image-reward`` package, which
downloads them on load.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from theory.quality_scores import pick_score

__all__ = ["feature_extractor", "fid_kid", "HpsV2Scorer", "PickScorer", "read_images"]


def feature_extractor(spec: str) -> torch.nn.Module:
    """The feature module named by ``spec``: ``inception:PATH`` or ``package.module:factory`` (module docstring)."""
    if spec.startswith("inception:"):
        path = Path(spec.split(":", 1)[1])
        if not path.is_file():
            raise FileNotFoundError(f"--features {spec}: {path} does not exist; pass the FID Inception-v3 weights "
                                    "(pt_inception-2015-12-05-6726825d.pth) or your own package.module:factory")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as err:  # torchmetrics' Inception lives behind torch-fidelity
            raise ValueError(f"--features inception needs torch-fidelity ({err}); pip install torch-fidelity") from None
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=str(path))
    if spec.count(":") != 1:
        raise ValueError(f"--features {spec!r}: expected inception:PATH or package.module:factory")
    module_name, factory = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--features {spec!r}: cannot import {module_name} ({err})") from None
    if not hasattr(module, factory):
        raise ValueError(f"--features {spec!r}: {module_name} has no {factory}")
    made = getattr(module, factory)()
    if not isinstance(made, torch.nn.Module):
        raise ValueError(f"--features {spec!r}: {factory}() returned a {type(made).__name__}, not a torch module")
    return made.eval()


class _Rows(torch.nn.Module):
    """The user's embedder as torchmetrics wants it: float64 rows, one per image."""

    def __init__(self, embed: torch.nn.Module):
        super().__init__()
        self.embed = embed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # torchmetrics' set_dtype may have moved the embedder to float64: feed it its own dtype
        parameter = next(self.embed.parameters(), None)
        with torch.no_grad():
            return self.embed(images.to(parameter.dtype if parameter is not None else torch.float32)).flatten(1).double()


def fid_kid(generated: torch.Tensor, reference: torch.Tensor, features: torch.nn.Module, *,
            kid_subsets: int = 100, kid_subset_size: int | None = None, batch_size: int = 64) -> dict:
    """FID and KID (mean and sd over subsets) of ``generated`` against ``reference``, images (N, 3, H, W) in [0, 1],
    through torchmetrics with ``features`` as the feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for name, images in (("generated", generated), ("reference", reference)):
        if images.ndim != 4 or images.shape[1] != 3 or len(images) < 2:
            raise ValueError(f"{name} must be (N >= 2, 3, H, W) images; got shape {tuple(images.shape)}")
    rows = _Rows(features)
    subset = kid_subset_size or min(len(generated), len(reference))
    fid = FrechetInceptionDistance(feature=rows, normalize=True, input_img_size=tuple(generated.shape[1:]))
    kid = KernelInceptionDistance(feature=rows, normalize=True, subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.set_dtype(torch.float64)
        for real, images in ((True, reference), (False, generated)):
            for start in range(0, len(images), batch_size):
                metric.update(images[start:start + batch_size], real=real)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subsets": kid_subsets, "kid_subset_size": subset, "n_generated": len(generated),
            "n_reference": len(reference), "implementation": "torchmetrics"}


class PickScorer:
    """PickScore (Kirstain et al. 2023) of images and their prompts with a CLIP model loaded by path (its
    ``logit_scale`` is the learned temperature): :func:`theory.quality_scores.pick_score`."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--pickscore {path}: no config.json there; expected a transformers CLIPModel "
                                    "folder (yuvalkirstain/PickScore_v1, saved with save_pretrained)")
        self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval().to(device)
        self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        pixels = self.processor(images=[np.asarray(i.permute(1, 2, 0).clamp(0, 1) * 255, dtype=np.uint8)
                                        for i in images], return_tensors="pt", do_rescale=True)["pixel_values"]
        text = self.processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True)
        image_rows = self.model.get_image_features(pixel_values=pixels.to(self.device))
        text_rows = self.model.get_text_features(**{k: v.to(self.device) for k, v in text.items()})
        image_rows = getattr(image_rows, "pooler_output", image_rows)
        text_rows = getattr(text_rows, "pooler_output", text_rows)
        return pick_score(image_rows.double().cpu().numpy(), text_rows.double().cpu().numpy(),
                          float(self.model.logit_scale.exp()))


class HpsV2Scorer:
    """HPSv2 (Wu et al. 2023) of images and their prompts: the open_clip model ``model_name`` with the HPS checkpoint
    at ``checkpoint`` (``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt``, a ``{"state_dict": ...}`` file that
    open_clip's loader reads with ``weights_only``), images preprocessed as open_clip's validation transform,
    :func:`theory.quality_scores.hps_v2`."""

    def __init__(self, checkpoint: str | Path, model_name: str = "ViT-H-14", device: str = "cpu"):
        import open_clip  # needs torchvision: the second environment

        from scaleup.perception.embedders import OpenClipEmbedder

        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"--hpsv2 {checkpoint}: no such file; expected the HPSv2 checkpoint "
                                    "(HPS_v2.1_compressed.pt from xswu/HPSv2)")
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint), device=device)
        self.embedder = OpenClipEmbedder(model.eval(), open_clip.get_tokenizer(model_name))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        from theory.quality_scores import hps_v2

        return hps_v2(self.embedder(images).double().cpu().numpy(),
                      self.embedder.embed_texts(list(prompts)).double().cpu().numpy())


def read_images(folder: str | Path, size: int) -> torch.Tensor:
    """Every image directly in ``folder``, resized to ``size`` x ``size``, as (N, 3, size, size) in [0, 1]."""
    from scaleup.perception.labelled_faces import IMAGE_SUFFIXES, load_image_batch

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise ValueError(f"{folder} holds {len(paths)} image(s); FID and KID need at least 2")
    return load_image_batch(paths, size)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m scaleup.evaluation.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--generated", required=True, help="folder of generated images")
    parser.add_argument("--reference", help="folder of reference images (FID / KID)")
    parser.add_argument("--features", help="inception:PATH or package.module:factory (FID / KID)")
    parser.add_argument("--size", type=int, default=299, help="images are resized to this square size")
    parser.add_argument("--pickscore", help="PickScore CLIP model folder")
    parser.add_argument("--hpsv2", help="HPSv2 checkpoint file (needs open_clip)")
    parser.add_argument("--prompt", help="the prompt of every generated image (PickScore, HPSv2)")
    args = parser.parse_args(argv)
    try:
        generated = read_images(args.generated, args.size)
        out: dict = {"generated": args.generated}
        if args.reference or args.features:
            if not (args.reference and args.features):
                raise ValueError("FID / KID need both --reference and --features")
            out["fid_kid"] = fid_kid(generated, read_images(args.reference, args.size),
                                     feature_extractor(args.features))
        for key, label, path, scorer in (("pickscore", "PickScore", args.pickscore, PickScorer),
                                         ("hpsv2", "HPSv2", args.hpsv2, HpsV2Scorer)):
            if path:
                if not args.prompt:
                    raise ValueError(f"{label} needs --prompt")
                scores = scorer(path)(generated, [args.prompt] * len(generated))
                out[key] = {"mean": float(scores.mean()), "sd": float(scores.std(ddof=1))}
    except (ValueError, FileNotFoundError) as err:
        print(f"scaleup.evaluation.quality: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
