"""Identity keywords and the identity-augmented prompts of the preference data (seed 001, Sec. 3.1, 5.1).

Seed 001 augments every identity-neutral prompt with identity keywords and treats images of the augmented prompts
as samples of the sub-populations: gender "male", "female"; race "white", "Asian", "black", "Latino Hispanic",
"Indian", "middle eastern" ("as specified by the classifier", FairFace's groups); age "old", "young" (Sec. 5.1);
the public code crosses race and gender into 12 keywords ("a realistic photo of a white male ...").

Each keyword may name the class of an attribute classifier (:mod:`scaleup.perception.attributes`) that the sanity
filter checks its images against. This package's race classifier has seed 000's four classes (WMELH = White, Middle
Eastern, Latino Hispanic; Asian; Black; Indian), so "white", "Latino Hispanic" and "middle eastern" images are
checked at that merged level.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Sequence

import numpy as np

from scaleup.perception.factory import resolve_attribute
from theory.validation import check_distribution

GENDER_KEYWORDS = ("male", "female")
RACE_KEYWORDS = ("white", "Asian", "black", "Latino Hispanic", "Indian", "middle eastern")
AGE_KEYWORDS = ("old", "young")
_RACE_CLASS = {"white": "WMELH", "Asian": "Asian", "black": "Black", "Latino Hispanic": "WMELH", "Indian": "Indian",
               "middle eastern": "WMELH"}

#: The phrase after which the shipped prompts (seed 001 App. L.2: "best quality, a realistic photo of Engineer")
#: take their keyword: "best quality, a realistic photo of female Engineer".
ANCHOR = "a realistic photo of "


@dataclass(frozen=True)
class KeywordSet:
    """Identity keywords, and for the sanity filter the attribute and class each keyword's images must show.

    Attributes
    ----------
    name : str
        A shipped set's name ("gender", "race", "gender_race", "age") or "custom".
    keywords : tuple of str
        At least two distinct keywords (a set of one cannot make a population diverse).
    attribute : str or None
        The classifier attribute of the filter (a built-in name or a user-defined ``name:class1,class2``,
        :func:`scaleup.perception.factory.resolve_attribute`); None: images are checked for a face only.
    classes : tuple of str or None
        ``classes[k]`` is the class of ``attribute`` that images of ``keywords[k]`` must be classified as.
    """

    name: str
    keywords: tuple[str, ...]
    attribute: str | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.keywords) < 2:
            raise ValueError(f"keywords: a keyword set needs at least 2 keywords (one per sub-population the winning "
                             f"sets mix); got {list(self.keywords)}. Name a shipped set ({', '.join(SHIPPED)}) or "
                             "list two or more keywords")
        if len(set(self.keywords)) != len(self.keywords):
            raise ValueError(f"keywords must be distinct; got {list(self.keywords)}")
        if (self.attribute is None) != (self.classes is None):
            raise ValueError("keyword_attribute and keyword_classes go together: give both or neither")
        if self.attribute is not None:
            attribute = resolve_attribute(self.attribute)
            if len(self.classes) != len(self.keywords):
                raise ValueError(f"keyword_classes must name one class of {self.attribute!r} per keyword "
                                 f"({len(self.keywords)}); got {len(self.classes)}")
            for cls in self.classes:
                attribute.index(cls)  # ValueError naming the valid classes

    def class_index(self, keyword: str) -> int | None:
        """Column of the filter classifier that images of ``keyword`` must win; None without an attribute."""
        if self.attribute is None:
            return None
        return resolve_attribute(self.attribute).index(self.classes[self.keywords.index(keyword)])

    def target(self, weights: Sequence[float] | None = None) -> np.ndarray:
        """The winning sets' distribution over the keywords: uniform by default, or ``weights`` (App. H.2, e.g.
        80/20), which must be a distribution with one entry per keyword."""
        if weights is None or len(weights) == 0:
            return np.full(len(self.keywords), 1.0 / len(self.keywords))
        if len(weights) != len(self.keywords):
            raise ValueError(f"target must give one probability per keyword {list(self.keywords)}; got "
                             f"{len(weights)} values {list(weights)}")
        return check_distribution(weights, len(self.keywords), name="target")

    def class_target(self, weights: np.ndarray) -> np.ndarray | None:
        """The keyword target mapped to the filter attribute's classes (keywords of one class add up)."""
        if self.attribute is None:
            return None
        attribute = resolve_attribute(self.attribute)
        out = np.zeros(attribute.num_classes)
        for keyword, weight in zip(self.keywords, weights):
            out[self.class_index(keyword)] += weight
        return out


