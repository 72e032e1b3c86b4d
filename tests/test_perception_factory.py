"""The one vocabulary of detectors, attributes and classifiers (scaleup.perception.factory), and the three scale-up
jobs (evaluation, aDFT, PopAlign build-sets) accepting the same names: whole-image, a user-defined attribute
(ink:red,blue), a user's classifier given as package.module:factory."""

from __future__ import annotations

import json

import pytest
import torch

from scaleup.evaluate import EvalConfig, validate as validate_evaluation
from scaleup.jobs.adft.config import AdftConfig, plan_job
from scaleup.jobs.popalign.build import validate as validate_build_sets
from scaleup.jobs.popalign.config import BuildSetsConfig
from scaleup.jobs.popalign.keywords import KeywordSet, keyword_set
from scaleup.perception import (ATTRIBUTES, Attribute, AttributeClassifier, ClipZeroShotClassifier, check_class_names,
                                check_classifier, get_attribute)
from scaleup.perception.attributes import fairface_class_index
from scaleup.perception.factory import (CLASSIFIERS, DETECTORS, attribute_spec, check_classifier_spec,
                                        check_detector_name, classifier_needs_clip, make_classifier, make_detector,
                                        register_classifier, resolve_attribute)
from scaleup.perception.faces import find_faces

INK = "ink:red,blue"


# ---------------------------------------------------------------------------------------------- a user's classifier
class InkClassifier(torch.nn.Module):
    """Red against blue ink: logits from the mean red and blue channels (images (B, 3, H, W) in [0, 1])."""

    def __init__(self, class_names=("red", "blue")) -> None:
        super().__init__()
        self.class_names = tuple(class_names)
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        red, blue = images[:, 0].mean(dim=(1, 2)), images[:, 2].mean(dim=(1, 2))
        logits = self.scale * torch.stack([red - blue, blue - red], dim=1)
        return logits if self.class_names == ("red", "blue") else logits.flip(1)


def make_ink_classifier(attribute=None):
    """The documented route: called with attribute= when it takes it."""
    assert attribute is None or isinstance(attribute, Attribute)
    return InkClassifier(("red", "blue") if attribute is None else attribute.class_names)


def make_ink_classifier_without_arguments():
    return InkClassifier()


def make_ink_classifier_in_the_wrong_order():
    return InkClassifier(("blue", "red"))


def make_something_else():
    return 42


SPEC = f"{__name__}:make_ink_classifier"


def _ink_images() -> torch.Tensor:
    images = torch.zeros(2, 3, 16, 16)
    images[0, 0] = 1.0  # red
    images[1, 2] = 1.0  # blue
    return images


# ---------------------------------------------------------------------------------------------- the three jobs
def _evaluation(tmp_path, detector, classifier, attribute):
    return validate_evaluation(EvalConfig(detector=detector, classifier=classifier, attribute=attribute,
                                          out=str(tmp_path / "eval")))


def _adft(tmp_path, detector, classifier, attribute):
    name = resolve_attribute(attribute).name
    preset = {"gender": "gender", "race": "race"}.get(attribute, "gender")
    extra = {} if attribute in ATTRIBUTES else dict(attribute=attribute, lambda_img={name: [8.0, 0.2, 0.2]})
    return plan_job(AdftConfig(preset=preset, detector=detector, classifier=classifier, lambda_face=0.0,
                               output_dir=str(tmp_path / "adft"), **extra), check_models=False)


def _build_sets(tmp_path, detector, classifier, attribute):
    attr = resolve_attribute(attribute)
    keywords = KeywordSet("custom", tuple(f"{c} ink" for c in attr.class_names), attribute, attr.class_names) \
        if attribute not in ATTRIBUTES else keyword_set(attribute)
    return validate_build_sets(BuildSetsConfig(generated="g", out="o", detector=detector, classifier=classifier),
                               keywords)


