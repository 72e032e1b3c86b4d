"""``sd-eval``: the real-photo path (both detectors + the shipped gender and age networks on the astronaut photo)
and the whole evaluation on tiny models; without SD weights the full run stops unless missing models are allowed."""

from __future__ import annotations

import pytest

from experiments.runner import run
from scaleup.errors import ModelUnavailableError


def test_quick_run_finds_the_astronauts_face_and_evaluates_tiny_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = run("sd-eval", quick=True, out=tmp_path)
    photo = results["real_photo"]
    for detector in ("dlib", "haar"):
        assert photo[detector]["face_found"]
        assert photo[detector]["gender"]["female"] > 0.9  # Eileen Collins; the network gives 0.98-0.99 here
    overall = results["evaluation"]["overall"]
    assert overall["pooled"]["n_images"] == 6 and overall["pooled"]["no_face_share"] == 1.0
    assert (tmp_path / "sd-eval" / "evaluation" / "records.csv").exists()


def test_full_run_without_weights_stops_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("FAIRDIFF_SD15", raising=False)
    monkeypatch.delenv("FAIRDIFF_CLIP", raising=False)
    with pytest.raises(ModelUnavailableError, match="FAIRDIFF_SD15"):
        run("sd-eval", out=tmp_path / "a")
    results = run("sd-eval", out=tmp_path / "b", allow_missing_models=True)
    assert results["evaluation"] is None and any("FAIRDIFF_SD15" in m for m in results["missing_models"])
    assert results["real_photo"]["dlib"]["face_found"]
