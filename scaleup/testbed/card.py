"""The testbed's card (``testbed_card.json``) and prompt files: what a user needs to ask questions of the model.

The card lists the attribute and its classes, the classifiers' ``--classifier`` routes, the training and held-out
prompts and templates, the data's skew per prompt (P(red) and the bias of seed 000 [0124] it implies), the
components' sizes, and how the model was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from scaleup.atomic_write import atomic_write_text
from scaleup.testbed import data

CARD = "testbed_card.json"
#: The evaluation job's settings for the testbed, a config file of ``python -m scaleup.evaluate --config``.
EVALUATE_CONFIG = "evaluate.json"
#: Prompt files under ``prompts/``: a finetune's training prompts, the held-out digits, the held-out template.
PROMPT_FILES = {"training": "training.txt", "heldout_digits": "heldout-digits.txt",
                "heldout_template": "heldout-template.txt", "all": "all.txt"}
CLASSIFIER_ROUTES = {"evaluation": "scaleup.testbed.classifiers:ink_classifier",
                     "training": "scaleup.testbed.classifiers:ink_training_classifier",
                     "content": "scaleup.testbed.classifiers:digit_classifier"}


def prompt_groups() -> dict[str, list[str]]:
    """The testbed's prompts by group; ``all`` is their concatenation in this order."""
    groups = {"training": data.training_prompts(), "heldout_digits": data.heldout_digit_prompts(),
              "heldout_template": data.heldout_template_prompts()}
    groups["all"] = [p for g in groups.values() for p in g]
    return groups


def prompt_group(prompt: str) -> str:
    """Which group a testbed prompt belongs to (``training``, ``heldout_digits``, ``heldout_template``)."""
    for name, prompts in prompt_groups().items():
        if name != "all" and prompt in prompts:
            return name
    raise ValueError(f"{prompt!r} is not a testbed prompt; the testbed's prompts are {prompt_groups()['all']}")


def data_skew() -> dict[str, dict[str, float]]:
    """P(red) in the training data for every testbed prompt, and the bias |P(red) - P(blue)| it implies."""
    out = {}
    for prompt in prompt_groups()["all"]:
        digit = next(w for w in data.DIGIT_WORDS if prompt.endswith(" " + w))
        p = data.P_RED[digit]
        out[prompt] = {"red": p, "blue": 1 - p, "bias": abs(2 * p - 1)}
    return out


def evaluation_settings(confident: float) -> dict:
    """What ``scaleup.evaluate`` needs to know of the testbed beyond the pipeline and prompts (written to
    :data:`EVALUATE_CONFIG`): the attribute, the evaluation and content classifiers, the whole image as the region,
    no CLIP (none exists offline), 16-pixel crops, float32 on the CPU."""
    return {"attribute": "ink:" + ",".join(data.INKS), "classifier": CLASSIFIER_ROUTES["evaluation"],
            "content_classifier": CLASSIFIER_ROUTES["content"], "confident": confident, "detector": "whole-image",
            "clip_t": False, "crop_size": data.IMAGE_SIZE, "dtype": "float32"}


def write_card(folder: str | Path, *, training: dict, classifiers: dict, components: dict) -> dict:
    """Write ``testbed_card.json`` and ``prompts/*.txt`` into the testbed ``folder``; returns the card."""
    folder = Path(folder)
    groups = prompt_groups()
    for name, file in PROMPT_FILES.items():
        atomic_write_text(folder / "prompts" / file, "\n".join(groups[name]) + "\n")
    atomic_write_text(folder / EVALUATE_CONFIG,
                      json.dumps(evaluation_settings(classifiers["confident_threshold"]), indent=2) + "\n")
    card = {
        "name": folder.name,
        "what": "a Stable Diffusion 1.5-architecture text-to-image model trained on scikit-learn's handwritten digits "
                "drawn in red or blue ink; the ink is the protected attribute, skewed per digit",
        "attribute": {"name": "ink", "classes": list(data.INKS), "flag": "ink:" + ",".join(data.INKS)},
        "classifiers": {**CLASSIFIER_ROUTES, "confident_threshold": classifiers["confident_threshold"],
                        "report": classifiers},
        "detector": "whole-image",
        "evaluate_config": EVALUATE_CONFIG,
        "image_size": data.IMAGE_SIZE,
        "context_length": data.CONTEXT_LENGTH,
        "templates": {"training": list(data.TRAINING_TEMPLATES), "heldout": data.HELDOUT_TEMPLATE},
        "heldout_digits": list(data.HELDOUT_DIGITS),
        "prompts": {name: groups[name] for name in ("training", "heldout_digits", "heldout_template")},
        "prompt_files": {name: f"prompts/{file}" for name, file in PROMPT_FILES.items()},
        "ink_prompt": "{prompt} in {ink} ink",
        "data_skew": data_skew(),
        "captions": {"ink_named": data.SHARE_INK_NAMED, "described": data.SHARE_DESCRIBED,
                     "empty": data.SHARE_EMPTY},
        "components": components,
        "training": training,
    }
    atomic_write_text(folder / CARD, json.dumps(card, indent=2) + "\n")
    return card


def read_card(folder: str | Path | None = None) -> dict:
    """The card of the testbed in ``folder`` (default: the committed one)."""
    from scaleup.testbed.paths import testbed_path

    path = Path(folder if folder is not None else testbed_path()) / CARD
    if not path.is_file():
        raise FileNotFoundError(f"no testbed card at {path}; build the testbed with "
                                "python -m experiments run testbed-train --retrain")
    return json.loads(path.read_text(encoding="utf-8"))
