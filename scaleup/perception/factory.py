"""Names -> detectors, attributes and classifiers: the one vocabulary in which every scale-up job is configured.

The evaluation (``python -m scaleup.evaluate``), the aDFT job (``scaleup.jobs.adft``) and PopAlign's build-sets
stage resolve their ``--detector``, ``--attribute`` and ``--classifier`` values here and nowhere else, so the three
accept the same values:

detectors (:data:`DETECTORS`, :func:`make_detector`)
    ``dlib``, ``haar``, ``insightface``, ``mtcnn``: face detectors (:mod:`.faces`); ``whole-image``: the whole image
    is the one region (models whose images hold no face, e.g. a digits model); ``centre``: the central square, a
    stand-in for tiny random models (:mod:`.fixed_regions`).
attributes (:func:`resolve_attribute`)
    ``gender``, ``race``, ``gender_race``, ``age`` (:mod:`.attributes`), or a user-defined ``name:class1,class2[,...]``
    such as ``ink:red,blue``: its classes in that order and no zero-shot prompts.
classifiers (:data:`CLASSIFIERS`, :func:`make_classifier`)
    ``clip-zero-shot``, ``dlib-gender``, ``dlib-age``; ``probe:/path/to/probe-folder`` (a CLIP probe written by
    ``python -m scaleup.perception.train_probe``); and a user's own classifier as ``package.module:factory``: the
    factory is called with no arguments, or with ``attribute=`` (an :class:`~.attributes.Attribute`) if it takes
    it, and returns a callable (an ``nn.Module``) mapping images (B, 3, H, W) in [0, 1] to logits (B, K), with a
    ``class_names`` attribute equal to the attribute's classes, names and order. More names are added in one line
    with :func:`register_classifier`.

The checks (:func:`check_detector_name`, :func:`resolve_attribute`, :func:`check_classifier_spec`) read no model
weights, so a job refuses a bad value before anything is loaded.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .attributes import ATTRIBUTES, Attribute, check_class_names, get_attribute
from .faces import DlibFaceDetector, FaceDetector, HaarFaceDetector, InsightFaceDetector, MTCNNFaceDetector
from .fixed_regions import CentreBoxDetector, WholeImageDetector

__all__ = [
    "CLASSIFIERS",
    "ClassifierEntry",
    "DETECTORS",
    "PROBE_PREFIX",
    "attribute_spec",
    "check_classifier_spec",
    "check_detector_name",
    "classifier_needs_clip",
    "make_classifier",
    "make_detector",
    "register_classifier",
    "resolve_attribute",
]

# ---------------------------------------------------------------------------------------------------- detectors
#: Detector classes by name; each is built with its keyword arguments by :func:`make_detector`.
DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "dlib": DlibFaceDetector,
    "haar": HaarFaceDetector,
    "insightface": InsightFaceDetector,
    "mtcnn": MTCNNFaceDetector,
    "whole-image": WholeImageDetector,
    "centre": CentreBoxDetector,
}


def check_detector_name(name: str) -> str:
    """``name`` if it names a detector of :data:`DETECTORS` (nothing is built).

    Raises
    ------
    ValueError
        For any other value, listing the names.
    """
    if not isinstance(name, str) or name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")
    return name


def make_detector(name: str, **kwargs: Any) -> FaceDetector:
    """The detector called ``name`` (:data:`DETECTORS`), built with ``kwargs``.

    Raises
    ------
    ValueError
        For an unknown name. The optional detectors (insightface, mtcnn) raise ModuleNotFoundError /
        FileNotFoundError saying what to install or where their weights go.
    """
    return DETECTORS[check_detector_name(name)](**kwargs)


# ---------------------------------------------------------------------------------------------------- attributes
_ATTRIBUTE_FORM = "name:class1,class2[,...] (e.g. ink:red,blue)"


def resolve_attribute(spec: str | Attribute) -> Attribute:
    """The :class:`~.attributes.Attribute` a setting names: a built-in name, or a user-defined ``name:classes``.

    Parameters
    ----------
    spec : str or Attribute
        ``"gender"``, ``"race"``, ``"gender_race"``, ``"age"``; ``"ink:red,blue"`` for an attribute ``ink`` with
        classes ``red``, ``blue`` in that order (no zero-shot prompts); an Attribute is returned unchanged.

    Raises
    ------
    ValueError
        For an unknown name, a malformed ``name:classes``, fewer than two distinct classes, or a user-defined
        attribute that takes a built-in attribute's name.
    """
    if isinstance(spec, Attribute):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"attribute must be a string; got {type(spec).__name__}; expected one of "
                         f"{', '.join(ATTRIBUTES)} or {_ATTRIBUTE_FORM}")
    spec = spec.strip()
    if spec in ATTRIBUTES:
        return ATTRIBUTES[spec]
    if ":" not in spec:
        raise ValueError(f"unknown attribute {spec!r}; expected one of {', '.join(ATTRIBUTES)} or your own as "
                         f"{_ATTRIBUTE_FORM}")
    name, _, classes = spec.partition(":")
    name, class_names = name.strip(), tuple(c.strip() for c in classes.split(","))
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", name) or ":" in classes or not all(class_names):
        raise ValueError(f"attribute {spec!r} is malformed; expected {_ATTRIBUTE_FORM}: a name of letters, digits, "
                         "'_' or '-', a colon, and comma-separated non-empty class names")
    if name in ATTRIBUTES:
        # a user's classes must never be read as a built-in attribute's (its classifiers, datasets, prompts)
        raise ValueError(f"attribute {spec!r}: {name!r} is built in, with classes "
                         f"{list(ATTRIBUTES[name].class_names)}; expected {name} alone, or another name for your "
                         "own attribute")
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ValueError(f"attribute {spec!r}: expected at least 2 distinct classes; got {list(class_names)}")
    return Attribute(name, class_names)


def attribute_spec(attribute: str | Attribute) -> str:
    """The setting that names ``attribute``: its name if built in, else ``name:class1,class2,...``
    (``resolve_attribute(attribute_spec(a)) == a``)."""
    attr = resolve_attribute(attribute)
    if ATTRIBUTES.get(attr.name) == attr:
        return attr.name
    return f"{attr.name}:{','.join(attr.class_names)}"


# ---------------------------------------------------------------------------------------------------- classifiers
#: The prefix of a CLIP probe's folder: ``probe:/path/to/probe-folder``.
PROBE_PREFIX = "probe:"
_FACTORY_ROUTE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class ClassifierEntry:
    """A named classifier of :data:`CLASSIFIERS`.

    Attributes
    ----------
    factory : callable
        Builds the classifier; called with those of ``attribute`` (:class:`~.attributes.Attribute`),
        ``clip_embedder`` and ``device`` that it takes as parameters.
    needs_clip : bool
        Whether ``factory`` needs a CLIP embedder (a job then loads CLIP for it).
    attribute : Attribute or None
        The one attribute it classifies; None: any attribute.
    needs_prompts : bool
        Whether it needs the attribute's zero-shot prompts (refused for an attribute without them).
    """

    factory: Callable[..., Any]
    needs_clip: bool
    attribute: Attribute | None = None
    needs_prompts: bool = False


def _clip_zero_shot(attribute: Attribute, clip_embedder):
    from .zero_shot import ClipZeroShotClassifier

    return ClipZeroShotClassifier(clip_embedder, attribute)


def _dlib_gender():
    from .gender_onnx import DlibGenderClassifier

    return DlibGenderClassifier()


def _dlib_age():
    from .gender_onnx import DlibAgeClassifier

    return DlibAgeClassifier()


#: Named classifiers; add one with :func:`register_classifier`.
CLASSIFIERS: dict[str, ClassifierEntry] = {
    "clip-zero-shot": ClassifierEntry(_clip_zero_shot, needs_clip=True, needs_prompts=True),
    "dlib-gender": ClassifierEntry(_dlib_gender, needs_clip=False, attribute=get_attribute("gender")),
    "dlib-age": ClassifierEntry(_dlib_age, needs_clip=False, attribute=get_attribute("age")),
}


def register_classifier(name: str, factory: Callable[..., Any], *, needs_clip: bool,
                        attribute: str | Attribute | None = None, needs_prompts: bool = False,
                        overwrite: bool = False) -> ClassifierEntry:
    """Add the classifier ``name`` to :data:`CLASSIFIERS`, for every job (``--classifier name``).

    Parameters
    ----------
    name : str
        Letters, digits, '-', '_', '.'; no ':' (that marks ``probe:`` and ``module:factory``).
    factory : callable
        Returns the classifier (images (B, 3, H, W) in [0, 1] -> logits (B, K), with ``class_names``); called with
        those of ``attribute``, ``clip_embedder`` and ``device`` that it takes.
    needs_clip : bool
        Whether it needs a CLIP embedder (passed as ``clip_embedder``).
    attribute : str or Attribute, optional
        The one attribute it classifies (a built-in name or ``name:classes``); None: any.
    needs_prompts : bool
        Whether it needs the attribute's zero-shot prompts.
    overwrite : bool
        Replace an existing entry of that name instead of refusing.

    Raises
    ------
    ValueError
        For a malformed or already registered name, or a factory that is not callable.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", name):
        raise ValueError(f"classifier name {name!r} is malformed; expected letters, digits, '-', '_' or '.' (no ':', "
                         "which marks probe:/path and package.module:factory)")
    if name in CLASSIFIERS and not overwrite:
        raise ValueError(f"classifier {name!r} is already registered; expected a new name, or overwrite=True")
    if not callable(factory):
        raise ValueError(f"the factory of classifier {name!r} must be callable; got {type(factory).__name__}")
    entry = ClassifierEntry(factory, needs_clip=bool(needs_clip),
                            attribute=None if attribute is None else resolve_attribute(attribute),
                            needs_prompts=bool(needs_prompts))
    CLASSIFIERS[name] = entry
    return entry