SHIPPED: dict[str, KeywordSet] = {
    "gender": KeywordSet("gender", GENDER_KEYWORDS, "gender", GENDER_KEYWORDS),
    "race": KeywordSet("race", RACE_KEYWORDS, "race", tuple(_RACE_CLASS[k] for k in RACE_KEYWORDS)),
    # race x gender, as the public PopAlign code augments ("white male", ..., "middle eastern female")
    "gender_race": KeywordSet("gender_race", tuple(f"{r} {g}" for r, g in product(RACE_KEYWORDS, GENDER_KEYWORDS)),
                              "gender_race", tuple(f"{g}-{_RACE_CLASS[r]}"
                                                   for r, g in product(RACE_KEYWORDS, GENDER_KEYWORDS))),
    "age": KeywordSet("age", AGE_KEYWORDS, "age", AGE_KEYWORDS),
}


def keyword_set(keywords: str | Sequence[str], *, attribute: str | None = None,
                classes: Sequence[str] | None = None) -> KeywordSet:
    """A shipped keyword set by name (``"gender"``, ``"race"``, ``"gender_race"``, ``"age"``, or a one-entry list
    naming one), or a user-defined set of two or more keywords with an optional filter attribute and classes.

    User keywords that are the attribute's class names need no ``classes``: ``keyword_set(["red", "blue"],
    attribute="ink:red,blue")`` checks images of "red" against class red (a user-defined attribute, as the
    testbed's ink, :mod:`scaleup.testbed`).

    Raises
    ------
    ValueError
        For a set of one keyword that names no shipped set, repeated keywords, or classes that do not fit.
    """
    items = [keywords] if isinstance(keywords, str) else list(keywords)
    if len(items) == 1 and items[0] in SHIPPED:
        if attribute is not None or classes:
            raise ValueError(f"keyword_attribute / keyword_classes apply to user-defined keywords only; the shipped "
                             f"set {items[0]!r} has its own ({SHIPPED[items[0]].attribute})")
        return SHIPPED[items[0]]
    if any(not isinstance(k, str) for k in items):
        raise ValueError(f"keywords must be strings; got {items!r}")
    items = [k.strip() for k in items]
    if attribute is not None and not classes:
        classes = _classes_named_by_keywords(items, attribute)
    return KeywordSet("custom", tuple(items), attribute, tuple(classes) if classes else None)


def _classes_named_by_keywords(keywords: Sequence[str], attribute: str) -> tuple[str, ...]:
    """The classes of user keywords that are the attribute's class names themselves (``--keywords red,blue
    --keyword-attribute ink:red,blue``), so that naming them a second time is not needed; otherwise a clear error."""
    names = resolve_attribute(attribute).class_names
    if all(k in names for k in keywords):
        return tuple(keywords)
    raise ValueError(f"keyword_classes: give the class of {attribute!r} (one of {', '.join(names)}) for each keyword "
                     f"{list(keywords)}; it may be left out only when every keyword is a class name")


def augment_prompt(prompt: str, keyword: str, template: str | None = None) -> str:
    """The identity-augmented version of an identity-neutral prompt (seed 001, Sec. 3.1).

    ``template`` (with ``{keyword}`` and ``{prompt}``) overrides the rule. By default the keyword goes after the
    shipped prompts' "a realistic photo of " ("best quality, a realistic photo of female Engineer"); other prompts
    get the public code's prefix ("a realistic photo of a white male " + prompt). An empty keyword (seed 001's blank
    keyword for the default group, Sec. 5.1) leaves the prompt unchanged.
    """
    keyword = keyword.strip()
    if template is not None:
        if "{keyword}" not in template or "{prompt}" not in template:
            raise ValueError(f"augment_template must contain {{keyword}} and {{prompt}}; got {template!r}")
        return " ".join(template.format(keyword=keyword, prompt=prompt).split())
    if not keyword:
        return prompt
    at = prompt.find(ANCHOR)
    if at >= 0:
        cut = at + len(ANCHOR)
        return f"{prompt[:cut]}{keyword} {prompt[cut:]}"
    return f"{ANCHOR}a {keyword} {prompt}"


def keyword_slug(keyword: str) -> str:
    """A file-name-safe form of a keyword ("Latino Hispanic" -> "latino-hispanic"; "" -> "blank")."""
    slug = "-".join("".join(c if c.isalnum() else " " for c in keyword.lower()).split())
    return slug or "blank"
