"""Reading the preference dataset for training: winner/loser pairs, their order, their pixels.

A training example is a pair (x^w_i, x^l_i): position i of a winning set and position i of its losing set, with the
set's caption (the neutral prompt). The public PopAlign code trains on such pairs (its ``jpg_0`` / ``jpg_1``
layout); here they are read from ``metadata.jsonl`` (:mod:`.build`), and a table that names an image that is not
there is refused before any model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

METADATA_FILE = "metadata.jsonl"
_REQUIRED = ("file_name", "caption", "set_id", "role", "position")


@dataclass(frozen=True)
class PreferencePair:
    """Position ``position`` of set pair ``set_id``: the winning and losing images and the shared caption."""

    caption: str
    winner: Path
    loser: Path
    set_id: int
    position: int


def read_preference_pairs(folder: str | Path) -> list[PreferencePair]:
    """The pairs of a dataset folder, ordered by set and position.

    Raises
    ------
    ValueError
        If the folder has no ``metadata.jsonl``, a row lacks a column or has an unknown role, a set's winners and
        losers do not pair up position by position or disagree on the caption, or any listed image is missing.
    """
    folder = Path(folder)
    table = folder / METADATA_FILE
    if not table.is_file():
        raise ValueError(f"data: {folder} is not a preference dataset (no {METADATA_FILE}); build one with "
                         "`python -m scaleup.jobs.popalign build-sets`")
    sets: dict[int, dict] = {}
    missing = []
    for number, line in enumerate(table.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"data: {table} line {number} is not JSON ({err.msg})") from None
        absent = [k for k in _REQUIRED if k not in row]
        if absent:
            raise ValueError(f"data: {table} line {number} lacks {', '.join(absent)}; every row needs "
                             f"{', '.join(_REQUIRED)}")
        if row["role"] not in ("winner", "loser"):
            raise ValueError(f"data: {table} line {number} has role {row['role']!r}; expected winner or loser")
        path = folder / row["file_name"]
        if not path.is_file():
            missing.append(row["file_name"])
        entry = sets.setdefault(int(row["set_id"]), {"caption": row["caption"], "winner": {}, "loser": {}})
        if row["caption"] != entry["caption"]:
            raise ValueError(f"data: set {row['set_id']} in {table} has two captions ({entry['caption']!r}, "
                             f"{row['caption']!r}); a set pair has one caption, the neutral prompt")
        entry[row["role"]][int(row["position"])] = path
    if missing:
        raise ValueError(f"data: {len(missing)} image(s) named in {table} do not exist, e.g. {folder / missing[0]}; "
                         "rebuild the dataset with build-sets or restore the images")
    pairs = []
    for set_id in sorted(sets):
        entry = sets[set_id]
        if sorted(entry["winner"]) != sorted(entry["loser"]) or not entry["winner"]:
            raise ValueError(f"data: set {set_id} in {table} has winner positions {sorted(entry['winner'])} and "
                             f"loser positions {sorted(entry['loser'])}; they must pair up one to one")
        pairs += [PreferencePair(entry["caption"], entry["winner"][i], entry["loser"][i], set_id, i)
                  for i in sorted(entry["winner"])]
    if not pairs:
        raise ValueError(f"data: {table} lists no images")
    _check_images_decode([p for pair in pairs for p in (pair.winner, pair.loser)], table)
    return pairs


def _check_images_decode(paths: Sequence[Path], table: Path) -> None:
    """Every image passes PIL's integrity check (``verify``: headers and, for PNG, every chunk's CRC, without
    decoding the pixels, so it stays cheap on large datasets), so a corrupt file stops the run here, before any
    model loads, and not mid-training when its batch comes (issue 19)."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"data: image {path} (listed in {table}) cannot be read ({type(err).__name__}: {err}); "
                             "rebuild the dataset with build-sets or replace the file") from None


def set_pairs(pairs: Sequence[PreferencePair]) -> dict[int, list[PreferencePair]]:
    """The pairs grouped by set pair (for the set-level reward accuracy of App. E)."""
    grouped: dict[int, list[PreferencePair]] = {}
    for p in pairs:
        grouped.setdefault(p.set_id, []).append(p)
    return grouped


def batch_indices(n_pairs: int, batch_per_process: int, num_processes: int, process_index: int, step: int,
                  seed: int) -> list[int]:
    """This process's pair indices for data position ``step``: slice ``process_index`` of the global batch.

    The pairs are visited in epochs, each a permutation drawn from ``SeedSequence([seed, epoch])``; the global
    batch of step s holds visits s * G .. (s + 1) * G - 1 (G = batch_per_process x num_processes), so the order is a
    function of (seed, step) alone and a resumed run draws the same batches.
    """
    global_batch = batch_per_process * num_processes
    start = step * global_batch + process_index * batch_per_process
    out, cache = [], {}
    for visit in range(start, start + batch_per_process):
        epoch, offset = divmod(visit, n_pairs)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n_pairs)
        out.append(int(cache[epoch][offset]))
    return out


def load_pixels(paths: Sequence[Path], resolution: int) -> tuple[torch.Tensor, list[tuple[int, int]],
                                                                  list[tuple[int, int]]]:
    """Images resized (shorter side = ``resolution``) and centre-cropped, in [-1, 1], with SDXL's micro-conditioning.

    Returns pixels (B, 3, R, R), the original sizes (height, width) and the crops' top-left corners (top, left), as
    diffusers' SDXL training scripts record them for ``add_time_ids``.
    """
    from PIL import Image

    arrays, sizes, corners = [], [], []
    for path in paths:
        image = Image.open(path).convert("RGB")
        sizes.append((image.height, image.width))
        scale = resolution / min(image.height, image.width)
        h, w = max(resolution, round(image.height * scale)), max(resolution, round(image.width * scale))
        if (h, w) != (image.height, image.width):
            image = image.resize((w, h), Image.BICUBIC)
        top, left = (h - resolution) // 2, (w - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        corners.append((top, left))
        arrays.append(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return pixels, sizes, corners