def _expected() -> str:
    return f"one of {', '.join(CLASSIFIERS)}, {PROBE_PREFIX}/path/to/probe-folder, or package.module:factory"


def _named_entry(spec: object) -> ClassifierEntry:
    if not isinstance(spec, str) or spec not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {spec!r}; expected {_expected()}")
    return CLASSIFIERS[spec]


def _import_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``package.module:factory`` (imported; no model is built)."""
    if not _FACTORY_ROUTE.fullmatch(spec):
        raise ValueError(f"classifier {spec!r} is malformed; expected {_expected()} (a module importable here and "
                         "a function in it, e.g. mypackage.classifiers:make_ink_classifier)")
    module_name, qualname = spec.split(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"classifier {spec}: cannot import module {module_name!r} ({err}); expected a module "
                         "importable here (installed, or on PYTHONPATH)") from None
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ValueError(f"classifier {spec}: module {module_name!r} has no {qualname!r}; expected a function "
                             "there that returns the classifier")
    if not callable(found):
        raise ValueError(f"classifier {spec}: {qualname!r} is a {type(found).__name__}, not callable; expected a "
                         "function that returns the classifier")
    return found


def _probe_folder(spec: str) -> Path:
    return Path(spec[len(PROBE_PREFIX):]).expanduser()


def _check_probe(spec: str, attribute: Attribute) -> None:
    folder = _probe_folder(spec)
    meta_file = folder / "probe.json"
    if not meta_file.is_file():
        raise ValueError(f"classifier {spec}: {str(folder)!r} holds no probe.json; expected a folder written by "
                         "python -m scaleup.perception.train_probe")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    classes = tuple(meta.get("class_names") or ())
    if meta.get("attribute") != attribute.name or classes != attribute.class_names:
        raise ValueError(f"classifier {spec}: the probe classifies {meta.get('attribute')!r} {list(classes)}, not "
                         f"attribute {attribute.name!r} {list(attribute.class_names)}; expected a probe trained for "
                         f"{attribute.name!r}")


def check_classifier_spec(spec: str, attribute: str | Attribute) -> None:
    """Refuse a classifier setting that cannot classify ``attribute``, before any model is loaded.

    Checks: the name is known (:data:`CLASSIFIERS`) and classifies this attribute (``dlib-gender`` only gender) with
    the prompts it needs (``clip-zero-shot`` not a user-defined attribute); a probe folder holds ``probe.json`` for
    this attribute's classes; ``package.module:factory`` is well formed, its module imports and holds the factory.

    Raises
    ------
    ValueError
        Naming the setting, what was wrong and what is expected.
    """
    attr = resolve_attribute(attribute)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"classifier must be a non-empty string; got {spec!r}; expected {_expected()}")
    if spec.startswith(PROBE_PREFIX):
        _check_probe(spec, attr)
        return
    if ":" in spec:
        _import_factory(spec)
        return
    entry = _named_entry(spec)
    # the same attribute is the same name and classes in order; its prompts (or their absence) do not matter here
    if entry.attribute is not None and (entry.attribute.name, entry.attribute.class_names) != (attr.name,
                                                                                               attr.class_names):
        raise ValueError(f"{spec} classifies {entry.attribute.name}, not {attr.name} "
                         f"({entry.attribute.num_classes} classes {list(entry.attribute.class_names)}, not "
                         f"{attr.num_classes} {list(attr.class_names)}); expected attribute {entry.attribute.name}, "
                         f"or another classifier for {attr.name} (probe:/path, package.module:factory)")
    if entry.needs_prompts and attr.prompts is None:
        raise ValueError(f"{spec} needs zero-shot prompts per class and the user-defined attribute {attr.name!r} "
                         "has none; expected a probe (probe:/path) or your own classifier (package.module:factory)")


def classifier_needs_clip(spec: str) -> bool:
    """Whether the classifier ``spec`` needs a CLIP embedder: a probe and ``clip-zero-shot`` do, a
    ``package.module:factory`` does not (it brings its own models).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if isinstance(spec, str) and spec.startswith(PROBE_PREFIX):
        return True
    if isinstance(spec, str) and ":" in spec:
        return False
    return _named_entry(spec).needs_clip


