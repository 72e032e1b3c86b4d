"""The evaluation's records on disk: one JSON file per finished prompt, so an interrupted run resumes where it stopped.

``OUT/records/prompt_NNNNN.json`` is written atomically once a prompt's images are all generated and classified; a
rerun skips every prompt whose file exists. ``OUT/evaluation.json`` holds the settings that determine the images and
their labels: a rerun with other settings into the same folder is refused (naming what differs), so a run never
mixes its records with another run's or overwrites results it did not make. A folder holding no record yet (a run
that failed before its first prompt) binds nothing: a corrected rerun takes it over.

Records are filed by line, and each names its prompt: a record is reused only for the very prompt it was made for,
so a prompt file edited between runs (a line added, removed or changed) is refused with the line that differs
rather than summarised under the wrong prompts. (The images' seeds are keyed by the prompt's text, so a new folder
gives the unchanged prompts their old images again.)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from scaleup.atomic_write import atomic_write_text
from scaleup.evaluation.summary import ImageRecord


class SettingsMismatchError(ValueError):
    """The output folder holds records made with other settings."""


class RecordStore:
    """Per-prompt record files under ``root``, tied to the settings that made them."""

    def __init__(self, root: str | Path, settings: dict[str, Any], *, restart: bool = False):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        settings_path = self.root / "evaluation.json"
        if settings_path.exists() and not restart:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
            differing = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            if differing and any(self.records_dir.glob("prompt_*.json")):
                raise SettingsMismatchError(
                    f"{self.root} holds an evaluation made with other settings ({', '.join(differing)} differ); "
                    "choose another output folder, or pass --restart to discard its records")
        if restart and self.records_dir.exists():
            for path in self.records_dir.glob("prompt_*.json"):
                path.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(settings_path, json.dumps(settings, indent=2, sort_keys=True) + "\n")

    def _path(self, prompt_index: int) -> Path:
        return self.records_dir / f"prompt_{prompt_index:05d}.json"

    def done(self, prompt_index: int, prompt: str | None = None) -> bool:
        """Whether ``prompt_index`` is finished; with ``prompt``, its record must have been made for that prompt."""
        if not self._path(prompt_index).exists():
            return False
        if prompt is not None:
            self.load(prompt_index, prompt)
        return True

    def save(self, prompt_index: int, records: Sequence[ImageRecord]) -> None:
        atomic_write_text(self._path(prompt_index), json.dumps([asdict(r) for r in records]) + "\n")

    def load(self, prompt_index: int, prompt: str | None = None) -> list[ImageRecord]:
        """The records of ``prompt_index``; with ``prompt``, refused when they were made for another prompt."""
        path = self._path(prompt_index)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            records = [ImageRecord(**row) for row in rows]
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"record file {path} is damaged ({err}); delete it to regenerate that prompt") from None
        made_for = {r.prompt for r in records}
        if prompt is not None and made_for != {prompt}:
            raise SettingsMismatchError(
                f"{self.root}: the prompt list changed since its records were made: line {prompt_index + 1} is now "
                f"{prompt!r}, its record {path.name} was made for {', '.join(map(repr, sorted(made_for)))}; choose "
                "another output folder, or pass --restart to discard its records")
        return records


def write_table(path: Path, records: Sequence[ImageRecord], class_names: Sequence[str]) -> None:
    """One CSV row per image (prompt, seed, face box, class probabilities, scores): every metric can be recomputed."""
    columns = ["prompt_index", "prompt", "image_index", "seed", "has_face", "box_x0", "box_y0", "box_x1", "box_y1",
               *[f"p_{name}" for name in class_names], "label", "clip_t", "clip_i", "dino", "content", "requested",
               "similarity"]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in records:
        box = r.box if r.box is not None else [None] * 4
        probs = r.probs if r.probs is not None else [None] * len(class_names)
        label = class_names[r.label] if r.label >= 0 else ""
        writer.writerow([r.prompt_index, r.prompt, r.image_index, r.seed, int(r.has_face), *box, *probs, label,
                         r.clip_t, r.clip_i, r.dino, r.content, r.requested,
                         r.similarity])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())


def read_evaluation(folder: str | Path) -> tuple[dict, list[list[ImageRecord]]]:
    """A finished evaluation's ``results.json`` and its records per prompt, read only (nothing is written)."""
    folder = Path(folder)
    results_path = folder / "results.json"
    if not results_path.is_file():
        raise ValueError(f"{folder} holds no finished evaluation (no results.json); run python -m scaleup.evaluate "
                         f"--out {folder} first")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    per_prompt = []
    for i, summary in enumerate(results["per_prompt"]):
        path = folder / "records" / f"prompt_{i:05d}.json"
        try:
            records = [ImageRecord(**row) for row in json.loads(path.read_text(encoding="utf-8"))]
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"record file {path} is missing or damaged ({err}); rerun the evaluation") from None
        if {r.prompt for r in records} != {summary["prompt"]}:
            raise ValueError(f"record file {path} was not made for {summary['prompt']!r}; rerun the evaluation")
        per_prompt.append(records)
    return results, per_prompt