JOBS = {"evaluate": _evaluation, "adft": _adft, "popalign-build-sets": _build_sets}


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("detector", list(DETECTORS))
def test_every_detector_name_is_accepted_by_every_job(tmp_path, job, detector):
    JOBS[job](tmp_path, detector, "dlib-gender", "gender")


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_every_detector_name_builds(detector):
    try:
        built = make_detector(detector)
    except (ModuleNotFoundError, FileNotFoundError) as err:  # insightface / mtcnn: optional, with their weights
        assert "fairdiff dependency" in str(err) or "not found" in str(err)
        pytest.skip(f"{detector} is optional and not installed here")
    assert built.name == detector and hasattr(built, "expand")


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("detector, classifier, attribute", [
    ("whole-image", SPEC, INK),
    ("centre", "dlib-gender", "gender"),
    ("haar", "clip-zero-shot", "race"),
])
def test_the_three_jobs_accept_the_same_names(tmp_path, job, detector, classifier, attribute):
    JOBS[job](tmp_path, detector, classifier, attribute)


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("detector, classifier, attribute, message", [
    ("yolo", "dlib-gender", "gender", "unknown detector 'yolo'"),
    ("dlib", "resnet", "gender", "unknown classifier 'resnet'"),
    ("dlib", "dlib-gender", "race", "dlib-gender classifies gender, not race"),
    ("dlib", "clip-zero-shot", INK, "needs zero-shot prompts"),
    ("dlib", f"{__name__}:no_such_factory", INK, "has no 'no_such_factory'"),
    ("dlib", "mypackage.:factory", INK, "is malformed"),
])
def test_the_three_jobs_refuse_the_same_bad_names(tmp_path, job, detector, classifier, attribute, message):
    with pytest.raises(ValueError, match=message):
        JOBS[job](tmp_path, detector, classifier, attribute)


# ---------------------------------------------------------------------------------------------- attributes
def test_a_user_defined_attribute_round_trips_and_is_never_a_built_in_one():
    ink = resolve_attribute(INK)
    assert ink == Attribute("ink", ("red", "blue")) and ink.prompts is None and ink.num_classes == 2
    assert attribute_spec(ink) == INK and resolve_attribute(attribute_spec(ink)) == ink
    assert resolve_attribute(" ink : red , blue ") == ink
    assert resolve_attribute(ink) is ink and get_attribute(ink) is ink
    for name, attr in ATTRIBUTES.items():
        assert attribute_spec(attr) == name and resolve_attribute(name) is attr
    check_class_names(("red", "blue"), ink)
    with pytest.raises(ValueError, match="same names in the same order"):
        check_class_names(("blue", "red"), ink)
    check_classifier(InkClassifier(), ink)

    class Subclass(AttributeClassifier):
        def forward(self, faces):
            return faces.new_zeros(faces.shape[0], 2)

    assert Subclass(ink).class_names == ("red", "blue")
    with pytest.raises(ValueError, match="'ink' .* has none"):
        ClipZeroShotClassifier(_TextImageStub(), ink)
    with pytest.raises(ValueError, match="FairFace has no labels for the user-defined attribute 'ink'"):
        fairface_class_index({"gender": "Male", "race": "Black", "age": "20-29"}, ink)


class _TextImageStub:
    logit_scale = 100.0

    def __call__(self, images):
        return images.flatten(1)[:, :4]

    def embed_texts(self, texts):
        return torch.ones(len(texts), 4)