def _call_with_accepted(factory: Callable[..., Any], offered: dict[str, Any]) -> Any:
    # a factory takes what it needs of the offered keywords: many take none, CLIP-based ones take the embedder
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: no arguments
        return factory()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return factory(**offered)
    return factory(**{k: v for k, v in offered.items() if k in parameters})


def make_classifier(spec: str, attribute: str | Attribute, *, clip_embedder=None, device=None):
    """The classifier ``spec`` for ``attribute``, checked against the attribute's classes (names and order), on
    ``device`` and in eval mode.

    Parameters
    ----------
    spec : str
        A name of :data:`CLASSIFIERS`, ``probe:/path/to/probe-folder`` or ``package.module:factory``.
    attribute : str or Attribute
        Anything :func:`resolve_attribute` reads.
    clip_embedder : TextImageEmbedder, optional
        Needed when :func:`classifier_needs_clip` says so (the job loads it once and shares it).
    device : torch.device or str, optional

    Raises
    ------
    ValueError
        Everything :func:`check_classifier_spec` refuses; a missing CLIP embedder; a classifier that is not callable,
        has no ``class_names``, or whose classes differ from the attribute's.
    """
    attr = resolve_attribute(attribute)
    check_classifier_spec(spec, attr)
    if classifier_needs_clip(spec) and clip_embedder is None:
        raise ValueError(f"classifier {spec} needs a CLIP model (--clip or FAIRDIFF_CLIP); none was given")
    if spec.startswith(PROBE_PREFIX):
        from .linear_probe import ClipProbeClassifier, load_probe

        head, _, _ = load_probe(_probe_folder(spec))
        classifier = ClipProbeClassifier(clip_embedder, head, attr)
    elif ":" in spec:
        classifier = _call_with_accepted(_import_factory(spec), {"attribute": attr})
    else:
        classifier = _call_with_accepted(CLASSIFIERS[spec].factory,
                                         {"attribute": attr, "clip_embedder": clip_embedder, "device": device})
    names = getattr(classifier, "class_names", None)
    if names is None or not callable(classifier):
        raise ValueError(f"classifier {spec} built a {type(classifier).__name__}; expected a callable (an nn.Module) "
                         "mapping images (B, 3, H, W) in [0, 1] to logits (B, K), with a class_names attribute")
    check_class_names(names, attr, owner=f"classifier {spec}")
    if device is not None and hasattr(classifier, "to"):
        classifier = classifier.to(device)
    if hasattr(classifier, "eval"):
        classifier.eval()
    return classifier


