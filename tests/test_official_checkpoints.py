"""The aDFT release's exported LoRA (issue 20): a synthetic file in its layout converts, loads with
pipe.load_lora_weights, and gives the outputs of the base weights merged by hand with W + up @ down (scale 1)."""

from __future__ import annotations

import copy

import pytest
import torch

from scaleup.models.official_checkpoints import convert_adft_lora
from scaleup.models.tiny import tiny_sd_pipeline

RANK = 3


def _adapt(linear, state: dict, prefix: str, g: torch.Generator) -> None:
    """A random rank-RANK LoRA of ``linear`` stored as ``prefix.down/up.weight`` (the release's keys) and merged into
    ``linear`` by hand: W + up @ down, the scale-1 update the release's layers apply."""
    down = 0.1 * torch.randn(RANK, linear.in_features, generator=g)
    up = 0.1 * torch.randn(linear.out_features, RANK, generator=g)
    state[f"{prefix}.down.weight"], state[f"{prefix}.up.weight"] = down, up
    with torch.no_grad():
        linear.weight += up @ down


def _release_files(pipe, folder):
    """Files as the release's 2-export-checkpoint.py writes them, and the same LoRA merged into copies by hand."""
    g = torch.Generator().manual_seed(0)
    text, merged_text = {}, copy.deepcopy(pipe.text_encoder)
    encoder = getattr(merged_text, "text_model", merged_text).encoder  # transformers 5 dropped the text_model level
    for i, layer in enumerate(encoder.layers):
        for path in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                     "mlp.fc2"):
            _adapt(layer.get_submodule(path), text, f"text_model.encoder.layers.{i}.{path}.lora_linear_layer", g)
    unet, merged_unet = {}, copy.deepcopy(pipe.unet)
    for name in pipe.unet.attn_processors:  # e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor
        attention = merged_unet.get_submodule(name.rsplit(".", 1)[0])
        for projection, linear in (("q", attention.to_q), ("k", attention.to_k), ("v", attention.to_v),
                                   ("out", attention.to_out[0])):
            _adapt(linear, unet, f"{name}.to_{projection}_lora", g)
    folder.mkdir()
    torch.save(text, folder / "text_encoder_lora_EMA.pth")
    torch.save(unet, folder / "unet_lora_EMA.pth")
    return merged_text, merged_unet


def test_a_release_file_converts_and_loads_as_the_hand_merged_weights(tmp_path):
    pipe = tiny_sd_pipeline(0)
    merged_text, merged_unet = _release_files(pipe, tmp_path / "release")
    out = convert_adft_lora(tmp_path / "converted", text_encoder=tmp_path / "release" / "text_encoder_lora_EMA.pth",
                            unet=tmp_path / "release" / "unet_lora_EMA.pth")
    ids = pipe.tokenizer(["a photo of the face of a nurse"], padding="max_length", return_tensors="pt").input_ids
    base_text = pipe.text_encoder(ids)[0]
    pipe.load_lora_weights(str(out))
    with torch.no_grad():
        loaded_text = pipe.text_encoder(ids)[0]
        expected_text = merged_text(ids)[0]
        torch.testing.assert_close(loaded_text, expected_text, rtol=1e-5, atol=1e-5)
        assert (loaded_text - base_text).abs().max() > 1e-3  # the adapter changed something
        latents = torch.randn(1, pipe.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(pipe.unet(latents, 10, encoder_hidden_states=expected_text).sample,
                                   merged_unet(latents, 10, encoder_hidden_states=expected_text).sample,
                                   rtol=1e-4, atol=1e-5)


def test_files_not_in_the_release_layout_are_refused_by_name(tmp_path):
    torch.save({"text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight": torch.zeros(2, 4)},
               tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"key 'text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight' is not"):
        convert_adft_lora(tmp_path / "o", text_encoder=tmp_path / "other.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds no dict of tensors"):
        convert_adft_lora(tmp_path / "o", text_encoder=tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a dict of tensors saved by torch.save"):
        convert_adft_lora(tmp_path / "o", unet=tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_adft_lora(tmp_path / "o", unet=tmp_path / "missing.pth")
