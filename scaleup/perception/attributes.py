"""The protected attributes of seed 000 in one place: class names, their order, zero-shot prompts, dataset labels.

- ``gender`` (K = 2): male, female ([0121]: the gender classifier is trained on CelebA's ``Male`` attribute).
- ``race`` (K = 4): the four groups seed 000 [0120] forms from FairFace's seven, WMELH = {White, Middle Eastern,
  Latino Hispanic}, Asian = {East Asian, Southeast Asian}, Black, Indian.
- ``gender_race`` (K = 8): their intersection ([0123], [0124]), gender-major: index = 4 * gender + race.
- ``age`` (K = 2): young = FairFace ages 0-39, old = 40 and above ([0132]; the seed's "0-39 / 39 and above" reads
  as FairFace's age bins, whose 30-39 bin is young and whose 40-49 bin is old).

Every classifier, probe, dataset reader and metric takes its class order from here; a classifier whose class
count does not match its attribute is refused (:func:`check_class_names`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = [
    "ATTRIBUTES",
    "Attribute",
    "celeba_class_index",
    "check_class_names",
    "fairface_class_index",
    "get_attribute",
]

# Prompt templates of the ensembles; "{}" takes a class descriptor such as "woman" or "Black man".
_PERSON_TEMPLATES = (
    "a photo of {}.",
    "a photo of the face of {}.",
    "a close-up photo of {}.",
    "a portrait of {}.",
    "a cropped photo of the face of {}.",
)

_GENDER_NOUNS = {"male": ("a man", "a male person", "a boy"), "female": ("a woman", "a female person", "a girl")}
# FairFace's seven groups, merged as seed 000 [0120] merges them; each merged class averages its members' prompts.
_RACE_ADJECTIVES = {
    "WMELH": ("White", "Middle Eastern", "Latino Hispanic"),
    "Asian": ("East Asian", "Southeast Asian"),
    "Black": ("Black",),
    "Indian": ("Indian",),
}
_AGE_NOUNS = {
    "young": ("a young person", "a child", "a teenager", "a person in their twenties", "a person in their thirties"),
    "old": ("an old person", "an elderly person", "a middle-aged person", "a person in their fifties",
            "a person in their seventies"),
}


def _article(adjective: str) -> str:
    return "an" if adjective[0].lower() in "aeiou" else "a"


def _ensemble(descriptors: Sequence[str]) -> tuple[str, ...]:
    return tuple(template.format(d) for d in descriptors for template in _PERSON_TEMPLATES)


@dataclass(frozen=True)
class Attribute:
    """An attribute: its classes in a fixed order and, for a built-in one, a prompt ensemble per class.

    Attributes
    ----------
    name : str
        ``"gender"``, ``"race"``, ``"gender_race"``, ``"age"``, or a user-defined attribute's name (``"ink"``;
        :func:`scaleup.perception.factory.resolve_attribute` reads ``ink:red,blue``).
    class_names : tuple of str
        The K classes; column k of every classifier's logits is class ``class_names[k]``.
    prompts : tuple of tuple of str, optional
        ``prompts[k]`` is the zero-shot prompt ensemble of class k (CLIP, Radford et al. 2021, Sec. 3.1.4). None
        for an attribute without zero-shot prompts (a user-defined one): CLIP zero-shot cannot classify it.
    """

    name: str
    class_names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"attribute {self.name!r}: class_names must be >= 2 distinct names, "
                             f"got {self.class_names}")
        if self.prompts is not None and (len(self.prompts) != len(self.class_names) or not all(self.prompts)):
            raise ValueError(f"attribute {self.name!r}: need a non-empty prompt ensemble per class, or prompts=None")

    @property
    def num_classes(self) -> int:
        """K, the number of groups (2 / 4 / 8 / 2, seed 000 [0124])."""
        return len(self.class_names)

    def index(self, class_name: str) -> int:
        """Column of ``class_name``; ValueError naming the valid classes otherwise."""
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise ValueError(f"attribute {self.name!r} has no class {class_name!r}; "
                             f"its classes are {list(self.class_names)}") from None


GENDER = Attribute(
    "gender", ("male", "female"),
    tuple(_ensemble(_GENDER_NOUNS[g]) for g in ("male", "female")))
RACE = Attribute(
    "race", tuple(_RACE_ADJECTIVES),
    tuple(_ensemble([f"{_article(adj)} {adj} person" for adj in adjectives])
          for adjectives in _RACE_ADJECTIVES.values()))
GENDER_RACE = Attribute(
    "gender_race",
    tuple(f"{g}-{r}" for g in ("male", "female") for r in _RACE_ADJECTIVES),
    tuple(_ensemble([f"{_article(adj)} {adj} {noun}" for adj in _RACE_ADJECTIVES[r]
                     for noun in (("man", "male person") if g == "male" else ("woman", "female person"))])
          for g in ("male", "female") for r in _RACE_ADJECTIVES))
AGE = Attribute("age", ("young", "old"), tuple(_ensemble(_AGE_NOUNS[a]) for a in ("young", "old")))

#: The attributes by name.
ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in (GENDER, RACE, GENDER_RACE, AGE)}


def get_attribute(attribute: str | Attribute) -> Attribute:
    """The :class:`Attribute` named ``attribute`` (an :class:`Attribute` is returned unchanged).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if isinstance(attribute, Attribute):
        return attribute
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {sorted(ATTRIBUTES)}")
    return ATTRIBUTES[attribute]