def check_content_classifier_spec(spec: str) -> None:
    """Refuse a content-classifier route that cannot be imported (``package.module:factory``), before any load."""
    _import_factory(spec)


def make_content_classifier(spec: str, *, device=None):
    """A content classifier (``package.module:factory``): images (B, 3, H, W) in [0, 1] -> logits over its
    ``class_names`` (e.g. which digit), for the evaluation's prompt accuracy; on ``device``, in eval mode.

    Raises
    ------
    ValueError
        For a route :func:`check_content_classifier_spec` refuses, or a result that is not callable or has no
        ``class_names``.
    """
    made = _import_factory(spec)()
    names = getattr(made, "class_names", None)
    if not callable(made) or not names:
        raise ValueError(f"content classifier {spec} returned a {type(made).__name__}; expected a callable module "
                         "with class_names (images (B, 3, H, W) in [0, 1] -> logits (B, len(class_names)))")
    return made.to(device).eval() if hasattr(made, "to") else made


# ---- image embedders of L_img (seed 000, eq. 7) ----------------------------------------------------------------

#: L_img's built-in embedders: CLIP and DINOv2, as seed 000 [0107] states it.
CLIP_DINOV2 = "clip+dinov2"


def check_image_embedder_spec(spec: str) -> None:
    """Refuse an L_img embedder that is neither ``clip+dinov2`` nor an importable ``package.module:factory``."""
    if spec == CLIP_DINOV2:
        return
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"image_embedder {spec!r} is not known; expected {CLIP_DINOV2} (seed 000 eq. 7) or "
                         "package.module:factory of your own embedder (images (B, 3, H, W) in [0, 1] -> (B, D))")
    _import_factory(spec)


def make_image_embedder(spec: str, *, device=None):
    """Your own image embedder of L_img (``package.module:factory``): images (B, 3, H, W) in [0, 1] -> (B, D)
    embeddings, differentiable, on ``device`` and frozen. ``clip+dinov2`` is built by the job from its models.

    Raises
    ------
    ValueError
        For a route :func:`check_image_embedder_spec` refuses or a factory whose result is not callable.
    """
    check_image_embedder_spec(spec)
    if spec == CLIP_DINOV2:
        raise ValueError(f"{CLIP_DINOV2} is built from the CLIP and DINOv2 models, not by make_image_embedder")
    made = _import_factory(spec)()
    if not callable(made):
        raise ValueError(f"image embedder {spec} returned a {type(made).__name__}; expected a callable module "
                         "(images (B, 3, H, W) in [0, 1] -> embeddings (B, D))")
    if hasattr(made, "requires_grad_"):
        made = made.requires_grad_(False)
    return made.to(device).eval() if hasattr(made, "to") else made
