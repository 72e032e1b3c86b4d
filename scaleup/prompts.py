"""Prompt sets shipped with fairdiff, and prompt files of the user's, read with one clear error for bad input.

Shipped sets (``scaleup/data/prompts/``, each file's header says where it comes from):

================================  ===========================================================================
name                              prompts
================================  ===========================================================================
``occupations-train`` / ``-test``  seed 000 [0134]: "a photo of the face of a {occupation}, a person", a fixed
                                  120/30 split of fairdiff's 150 occupations
``sports-train`` / ``-test``       seed 000 [0134]: "a person playing {sport}", a fixed 70/15 split
``popalign-occupations``          seed 001 App. L.2: 100 "best quality, a realistic photo of {occupation}"
``laion-aesthetics``              seed 001 App. L.3: 100 LAION-Aesthetics-style prompts
``personal-descriptors``          seed 001 App. L.4: 100 personal descriptors
``couples``                       seed 001 App. L.5: 10 couple scenes
================================  ===========================================================================
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

OCCUPATION_TEMPLATE = "a photo of the face of a {}, a person"  # seed 000 [0134]
SPORT_TEMPLATE = "a person playing {}"  # seed 000 [0134]

#: name -> (file under scaleup/data/prompts, template applied to each line or None for verbatim prompts)
SHIPPED: dict[str, tuple[str, str | None]] = {
    "occupations-train": ("adft_occupations_train.txt", OCCUPATION_TEMPLATE),
    "occupations-test": ("adft_occupations_test.txt", OCCUPATION_TEMPLATE),
    "sports-train": ("adft_sports_train.txt", SPORT_TEMPLATE),
    "sports-test": ("adft_sports_test.txt", SPORT_TEMPLATE),
    "popalign-occupations": ("popalign_occupations.txt", None),
    "laion-aesthetics": ("laion_aesthetics.txt", None),
    "personal-descriptors": ("personal_descriptors.txt", None),
    "couples": ("couples.txt", None),
}


@dataclass(frozen=True)
class PromptSet:
    """Prompts in file order, with the name of the set (or file) they came from."""

    name: str
    prompts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.prompts)


def parse_prompt_lines(text: str, *, source: str, template: str | None = None) -> tuple[str, ...]:
    """One prompt per non-blank line, '#' comments dropped, ``template.format(line)`` applied when given."""
    lines = [line.strip() for line in text.splitlines()]
    for number, line in enumerate(lines, start=1):
        bad = next((c for c in line if unicodedata.category(c) == "Cc" and c != "\t"), None)
        if bad is not None:  # NUL and other control characters reach the tokenizer unseen (issue 19)
            raise ValueError(f"prompt file {source}, line {number}: control character {bad!r} in {line!r}; expected "
                             "plain text, one prompt per line")
    items = [line for line in lines if line and not line.startswith("#")]
    if not items:
        raise ValueError(f"prompt file {source} holds no prompts; expected one prompt per line "
                         "(blank lines and lines starting with '#' are ignored)")
    if template is not None:
        if template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}' placeholder; got {template!r}")
        items = [template.format(item) for item in items]
    return tuple(items)


def read_prompt_file(path: str | Path, *, template: str | None = None) -> PromptSet:
    """Read a user's prompt file (UTF-8 text, one prompt per line).

    Raises
    ------
    ValueError
        If the file does not exist, is a folder, is not UTF-8 text, or holds no prompts.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise ValueError(f"prompt file {path} is {what}; expected a UTF-8 text file with one prompt per line, "
                         f"or one of the shipped sets: {', '.join(SHIPPED)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"prompt file {path} is not UTF-8 text (byte {err.start} cannot be decoded); "
                         "save it as UTF-8 with one prompt per line") from None
    return PromptSet(name=path.stem, prompts=parse_prompt_lines(text, source=str(path), template=template))


def load_prompt_set(name_or_path: str | Path, *, template: str | None = None) -> PromptSet:
    """A shipped prompt set by name (see the module docstring), or a user's prompt file by path.

    ``template`` (with one ``{}``) is applied to a user's file; the shipped sets carry their own.
    """
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        file_name, shipped_template = SHIPPED[name_or_path]
        text = resources.files("scaleup").joinpath("data", "prompts", file_name).read_text(encoding="utf-8")
        return PromptSet(name=name_or_path,
                         prompts=parse_prompt_lines(text, source=file_name, template=shipped_template))
    return read_prompt_file(name_or_path, template=template)


def prompts_cut(tokenizer, prompts: Sequence[str], *, reserved: int = 0) -> list[dict]:
    """The prompts the text encoder would not read whole: more tokens (start and end included) than its context
    (``tokenizer.model_max_length``) less ``reserved`` positions (a soft prompt's tokens). Each entry names the
    prompt, its token count and the context left; fairdiff's own encoders cut such prompts as diffusers' do."""
    context = int(tokenizer.model_max_length) - reserved
    cut = []
    for prompt in dict.fromkeys(prompts):  # each prompt once, in order
        n = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
        if n > context:
            cut.append({"prompt": prompt, "tokens": n, "context": context})
    return cut


def warn_prompts_cut(cut: Sequence[dict], *, job: str) -> None:
    """One warning line per cut prompt on stderr (the job goes on: a cut prompt still runs, as in diffusers)."""
    import sys

    for entry in cut:
        print(f"{job}: warning: prompt {entry['prompt'][:60]!r}{'...' if len(entry['prompt']) > 60 else ''} has "
              f"{entry['tokens']} tokens but the text encoder reads {entry['context']}; the rest is cut",
              file=sys.stderr)
