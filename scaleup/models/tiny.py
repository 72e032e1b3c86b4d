"""Tiny randomly initialised models with the real architectures, for tests and CI (no hub, no weights).

Every builder is seeded (the same seed gives bit-identical weights; the global RNG is left untouched) and small
enough that a 2-step 32 x 32 generation runs well under a second on one CPU core. :func:`save_tiny_models` writes
them with ``save_pretrained`` in the layouts the loaders of :mod:`scaleup.models.loading` expect, so tests load
them back through the real loading code under ``HF_HUB_OFFLINE=1``.

The tokenizer is a real CLIP byte-level BPE tokenizer with a tiny vocabulary: every byte, bare and word-final
("</w>"), the merges learned from a few words of this project's prompts, and CLIP's two special tokens last (so
end-of-text has the largest id, as CLIP's pooling by argmax assumes). The configurations follow diffusers' own
pipeline tests (tests/pipelines/stable_diffusion*/), with CLIP's legacy special-token ids (bos 0, pad 1, eos 2) as
in the real SD 1.5 and SDXL text-encoder configs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch
from scaleup.atomic_write import atomic_write_text

TINY_TEXT_HIDDEN = 32
CONTEXT_LENGTH = 77
TINY_IMAGE_SIZE = 32
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Words whose byte pairs become the tiny vocabulary's merges (the occupation template of seed 000 [0120]).
_BPE_CORPUS = ("a photo of the face of a person doctor nurse teacher engineer chef pilot man woman male female "
               "young old white black asian indian latino middle eastern").split()
_NUM_MERGES = 64


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def tiny_bpe_vocab(num_merges: int = _NUM_MERGES, corpus: Sequence[str] = _BPE_CORPUS,
                   ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary layout at toy scale: bytes, bytes + '</w>', learned merges, then the special tokens.

    The merges are learned from the words of ``corpus``; with ``num_merges`` at least the corpus's total length
    every corpus word ends as one token (a word-level vocabulary that still encodes any text, byte by byte).

    Written by hand because the library BPE trainers do not emit CLIP's layout (every byte both bare and
    word-final), which CLIPTokenizer needs to encode any text without unknown tokens.
    """
    base = list(_bytes_to_unicode().values())
    vocab_tokens = base + [c + "</w>" for c in base]
    words = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in corpus)
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[a, b] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties broken by the pair itself: reproducible
        merges.append(best)
        vocab_tokens.append(best[0] + best[1])
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab_tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_tokens)}, merges


def write_tiny_tokenizer_files(folder: str | Path, *, corpus: Sequence[str] = _BPE_CORPUS,
                               num_merges: int = _NUM_MERGES) -> Path:
    """vocab.json and merges.txt of :func:`tiny_bpe_vocab` in ``folder`` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_bpe_vocab(num_merges, corpus)
    atomic_write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(folder / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


def tiny_clip_tokenizer(folder: str | Path | None = None, *, corpus: Sequence[str] = _BPE_CORPUS,
                        context_length: int = CONTEXT_LENGTH, num_merges: int = _NUM_MERGES):
    """A ``CLIPTokenizer`` read from the tiny vocab.json / merges.txt written into ``folder``.

    ``folder`` None: a new temporary folder. ``corpus`` and ``num_merges`` shape the vocabulary
    (:func:`tiny_bpe_vocab`); ``context_length`` is the tokenizer's ``model_max_length`` (CLIP's 77 by default).
    """
    if not isinstance(context_length, int) or context_length < 3:
        raise ValueError(f"context_length must be an integer >= 3 (start, one token, end); got {context_length!r}")
    import tempfile

    from transformers import CLIPTokenizer

    folder = folder if folder is not None else tempfile.mkdtemp(prefix="fairdiff-tokenizer-")
    write_tiny_tokenizer_files(folder, corpus=corpus, num_merges=num_merges)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=context_length, local_files_only=True)


def tiny_vocab_size() -> int:
    return len(tiny_bpe_vocab()[0])


def seeded(seed: int, build):
    """``build()`` with torch's global RNG seeded by ``seed`` for the call only (the initialisation of a model is a
    function of ``seed`` alone; the caller's RNG is left as it was)."""
    # fork_rng keeps the caller's global RNG as it was; manual_seed makes the initialisation a function of seed only.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _text_config(**overrides):
    from transformers import CLIPTextConfig

    kwargs = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=TINY_TEXT_HIDDEN, intermediate_size=37,
                  layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=tiny_vocab_size(),
                  max_position_embeddings=CONTEXT_LENGTH, projection_dim=TINY_TEXT_HIDDEN, hidden_act="quick_gelu")
    kwargs.update(overrides)
    return CLIPTextConfig(**kwargs)


