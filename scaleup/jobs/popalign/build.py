"""Stage 2: filter the generated images, draw the set pairs, write the preference dataset.

The dataset folder is a Hugging Face ``imagefolder``: ``images/*.png`` and one ``metadata.jsonl`` row per image
of a set (``file_name``, ``caption`` = the neutral prompt, ``prompt`` = the prompt that made it, ``keyword``,
``seed``, ``set_id``, ``role`` winner/loser, ``position``, ``has_face``, ``probs``, ``label``, ``verdict``), so
``datasets.load_dataset("imagefolder", data_dir=OUT)`` reads it. ``pairs.jsonl`` lists the same pairs in the
``jpg_0`` / ``jpg_1`` / ``caption`` / ``label_0`` layout of the diffusers Diffusion-DPO example (jpg_0 the winner),
``build_report.json`` counts what was dropped and why, and ``README.md`` is the data card.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from scaleup.atomic_write import atomic_write_text, check_writable_folder
from scaleup.job_config import config_to_dict
from scaleup.jobs.popalign.config import BuildSetsConfig
from scaleup.jobs.popalign.dataset_card import data_card
from scaleup.jobs.popalign.generation import read_generation
from scaleup.jobs.popalign.keywords import KeywordSet
from scaleup.jobs.popalign.sanity import (FILTER_MODES, OK, UNCHECKED, check_pair, check_perception, judge_image,
                                          make_perception, perceive_records)
from scaleup.jobs.popalign.sets import draw_prompt_sets

METADATA_FILE = "metadata.jsonl"
PAIRS_FILE = "pairs.jsonl"
REPORT_FILE = "build_report.json"


def validate(config: BuildSetsConfig, keywords: KeywordSet) -> np.ndarray:
    """Check the settings before any image is read; returns the target over the keywords."""
    if isinstance(config.set_size, bool) or not isinstance(config.set_size, int) or config.set_size < 1:
        raise ValueError(f"set_size must be a positive integer (N images per set); got {config.set_size!r}")
    if config.sets_per_prompt is not None and config.sets_per_prompt < 1:
        raise ValueError(f"sets_per_prompt must be a positive integer or None; got {config.sets_per_prompt!r}")
    if config.filter not in FILTER_MODES:
        raise ValueError(f"filter must be one of {', '.join(FILTER_MODES)}; got {config.filter!r}")
    if not 0.0 <= config.min_confidence <= 1.0:
        raise ValueError(f"min_confidence must lie in [0, 1]; got {config.min_confidence!r}")
    if config.link not in ("hardlink", "copy"):
        raise ValueError(f"link must be hardlink or copy; got {config.link!r}")
    if config.filter != "off":
        check_perception(keywords.attribute, config.detector, config.classifier)
    return keywords.target(config.target)


def _keyword_set(settings: dict) -> KeywordSet:
    spec = settings["keyword_set"]
    return KeywordSet(spec["name"], tuple(spec["keywords"]), spec["attribute"],
                      tuple(spec["classes"]) if spec["classes"] else None)


def _place(src: Path, dst: Path, link: str) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link == "hardlink":
        try:
            os.link(src, dst)  # one file on disk however many sets share the image
            return "hardlink"
        except OSError:
            pass  # another filesystem or no link support: copy instead
    shutil.copy2(src, dst)
    return "copy"


def run_build_sets(config: BuildSetsConfig, *, perception=None, reuse: bool = False,
                   progress: bool = True) -> dict:
    """Filter, draw and write the dataset (module docstring); returns the report (also in ``build_report.json``).

    ``perception``: a ready :class:`.sanity.Perception` (tests pass stubs); None builds the configured one.
    ``reuse``: draw each set from the whole pools (the public code's sampling) instead of disjoint sets.
    Launched on several processes, each perceives its share of the images; the main process alone draws and writes.
    """
    from scaleup.processes import process_state

    state = process_state()
    generated = Path(config.generated)
    settings, records = read_generation(generated)
    keywords = _keyword_set(settings)
    target = validate(config, keywords)
    out = Path(config.out)
    if (out / METADATA_FILE).exists():
        raise ValueError(f"out: {out} already holds a preference dataset ({METADATA_FILE}); choose another folder "
                         "so that it is not overwritten")
    check_writable_folder(out, option="--out")  # before the images are perceived
    if config.filter != "off":
        if perception is None:
            perception = make_perception(keywords.attribute, config.detector, config.classifier,
                                         clip_model=config.clip_model, seed=config.seed)
        _perceive_split(records, generated, perception, state, progress=progress)
    report = _build(config, settings, records, keywords, target, perception, reuse=reuse,
                    write=state.is_main_process)
    state.wait_for_everyone()  # the others read the report the main process wrote
    return report if state.is_main_process else json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))


def _perceive_split(records: list[dict], root: Path, perception, state, *, progress: bool,
                    batch_size: int = 16) -> None:
    """:func:`.sanity.perceive_records` over every process: each takes whole batches of the one-process run (so each
    image is classified in the same batch either way), and every process ends with every record's verdict."""
    from accelerate.utils import gather_object

    starts = list(range(0, len(records), batch_size))[state.process_index::state.num_processes]
    # only the last batch of all can be short, and it ends its process's list: chunks of ``mine`` are those batches
    mine = [r for start in starts for r in records[start:start + batch_size]]
    perceive_records(mine, root, perception, batch_size=batch_size, progress=progress and state.is_main_process)
    if state.num_processes == 1:
        return
    found = {r["file"]: (r["has_face"], r["probs"]) for r in gather_object([
        {"file": r["file"], "has_face": r["has_face"], "probs": r["probs"]} for r in mine])}
    for r in records:
        r["has_face"], r["probs"] = found[r["file"]]


def _build(config: BuildSetsConfig, settings: dict, records: list[dict], keywords: KeywordSet, target: np.ndarray,
           perception, *, reuse: bool, write: bool = True) -> dict:
    """Judge, draw and (``write``) write the dataset; every process runs it, so that a refusal (no set pair) is
    raised on each of them rather than leaving the others waiting, and only the main process writes."""
    out = Path(config.out)
    generated = Path(config.generated)
    class_target = keywords.class_target(target)
    for r in records:
        if config.filter == "off":
            r["has_face"], r["probs"], r["verdict"] = None, None, UNCHECKED
            continue
        expected = keywords.class_index(r["keyword"]) if r["keyword"] is not None else None
        r["verdict"] = judge_image(r["has_face"], r["probs"], expected, config.min_confidence)

    by_prompt: dict[int, dict] = {}
    for r in records:
        entry = by_prompt.setdefault(r["neutral_index"], {"prompt": r["neutral_prompt"], "losers": [],
                                                          "winners": {k: [] for k in keywords.keywords}})
        eligible = config.filter != "apply" or r["verdict"] == OK
        if eligible:
            (entry["losers"] if r["keyword"] is None else entry["winners"][r["keyword"]]).append(r)

    def check(winners, losers):
        return check_pair(winners, losers, class_target if config.filter != "off" else None,
                          require_winner_closer=config.require_winner_closer)

    streams = np.random.SeedSequence(config.seed).spawn(max(by_prompt) + 1 if by_prompt else 0)
    image_verdicts: dict[str, dict[str, int]] = {"neutral": {}, "augmented": {}}
    for r in records:
        kind = "neutral" if r["keyword"] is None else "augmented"
        image_verdicts[kind][r["verdict"]] = image_verdicts[kind].get(r["verdict"], 0) + 1
    report = {"config": config_to_dict(config), "generation": {k: settings[k] for k in (
        "pipeline", "prompts", "images_per_neutral", "images_per_augmented", "num_inference_steps",
        "guidance_scale", "seed")}, "keywords": list(keywords.keywords), "attribute": keywords.attribute,
        "target": target.tolist(), "class_target": None if class_target is None else class_target.tolist(),
        "filter": {"mode": config.filter, "applied": config.filter == "apply",
                   **(perception.description if perception is not None else {"detector": None,
                                                                              "classifier": None})},
        "images": {"checked": len(records), "verdicts": image_verdicts}, "pairs_dropped": {},
        "pairs_flagged_not_dropped": {}, "prompts_without_sets": {}, "reuse_images": reuse}

    rows, pairs, placements = [], [], []
    set_id = 0
    for index in sorted(by_prompt):
        entry = by_prompt[index]
        drawn = draw_prompt_sets(entry["winners"], entry["losers"], keywords.keywords, target, config.set_size,
                                 np.random.default_rng(streams[index]), max_sets=config.sets_per_prompt,
                                 reuse=reuse, check=check, apply_check=config.filter == "apply")
        for key, counts in (("pairs_dropped", drawn.dropped), ("pairs_flagged_not_dropped", drawn.flagged)):
            for reason, n in counts.items():
                report[key][reason] = report[key].get(reason, 0) + n
        if not drawn.pairs:
            reason = drawn.shortage or "no_pair_passed"
            report["prompts_without_sets"][entry["prompt"]] = reason
        for winners, losers in drawn.pairs:
            names = {}
            for role, members in (("winner", winners), ("loser", losers)):
                for position, r in enumerate(members):
                    name = f"images/{set_id:06d}-{role[0]}{position}.png"
                    placements.append((generated / r["file"], out / name))
                    names[role, position] = name
                    rows.append({"file_name": name, "caption": entry["prompt"], "prompt": r["prompt"],
                                 "keyword": r["keyword"], "seed": r["seed"], "set_id": set_id, "role": role,
                                 "position": position, "neutral_index": index, "has_face": r["has_face"],
                                 "probs": r["probs"], "label": _label(r["probs"], perception),
                                 "verdict": r["verdict"], "source": r["file"]})
            pairs += [{"jpg_0": names["winner", i], "jpg_1": names["loser", i], "caption": entry["prompt"],
                       "label_0": 1, "set_id": set_id} for i in range(config.set_size)]
            set_id += 1
    if not rows:
        raise ValueError("no set pair could be built: " + "; ".join(
            f"{p!r}: {why}" for p, why in list(report["prompts_without_sets"].items())[:5])
            + ". Generate more images per prompt, lower set_size, or check the filter counts in the report")
    if not write:
        return report
    linked = {_place(src, dst, config.link) for src, dst in placements}
    report.update(set_pairs=set_id, rows=len(rows), set_size=config.set_size, linked_as=sorted(linked),
                  class_names=list(perception.class_names) if perception is not None and
                  perception.class_names is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PAIRS_FILE, "".join(json.dumps(p) + "\n" for p in pairs))
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "README.md", data_card(report, settings))
    atomic_write_text(out / METADATA_FILE, "".join(json.dumps(r) + "\n" for r in rows))  # last: marks it complete
    return report


def _label(probs, perception) -> str | None:
    if probs is None or perception is None or perception.class_names is None:
        return None
    return perception.class_names[int(np.argmax(probs))]
