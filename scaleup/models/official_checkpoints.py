"""The aDFT release's exported LoRA weights, converted to diffusers' LoRA format: ``pipe.load_lora_weights`` then
reads them, and ``scaleup.evaluate --lora`` scores the paper's own checkpoints.

The official code (sail-sg/finetune-fair-diffusion, ``2-export-checkpoint.py``) writes ``text_encoder_lora_EMA.pth``
(and ``text_encoder_lora.pth``): a ``torch.save``-d dict of tensors from diffusers 0.17's
``LoraLoaderMixin._modify_text_encoder(..., patch_mlp=True)``, keyed by the text encoder's parameter names,
``text_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.lora_linear_layer.{down,up}.weight`` and
``text_model.encoder.layers.{i}.mlp.{fc1,fc2}.lora_linear_layer.{down,up}.weight``, without alphas (scale 1:
W + up @ down). ``unet_lora_EMA.pth`` holds diffusers 0.17's ``AttnProcsLayers`` of ``LoRAAttnProcessor``:
``{block}.attn{1,2}.processor.to_{q,k,v,out}_lora.{down,up}.weight``, also at scale 1. Both are mapped key by key
to PEFT's ``lora_A`` / ``lora_B`` and saved with ``save_lora_weights`` and a LoraConfig of alpha = rank (scale 1).

The file is read with ``torch.load(weights_only=True)``: a dict of tensors needs no pickled code, and anything else
is refused. (The release's generation code also passes an attention mask to the text encoder, which diffusers'
pipelines do not; the weights are the same, the images of a plain pipeline can differ slightly from the paper's.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = ["convert_adft_lora", "TEXT_ENCODER_KEY", "UNET_KEY"]

TEXT_ENCODER_KEY = re.compile(
    r"^(text_model\.encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12]))\.lora_linear_layer\."
    r"(down|up)\.weight$")
UNET_KEY = re.compile(r"^(.+\.attn[12])\.processor\.to_(q|k|v|out)_lora\.(down|up)\.weight$")
_PEFT = {"down": "lora_A", "up": "lora_B"}


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected an exported text_encoder_lora_EMA.pth / "
                                "unet_lora_EMA.pth of the aDFT release")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding more than tensors (weights_only refuses code)
        raise ValueError(f"{path} is not a dict of tensors saved by torch.save ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no dict of tensors; expected the aDFT release's exported LoRA weights")
    return state


def _rank(state: dict[str, torch.Tensor], path: Path) -> int:
    ranks = {v.shape[0] for k, v in state.items() if k.endswith("down.weight") or k.endswith("lora_A.weight")}
    if len(ranks) != 1:
        raise ValueError(f"{path}: the LoRA matrices have ranks {sorted(ranks)}; expected one rank (the release: 50)")
    return ranks.pop()


def _text_encoder_module(match: re.Match) -> tuple[str, str]:
    """(PEFT module, target name): the release patched the linear layer itself (q_proj, ..., fc2)."""
    module = match.group(1)
    return module, module.rsplit(".", 1)[1]


def _unet_module(match: re.Match) -> tuple[str, str]:
    """(PEFT module, target name): the processor's to_q_lora adapts the attention's to_q (to_out_lora: to_out.0)."""
    block, projection = match.group(1), match.group(2)
    target = "to_out.0" if projection == "out" else f"to_{projection}"
    return f"{block}.{target}", target


#: component -> (key pattern, PEFT module of a match, an example key for the error)
_LAYOUTS = {
    "text_encoder": (TEXT_ENCODER_KEY, _text_encoder_module,
                     "text_model.encoder.layers.N.self_attn.q_proj.lora_linear_layer.down.weight"),
    "unet": (UNET_KEY, _unet_module,
             "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"),
}


def _convert(name: str, state: dict[str, torch.Tensor], path: Path) -> tuple[dict, dict]:
    """The release's keys of ``name`` as PEFT's ``MODULE.lora_A|lora_B.weight``, and the LoRA's targets and rank."""
    pattern, module_of, example = _LAYOUTS[name]
    converted, targets = {}, set()
    for key, value in state.items():
        match = pattern.match(key)
        if match is None:
            raise ValueError(f"{path}: key {key!r} is not a {name} LoRA key of the aDFT release (expected {example} "
                             "and alike)")
        module, target = module_of(match)
        converted[f"{module}.{_PEFT[match.groups()[-1]]}.weight"] = value.float()
        targets.add(target)
    return converted, {"targets": sorted(targets), "rank": _rank(state, path)}


def convert_adft_lora(out: str | os.PathLike, *, text_encoder: str | os.PathLike | None = None,
                      unet: str | os.PathLike | None = None) -> Path:
    """Write ``out/pytorch_lora_weights.safetensors`` from the release's ``text_encoder_lora_EMA.pth`` and/or
    ``unet_lora_EMA.pth``; ``StableDiffusionPipeline.load_lora_weights(out)`` reads it. Returns ``out``."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig

    if text_encoder is None and unet is None:
        raise ValueError("give text_encoder= and/or unet=: the .pth files exported by the aDFT release")
    layers, metadata = {}, {}
    for name, path in (("text_encoder", text_encoder), ("unet", unet)):
        if path is None:
            continue
        path = Path(path)
        converted, info = _convert(name, _load(path), path)
        config = LoraConfig(r=info["rank"], lora_alpha=info["rank"], target_modules=info["targets"],
                            init_lora_weights=False)  # alpha = rank: scale 1, as the release's layers apply them
        layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(converted)
        metadata[f"{name}_lora_adapter_metadata"] = config.to_dict()
    StableDiffusionPipeline.save_lora_weights(Path(out), **layers, **metadata, safe_serialization=True)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m scaleup.models.official_checkpoints",
                                     description="Convert the aDFT release's exported LoRA (.pth) to diffusers' "
                                                 "LoRA format (pipe.load_lora_weights, scaleup.evaluate --lora).")
    parser.add_argument("--text-encoder", help="text_encoder_lora_EMA.pth of the release")
    parser.add_argument("--unet", help="unet_lora_EMA.pth of the release")
    parser.add_argument("--out", required=True, help="folder to write pytorch_lora_weights.safetensors into")
    args = parser.parse_args(argv)
    try:
        out = convert_adft_lora(args.out, text_encoder=args.text_encoder, unet=args.unet)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"official_checkpoints: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'pytorch_lora_weights.safetensors'}; load it with pipe.load_lora_weights({str(out)!r}) or "
          f"python -m scaleup.evaluate --lora {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
