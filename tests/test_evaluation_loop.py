"""The evaluation loop with stand-in parts: records, resume, batching invariance, settings guard, metrics."""

from __future__ import annotations

import csv
from itertools import combinations

import numpy as np
import pytest
import torch

from scaleup.evaluation.loop import EvaluationParts, Perceived, image_seed, run_evaluation
from scaleup.evaluation.store import RecordStore, SettingsMismatchError, write_table
from scaleup.evaluation.summary import overall_summary, prompt_summary

CLASSES = ("male", "female")


def _generate(prompt, seeds):
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.rand(3, 8, 8, generator=g))
    return torch.stack(out)


def _perceive(images):
    m = images.mean(dim=(1, 2, 3)).numpy()
    has_face = m > 0.49  # some random images "have no face"
    p1 = np.clip((m - 0.4) * 5, 0.01, 0.99)
    probs = np.stack([p1, 1 - p1], axis=1)
    boxes = [[1.0, 1.0, 6.0, 6.0] if f else None for f in has_face]
    return Perceived(has_face=has_face, boxes=boxes, probs=probs)


def _parts(**kw):
    return EvaluationParts(generate=_generate, perceive=_perceive, class_names=CLASSES,
                           embed_images=lambda x: x.flatten(1)[:, :4] + 0.1, embed_texts=lambda t: torch.ones(1, 4),
                           **kw)


def _all(store, n):
    return [r for i in range(n) for r in store.load(i)]


def test_records_do_not_depend_on_batch_size_and_resume_skips_finished_prompts(tmp_path):
    prompts = ["a photo of a nurse", "a photo of a pilot", "a photo of a judge"]
    a = RecordStore(tmp_path / "a", {"seed": 0})
    assert run_evaluation(_parts(), prompts, a, n_images=7, base_seed=0, batch_size=3, progress=False) == [0, 1, 2]
    b = RecordStore(tmp_path / "b", {"seed": 0})
    run_evaluation(_parts(), prompts, b, n_images=7, base_seed=0, batch_size=5, indices=[1], progress=False)
    assert run_evaluation(_parts(), prompts, b, n_images=7, base_seed=0, batch_size=5, progress=False) == [0, 2]
    assert _all(a, 3) == _all(b, 3)
    assert len({r.seed for r in _all(a, 3)}) == 21


def test_image_seed_is_keyed_by_prompt_text_and_index():
    assert image_seed(0, "x", 3) == image_seed(0, "x", 3)
    assert len({image_seed(0, "x", j) for j in range(100)} | {image_seed(1, "x", j) for j in range(100)}) == 200
    assert 0 <= image_seed(2**40, "y", 0) < 2**63


def test_a_folder_with_other_settings_is_refused_and_restart_discards_it(tmp_path):
    store = RecordStore(tmp_path, {"seed": 0, "steps": 20})
    run_evaluation(_parts(), ["p"], store, n_images=2, base_seed=0, batch_size=2, progress=False)
    with pytest.raises(SettingsMismatchError, match="steps differ"):
        RecordStore(tmp_path, {"seed": 0, "steps": 10})
    fresh = RecordStore(tmp_path, {"seed": 0, "steps": 10}, restart=True)
    assert not fresh.done(0)


def test_summary_matches_a_direct_count(tmp_path):
    store = RecordStore(tmp_path, {})
    run_evaluation(_parts(), ["p"], store, n_images=40, base_seed=3, batch_size=16, progress=False,
                   grid_dir=tmp_path / "grids")
    records = store.load(0)
    faces = [r for r in records if r.has_face]
    assert 0 < len(faces) < 40  # the stand-in perceive leaves some images without a face
    counts = np.zeros(2)
    for r in faces:
        counts[0 if r.probs[0] >= r.probs[1] else 1] += 1
    freq = counts / len(faces)
    summary = prompt_summary(records, CLASSES)
    assert summary["bias"] == pytest.approx(sum(abs(freq[i] - freq[j]) for i, j in combinations(range(2), 2)))
    mean_p = np.mean([r.probs for r in faces], axis=0)
    assert summary["discrepancy"] == pytest.approx(np.sqrt(((mean_p - 0.5) ** 2).sum()))
    assert summary["no_face_share"] == pytest.approx(1 - len(faces) / 40)
    assert (tmp_path / "grids" / "prompt_00000.png").exists()
    overall = overall_summary([summary], records, CLASSES)
    assert overall["pooled"]["bias"] == pytest.approx(summary["bias"])
    write_table(tmp_path / "records.csv", records, CLASSES)
    rows = list(csv.DictReader(open(tmp_path / "records.csv", encoding="utf-8")))
    assert len(rows) == 40 and sum(r["has_face"] == "1" for r in rows) == len(faces)


def test_no_face_anywhere_is_a_handled_case(tmp_path):
    parts = EvaluationParts(generate=_generate, class_names=CLASSES,
                            perceive=lambda x: Perceived(np.zeros(len(x), bool), [None] * len(x), np.full((len(x), 2), .5)))
    store = RecordStore(tmp_path, {})
    run_evaluation(parts, ["p"], store, n_images=3, base_seed=0, batch_size=2, progress=False)
    summary = prompt_summary(store.load(0), CLASSES)
    assert summary["no_face_share"] == 1.0 and summary["bias"] is None and summary["freq"] is None


def test_classifier_with_the_wrong_class_count_fails(tmp_path):
    parts = EvaluationParts(generate=_generate, class_names=("a", "b", "c"), perceive=_perceive)
    with pytest.raises(ValueError, match="returns 2 classes but the attribute has 3"):
        run_evaluation(parts, ["p"], RecordStore(tmp_path, {}), n_images=2, base_seed=0, batch_size=2,
                       progress=False)


def test_progress_counts_images_with_an_eta(tmp_path, capsys):
    """Issue 19: a progress bar over images with an ETA (resumed prompts are not counted)."""
    prompts = ["a photo of a nurse", "a photo of a pilot", "a photo of a judge"]
    store = RecordStore(tmp_path, {"seed": 0})
    run_evaluation(_parts(), prompts, store, n_images=4, base_seed=0, batch_size=4, indices=[0], progress=False)
    run_evaluation(_parts(), prompts, store, n_images=4, base_seed=0, batch_size=4, progress=True)
    shown = capsys.readouterr().err
    assert "images: 100%" in shown and "8/8" in shown and "img" in shown and "prompt 3/3" in shown
