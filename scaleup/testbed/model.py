"""The testbed's components: exactly Stable Diffusion 1.5's component types, at the size of 16 x 16 digits.

- ``AutoencoderKL``: 16 x 16 x 3 <-> 4 x 8 x 8 (one downsampling, SD's four latent channels);
- ``CLIPTextModel``: 2 layers, width 64, a 16-token context, over a word-level ``CLIPTokenizer`` (every testbed word
  one token, any other text still encodable byte by byte). Its word embeddings are all-MiniLM-L6-v2's embeddings of
  the words, frozen: SD's text encoder comes pretrained, and places related words (occupations, here digits) near
  one another, which a correction learned on some prompts needs in order to reach the others (seed 000 [0127]);
- ``UNet2DConditionModel``: two levels (32, 64 channels) on 8 x 8 latents, cross-attention at the lowest one;
- ``DPMSolverMultistepScheduler`` on SD's scaled-linear betas (0.00085..0.012, 1000 steps), as SD 1.5 ships it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scaleup.models.tiny import seeded
from scaleup.testbed.data import CONTEXT_LENGTH, IMAGE_SIZE, vocabulary

TEXT_WIDTH = 64
LATENT_CHANNELS = 4


def testbed_tokenizer(folder: str | Path):
    """The word-level ``CLIPTokenizer`` of the testbed, its files written to ``folder``."""
    from scaleup.models.tiny import tiny_clip_tokenizer

    # enough merges for every word to become one token; the BPE learner stops once no pair is left
    return tiny_clip_tokenizer(folder, corpus=vocabulary(), context_length=CONTEXT_LENGTH, num_merges=10_000)


def testbed_text_encoder(vocab_size: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH,
                            projection_dim=TEXT_WIDTH, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                            bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return seeded(seed, lambda: CLIPTextModel(config))


def testbed_vae(seed: int):
    from diffusers import AutoencoderKL

    return seeded(seed, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=IMAGE_SIZE))


def testbed_unet(seed: int):
    from diffusers import UNet2DConditionModel

    return seeded(seed, lambda: UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH, attention_head_dim=8,
        norm_num_groups=8))


def testbed_scheduler():
    """SD 1.5's noise schedule in diffusers' DPM-Solver++ (2M), the default sampler of the jobs."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
                                       algorithm_type="dpmsolver++", solver_order=2)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
