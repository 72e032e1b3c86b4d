"""scaleup.models: loading (offline errors), tiny and full-size builders, LoRA / soft prompts, seeded generation.

Tiny random models are built once per session, saved with save_pretrained and loaded back through the real loaders
under HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from scaleup.models.errors import ModelNotFoundError, ModelUnavailableError
from scaleup.models.loading import (
    FAMILIES,
    load_clip,
    load_dinov2,
    load_pipeline,
    load_sd15,
    load_sdxl,
    resolve_dtype,
    resolve_model_source,
)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1, no FAIRDIFF_* variables, and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in FAMILIES.values():
        monkeypatch.delenv(spec.env_var, raising=False)
    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    return cache


# ---------------------------------------------------------------------------------------------------------------
# 1. loading: resolution order and the one clear error


@pytest.mark.parametrize("loader, family", [(load_sd15, "sd15"), (load_sdxl, "sdxl"), (load_clip, "clip"),
                                            (load_dinov2, "dinov2")])
def test_missing_default_model_is_one_clear_error(offline, loader, family):
    spec = FAMILIES[family]
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        loader(cache_dir=offline)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert all(repr(i) in message for i in spec.hub_ids)  # every id tried, SD 1.5's mirror included
    assert spec.env_var in message and "`model` argument" in message and spec.layout in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelUnavailableError)


def test_nonexistent_id_fails_in_seconds_even_with_allow_download_when_offline(offline):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-model'.*HF_HUB_OFFLINE.*FAIRDIFF_SD15"):
        load_sd15("no-such-org/no-such-model", allow_download=True, cache_dir=offline)
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-dino'.*FAIRDIFF_DINOV2.*preprocessor_config"):
        load_dinov2("no-such-org/no-such-dino", allow_download=True, cache_dir=offline)
    assert time.perf_counter() - start < 2.0


def test_bad_local_folders_name_what_is_missing(offline, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match=r"not a folder.*model_index.json, unet/, vae/"):
        load_sd15(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"has no model_index.json"):
        load_sd15(empty)
    (empty / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                        "unet": ["diffusers", "UNet2DConditionModel"],
                                                        "safety_checker": [None, None]}))
    with pytest.raises(ModelNotFoundError, match=r"lacks unet/"):
        load_sd15(empty)
    monkeypatch.setenv("FAIRDIFF_CLIP", str(tmp_path / "no-clip"))
    with pytest.raises(ModelNotFoundError, match=r"environment variable FAIRDIFF_CLIP names .*no-clip"):
        load_clip()


def test_resolve_dtype_and_bad_arguments():
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("fp16") is torch.float16 and resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="torch_dtype must be"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="family must be one of"):
        resolve_model_source("sd3")
    with pytest.raises(ValueError, match="family must be 'sd15' or 'sdxl'"):
        load_pipeline("x", family="sd3")