@pytest.mark.parametrize("spec, message", [
    ("height", "unknown attribute 'height'"),
    ("gender:male,female", "'gender' is built in"),
    ("ink:red", "at least 2 distinct classes"),
    ("ink:red,red", "at least 2 distinct classes"),
    ("ink:red,,blue", "malformed"),
    (":red,blue", "malformed"),
    ("ink:red:blue,green", "malformed"),
])
def test_bad_attributes_are_refused_with_what_is_expected(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve_attribute(spec)
    assert "expected" in str(err.value)


# ---------------------------------------------------------------------------------------------- classifiers
def test_a_module_factory_classifier_is_built_checked_and_classifies():
    assert not classifier_needs_clip(SPEC)
    check_classifier_spec(SPEC, INK)
    for spec in (SPEC, f"{__name__}:make_ink_classifier_without_arguments"):
        classifier = make_classifier(spec, INK, device="cpu")
        assert isinstance(classifier, InkClassifier) and not classifier.training
        assert classifier(_ink_images()).argmax(dim=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"classes \['blue', 'red'\] do not match attribute 'ink'.*same order"):
        make_classifier(f"{__name__}:make_ink_classifier_in_the_wrong_order", INK)
    with pytest.raises(ValueError, match="built a int; expected a callable"):
        make_classifier(f"{__name__}:make_something_else", INK)
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_package_xyz.mod' \(No module named"):
        check_classifier_spec("no_such_package_xyz.mod:make", INK)
    with pytest.raises(ValueError, match="has 2 classes .* attribute 'race' has 4"):
        make_classifier(f"{__name__}:make_ink_classifier_without_arguments", "race")


def test_named_classifiers_their_needs_and_their_attributes(tmp_path):
    assert classifier_needs_clip("clip-zero-shot") and classifier_needs_clip(f"probe:{tmp_path}")
    assert not classifier_needs_clip("dlib-gender") and not classifier_needs_clip("dlib-age")
    with pytest.raises(ValueError, match="unknown classifier 'resnet'"):
        classifier_needs_clip("resnet")
    with pytest.raises(ValueError, match="dlib-age classifies age, not gender"):
        check_classifier_spec("dlib-age", "gender")
    with pytest.raises(ValueError, match="holds no probe.json"):
        check_classifier_spec(f"probe:{tmp_path}", "gender")
    (tmp_path / "probe.json").write_text(json.dumps({"attribute": "race", "class_names": list(
        ATTRIBUTES["race"].class_names)}))
    check_classifier_spec(f"probe:{tmp_path}", "race")
    with pytest.raises(ValueError, match="the probe classifies 'race'.*not attribute 'gender'"):
        check_classifier_spec(f"probe:{tmp_path}", "gender")
    with pytest.raises(ValueError, match="needs a CLIP model"):
        make_classifier("clip-zero-shot", "gender")
    zero_shot = make_classifier("clip-zero-shot", "gender", clip_embedder=_TextImageStub())
    assert zero_shot.class_names == ("male", "female")
    with pytest.raises(ValueError, match="unknown detector 'yolo'; expected one of dlib, haar"):
        check_detector_name("yolo")


@pytest.fixture
def registered():
    names = []

    def register(name, *args, **kwargs):
        names.append(name)
        return register_classifier(name, *args, **kwargs)

    yield register
    for name in names:
        CLASSIFIERS.pop(name, None)


def test_a_registered_classifier_is_one_line_and_every_job_accepts_it(tmp_path, registered):
    # registered for an ink attribute with prompts: the same name and classes as ink:red,blue, so the same attribute
    with_prompts = Attribute("ink", ("red", "blue"), (("red ink",), ("blue ink",)))
    registered("test-ink", lambda attribute: InkClassifier(attribute.class_names), needs_clip=False,
               attribute=with_prompts)
    assert "test-ink" in CLASSIFIERS and not classifier_needs_clip("test-ink")
    assert make_classifier("test-ink", INK)(_ink_images()).argmax(dim=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="test-ink classifies ink, not gender"):
        check_classifier_spec("test-ink", "gender")
    for job in JOBS.values():
        job(tmp_path, "whole-image", "test-ink", INK)
    with pytest.raises(ValueError, match="already registered"):
        registered("test-ink", InkClassifier, needs_clip=False)
    with pytest.raises(ValueError, match="malformed"):
        registered("my:ink", InkClassifier, needs_clip=False)
    seen = {}

    def with_clip(attribute, clip_embedder, device):
        seen.update(attribute=attribute, clip_embedder=clip_embedder, device=device)
        return InkClassifier()

    registered("test-ink-clip", with_clip, needs_clip=True)
    stub = _TextImageStub()
    make_classifier("test-ink-clip", INK, clip_embedder=stub, device="cpu")
    assert seen == {"attribute": resolve_attribute(INK), "clip_embedder": stub, "device": "cpu"}


# ---------------------------------------------------------------------------------------------- the jobs' use
def test_whole_image_is_the_region_and_popalign_perceives_with_a_module_factory():
    from scaleup.jobs.popalign.sanity import make_perception

    faces = find_faces(_ink_images(), make_detector("whole-image"))
    assert faces.found.all() and faces.detections[0].tolist() == [0.0, 0.0, 16.0, 16.0]
    perception = make_perception(INK, "whole-image", SPEC)
    assert perception.class_names == ("red", "blue") and perception.description["attribute"] == INK
    found, probs = perception(_ink_images())
    assert found.all() and probs.argmax(axis=1).tolist() == [0, 1]


def test_adft_debiases_a_user_attribute_given_on_the_command_line(tmp_path, monkeypatch):
    from scaleup.job_config import parse_config

    config = parse_config(AdftConfig, ["--attribute", INK, "--lambda-img", '{"ink": [8, 0.2, 0.2]}', "--targets",
                                       '{"ink": [0.7, 0.3]}', "--classifier", SPEC, "--detector", "whole-image",
                                       "--lambda-face", "0", "--output-dir", str(tmp_path)])
    plan = plan_job(config, check_models=False)
    (ink,) = plan.attributes
    assert (ink.name, ink.class_names, ink.target, ink.classifier) == ("ink", ("red", "blue"), (0.7, 0.3), SPEC)
    assert ink.attribute == resolve_attribute(INK) and plan.eval_attribute == INK
    assert (ink.weights.agree, ink.weights.outside_face) == pytest.approx((8.0, 1.6))
    assert plan.needs_clip and plan.needs_dinov2  # L_img is on
    base = dict(attribute=INK, classifier=SPEC, lambda_face=0.0, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"lambda_img\['ink'\]: not given, and preset 'gender' does not debias"):
        plan_job(AdftConfig(**base), check_models=False)
    with pytest.raises(ValueError, match="gender are not debiased by attribute 'ink:red,blue'"):
        plan_job(AdftConfig(**base, lambda_img={"ink": [8, 0.2, 0.2]}, targets={"gender": [0.5, 0.5]}),
                 check_models=False)
    with pytest.raises(ValueError, match="classifier: clip-zero-shot needs zero-shot prompts"):
        plan_job(AdftConfig(**{**base, "classifier": "clip-zero-shot"}, lambda_img={"ink": [8, 0.2, 0.2]}),
                 check_models=False)


@pytest.mark.parametrize("kw, clip, dinov2", [
    (dict(attribute=INK, classifier=SPEC, lambda_img={"ink": [0, 0, 0]}), False, False),
    (dict(classifier="dlib-gender", lambda_img={"gender": [0, 0, 0]}), False, False),
    (dict(classifier="clip-zero-shot", lambda_img={"gender": [0, 0, 0]}), True, False),
    (dict(attribute=INK, classifier=SPEC, lambda_img={"ink": [0, 0, 0]}, evaluate_checkpoints=True,
          eval_attribute="gender", eval_classifier="clip-zero-shot"), True, False),
    (dict(attribute=INK, classifier=SPEC, lambda_img={"ink": [1, 0.2, 0.2]}), True, True),
])
def test_adft_demands_clip_and_dinov2_only_where_used(tmp_path, monkeypatch, kw, clip, dinov2):
    resolved = []
    monkeypatch.setattr("scaleup.models.loading.resolve_model_source", lambda kind, *a, **k: resolved.append(kind))
    plan = plan_job(AdftConfig(lambda_face=0.0, output_dir=str(tmp_path), **kw))
    assert (plan.needs_clip, plan.needs_dinov2) == (clip, dinov2)
    assert resolved == ["sd15"] + ["clip"] * clip + ["dinov2"] * dinov2


def test_tiny_tokenizer_takes_its_corpus_and_context_length(tmp_path):
    from scaleup.models.tiny import tiny_bpe_vocab, tiny_clip_tokenizer, tiny_vocab_size

    assert tiny_bpe_vocab() == tiny_bpe_vocab(64) and tiny_vocab_size() == 578  # defaults: results do not change
    corpus = ["red", "ink", "blue", "ink"]
    vocab, merges = tiny_bpe_vocab(8, corpus=corpus)
    assert 0 < len(merges) <= 8 and len(vocab) == 2 * 256 + len(merges) + 2
    tok = tiny_clip_tokenizer(tmp_path, corpus=corpus, num_merges=8, context_length=16)
    assert tok.model_max_length == 16 and tok.tokenize("ink") == ["ink</w>"]
    with pytest.raises(ValueError, match="context_length must be an integer >= 3"):
        tiny_clip_tokenizer(tmp_path, context_length=2)