def tiny_clip_text_model(seed: int = 0, *, with_projection: bool = False, hidden_act: str = "quick_gelu"):
    """A 2-layer, 32-wide ``CLIPTextModel`` (or ``CLIPTextModelWithProjection``, SDXL's second encoder)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return seeded(seed, lambda: cls(_text_config(hidden_act=hidden_act)).eval())


def tiny_unet(seed: int = 0, *, sdxl: bool = False):
    """A 2-level ``UNet2DConditionModel``; ``sdxl=True`` adds SDXL's text/time conditioning (cross-attention 64)."""
    from diffusers import UNet2DConditionModel

    common = dict(sample_size=TINY_IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    if sdxl:
        # SDXL: cross-attention on both encoders' states concatenated (32 + 32); added embedding of the pooled
        # text (32) and six size/crop numbers (6 x 8), as in diffusers' SDXL pipeline tests.
        config = dict(block_out_channels=(8, 16), attention_head_dim=(2, 4), use_linear_projection=True,
                      addition_embed_type="text_time", addition_time_embed_dim=8,
                      transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
                      cross_attention_dim=2 * TINY_TEXT_HIDDEN, norm_num_groups=4)
    else:
        config = dict(block_out_channels=(8, 16), attention_head_dim=2, cross_attention_dim=TINY_TEXT_HIDDEN,
                      norm_num_groups=4)
    return seeded(seed, lambda: UNet2DConditionModel(**common, **config).eval())


def tiny_vae(seed: int = 0, *, sdxl: bool = False):
    """A 2-level ``AutoencoderKL`` (4 latent channels, downsampling x2)."""
    from diffusers import AutoencoderKL

    config = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, norm_num_groups=4, sample_size=TINY_IMAGE_SIZE)
    if sdxl:
        config.update(scaling_factor=0.13025, force_upcast=True)
    return seeded(seed, lambda: AutoencoderKL(**config).eval())


def tiny_scheduler(name: str = "dpm++2m"):
    """SD's noise schedule (scaled-linear betas 0.00085..0.012, 1000 steps) in the scheduler ``name``."""
    from diffusers import DDIMScheduler

    from scaleup.models.schedulers import make_scheduler

    base = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    return make_scheduler(name, base.config)


def component_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds for a pipeline's components, spawned from ``seed`` (``SeedSequence.spawn``),
    so that no two components (nor two pipelines of neighbouring seeds) share a random stream."""
    import numpy as np

    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n)]


def tiny_sd_pipeline(seed: int = 0, *, tokenizer_folder: str | Path | None = None,
                      scheduler: str = "dpm++2m"):
    """A tiny ``StableDiffusionPipeline`` (no safety checker); its tokenizer files go to ``tokenizer_folder``."""
    from diffusers import StableDiffusionPipeline

    vae_seed, text_seed, unet_seed = component_seeds(seed, 3)
    return StableDiffusionPipeline(
        vae=tiny_vae(vae_seed), text_encoder=tiny_clip_text_model(text_seed),
        tokenizer=tiny_clip_tokenizer(tokenizer_folder),
        unet=tiny_unet(unet_seed), scheduler=tiny_scheduler(scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def tiny_sdxl_pipeline(seed: int = 0, *, tokenizer_folder: str | Path | None = None,
                      scheduler: str = "dpm++2m"):
    """A tiny ``StableDiffusionXLPipeline``: two text encoders (the second with projection), added conditioning."""
    from diffusers import StableDiffusionXLPipeline

    tokenizer = tiny_clip_tokenizer(tokenizer_folder)
    vae_seed, text_seed, text_2_seed, unet_seed = component_seeds(seed, 4)
    return StableDiffusionXLPipeline(
        vae=tiny_vae(vae_seed, sdxl=True), text_encoder=tiny_clip_text_model(text_seed),
        text_encoder_2=tiny_clip_text_model(text_2_seed, with_projection=True, hidden_act="gelu"),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=tiny_unet(unet_seed, sdxl=True),
        scheduler=tiny_scheduler(scheduler))


def tiny_clip_model(seed: int = 0, *, tokenizer_folder: str | Path | None = None):
    """A tiny transformers ``CLIPModel`` (text and 32 px vision towers, 16-d projections) and ``CLIPProcessor``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    text = _text_config().to_dict()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=TINY_IMAGE_SIZE, patch_size=8, projection_dim=16).to_dict()
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = seeded(seed, lambda: CLIPModel(config).eval())
    image_processor = CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE_SIZE},
                                         crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tiny_clip_tokenizer(tokenizer_folder))


def tiny_dinov2(seed: int = 0):
    """A tiny transformers ``Dinov2Model`` (2 layers, 32 px, patch 8) and its ``BitImageProcessor`` (ImageNet norm)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                          image_size=TINY_IMAGE_SIZE, patch_size=8)
    model = seeded(seed, lambda: Dinov2Model(config).eval())
    processor = BitImageProcessor(size={"shortest_edge": TINY_IMAGE_SIZE}, do_center_crop=True,
                                  crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, processor


def save_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny ``sd15/``, ``sdxl/``, ``clip/`` and ``dinov2/`` folders under ``root`` with ``save_pretrained``.

    Returns ``{family: folder}``; each folder loads with the family's loader (``load_sd15(folder)`` etc.) or through
    its environment variable (``FAIRDIFF_SD15=folder``).
    """
    root = Path(root)
    tokenizer_files = root / "_tokenizer"
    folders = {name: root / name for name in ("sd15", "sdxl", "clip", "dinov2")}
    tiny_sd_pipeline(seed, tokenizer_folder=tokenizer_files).save_pretrained(folders["sd15"])
    tiny_sdxl_pipeline(seed, tokenizer_folder=tokenizer_files).save_pretrained(folders["sdxl"])
    for name, (model, processor) in {"clip": tiny_clip_model(seed, tokenizer_folder=tokenizer_files),
                                     "dinov2": tiny_dinov2(seed)}.items():
        model.save_pretrained(folders[name])
        processor.save_pretrained(folders[name])
    return folders