def check_class_names(class_names: Sequence[str], attribute: str | Attribute, *, owner: str = "classifier") -> None:
    """Refuse a classifier whose classes do not match ``attribute`` (count first, then names and order).

    Raises
    ------
    ValueError
        Naming ``owner``, the attribute, the expected classes and what was given.
    """
    attr = get_attribute(attribute)
    names = tuple(class_names)
    if len(names) != attr.num_classes:
        raise ValueError(f"{owner} has {len(names)} classes {list(names)} but attribute {attr.name!r} has "
                         f"{attr.num_classes}: {list(attr.class_names)}")
    if names != attr.class_names:
        raise ValueError(f"{owner} classes {list(names)} do not match attribute {attr.name!r}'s classes "
                         f"{list(attr.class_names)} (same names in the same order expected)")


# ---- dataset labels -> class indices -------------------------------------------------------------------------
def _built_in(attribute: str | Attribute, dataset: str) -> Attribute:
    # the datasets label the built-in attributes only: a user's attribute must not be read as one of them
    attr = get_attribute(attribute)
    if ATTRIBUTES.get(attr.name) != attr:
        raise ValueError(f"{dataset} has no labels for the user-defined attribute {attr.name!r}; expected one of "
                         f"{sorted(ATTRIBUTES)} (or the folder/<class>/ layout for your own classes)")
    return attr


#: FairFace ``race`` values -> seed 000's four groups ([0120]).
FAIRFACE_RACE: dict[str, str] = {
    "White": "WMELH", "Middle Eastern": "WMELH", "Latino_Hispanic": "WMELH", "Latino Hispanic": "WMELH",
    "East Asian": "Asian", "Southeast Asian": "Asian", "Black": "Black", "Indian": "Indian",
}
#: FairFace ``age`` bins -> young / old ([0132]: young = 0-39).
FAIRFACE_AGE: dict[str, str] = {
    "0-2": "young", "3-9": "young", "10-19": "young", "20-29": "young", "30-39": "young",
    "40-49": "old", "50-59": "old", "60-69": "old", "more than 70": "old", "70+": "old",
}


def fairface_class_index(row: Mapping[str, str], attribute: str | Attribute) -> int:
    """Class index of one FairFace label row (columns ``gender``, ``race``, ``age`` of ``fairface_label_*.csv``).

    Raises
    ------
    ValueError
        If a needed column is missing or holds a value FairFace does not use.
    """
    attr = _built_in(attribute, "FairFace")

    def value(column: str, table: Mapping[str, str] | None = None) -> str:
        if column not in row:
            raise ValueError(f"FairFace row has no {column!r} column (columns: {sorted(row)})")
        raw = str(row[column]).strip()
        if table is None:
            return raw.lower()
        if raw not in table:
            raise ValueError(f"FairFace {column} value {raw!r} is not one of {sorted(table)}")
        return table[raw]

    def gender() -> str:
        g = value("gender")
        if g not in ("male", "female"):
            raise ValueError(f"FairFace gender value {row['gender']!r} is not 'Male' or 'Female'")
        return g

    if attr.name == "gender":
        return attr.index(gender())
    if attr.name == "race":
        return attr.index(value("race", FAIRFACE_RACE))
    if attr.name == "gender_race":
        return attr.index(f"{gender()}-{value('race', FAIRFACE_RACE)}")
    return attr.index(value("age", FAIRFACE_AGE))


def celeba_class_index(attributes: Mapping[str, int], attribute: str | Attribute) -> int:
    """Class index from one row of CelebA's ``list_attr_celeba.txt`` (values +1 / -1).

    CelebA labels ``Male`` and ``Young`` only, so it serves ``gender`` (seed 000 [0121]) and ``age``; race
    needs FairFace.

    Raises
    ------
    ValueError
        For ``race`` / ``gender_race``, or a row without the needed column.
    """
    attr = _built_in(attribute, "CelebA")
    column = {"gender": "Male", "age": "Young"}.get(attr.name)
    if column is None:
        raise ValueError(f"CelebA has no labels for attribute {attr.name!r}; use the FairFace layout "
                         "(seed 000 [0120] trains race classifiers on FairFace)")
    if column not in attributes:
        raise ValueError(f"CelebA row has no {column!r} attribute")
    positive = int(attributes[column]) == 1
    if attr.name == "gender":
        return attr.index("male" if positive else "female")
    return attr.index("young" if positive else "old")
