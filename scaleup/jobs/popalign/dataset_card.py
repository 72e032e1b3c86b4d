"""The data card (README.md) of a preference dataset: how it was made, what was dropped, how to read it."""

from __future__ import annotations

import json


def data_card(report: dict, generation: dict) -> str:
    """Markdown describing the dataset of ``report`` (the build report) made from ``generation`` (its settings)."""
    f = report["filter"]
    verdicts = report["images"]["verdicts"]
    applied = "failing images and pairs dropped" if f["applied"] else "verdicts recorded, nothing dropped"
    lines = [
        "# PopAlign population-level preference data",
        "",
        "Set-level preference pairs for PopAlign (seed 001, Sec. 3.1, 5.1), written by `fairdiff` "
        "(`python -m scaleup.jobs.popalign build-sets`).",
        "",
        "## How it was made",
        "",
        f"- Model: `{generation.get('pipeline')}` ({generation.get('family') or 'family from the folder'}), "
        f"{generation['num_inference_steps']} steps, guidance {generation['guidance_scale']}, scheduler "
        f"{generation.get('scheduler')}, dtype {generation.get('torch_dtype')}.",
        f"- Identity-neutral prompts: `{generation['prompts']}` ({len(generation['neutral_prompts'])} prompts); "
        f"{generation['images_per_neutral']} images each (the losing sets' pool).",
        f"- Identity-augmented prompts: keywords {report['keywords']}; {generation['images_per_augmented']} images "
        "each (the winning sets' pool).",
        f"- Every image's seed is recorded (`seed`; base seed {generation['seed']}); "
        "`scaleup.models.generate(pipe, prompt, [seed])` reproduces it.",
        f"- Sanity filter: mode `{f['mode']}` ({applied}); detector: {f.get('detector')}; "
        f"classifier: {f.get('classifier')}.",
        f"- Sets: N = {report['set_size']} images; winning sets follow the target {report['target']} over the "
        f"keywords (systematic sampling of the counts); losing sets come from the neutral prompt; the caption is "
        f"the neutral prompt; {'images reused across sets' if report['reuse_images'] else 'disjoint sets'}.",
        "",
        "## Counts",
        "",
        f"- Images checked: {report['images']['checked']}; verdicts, neutral: {json.dumps(verdicts['neutral'])}; "
        f"augmented: {json.dumps(verdicts['augmented'])}.",
        f"- Set pairs kept: {report['set_pairs']}; dropped: {json.dumps(report['pairs_dropped'])}; flagged but "
        f"kept: {json.dumps(report['pairs_flagged_not_dropped'])}.",
        f"- Prompts without a set pair: {len(report['prompts_without_sets'])} "
        f"{json.dumps(dict(list(report['prompts_without_sets'].items())[:10]))}.",
        "",
        "## Layout",
        "",
        "- `images/*.png` and `metadata.jsonl` (one row per image of a set: `file_name`, `caption`, `prompt`, "
        "`keyword`, `seed`, `set_id`, `role` winner/loser, `position`, `has_face`, `probs` over "
        f"{report.get('class_names')}, `label`, `verdict`, `source`): a Hugging Face imagefolder, "
        "`datasets.load_dataset(\"imagefolder\", data_dir=...)`.",
        "- `pairs.jsonl`: the same pairs as `jpg_0` (winner) / `jpg_1` (loser) / `caption` / `label_0` = 1, the "
        "layout of the diffusers Diffusion-DPO example; position i of a winning set is paired with position i of "
        "its losing set.",
        "- `build_report.json`: everything above as numbers, with the full configuration.",
        "",
    ]
    return "\n".join(lines)
