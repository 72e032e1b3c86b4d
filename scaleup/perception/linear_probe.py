"""A linear or one-hidden-layer MLP head on CLIP image features (classifier (b); seed 000 [0121]-[0124] trains its
gender / race / age classifiers on CelebA and FairFace).

Fitting uses scikit-learn on cached embeddings: ``StandardScaler`` + ``LogisticRegression`` (linear) or
``MLPClassifier`` (ReLU MLP), the usual CLIP linear-probe recipe. The fitted estimator is then copied *exactly*
into a torch :class:`ProbeHead` (the scaler folded into the first layer), so the head's softmax equals sklearn's
``predict_proba`` and the head is differentiable; :class:`ClipProbeClassifier` chains embedder and head. Heads
are saved as safetensors + a JSON sidecar (attribute, classes, layer sizes, metrics, provenance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .attributes import ATTRIBUTES, Attribute, check_class_names, get_attribute
from .classifiers import AttributeClassifier
from .embedders import ImageEmbedder
from scaleup.atomic_write import atomic_write, atomic_write_text

__all__ = ["ClipProbeClassifier", "ProbeHead", "ProbeReport", "fit_probe", "load_probe", "save_probe"]

HEAD_FILE = "head.safetensors"
META_FILE = "probe.json"


class ProbeHead(nn.Module):
    """Features (B, D) -> logits (B, K): ``Linear`` (hidden = 0) or ``Linear -> ReLU -> Linear``."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2 or hidden < 0:
            raise ValueError(f"ProbeHead needs in_dim >= 1, num_classes >= 2, hidden >= 0; got {in_dim}, "
                             f"{num_classes}, {hidden}")
        self.in_dim, self.num_classes, self.hidden = int(in_dim), int(num_classes), int(hidden)
        layers: list[nn.Module] = ([nn.Linear(in_dim, num_classes)] if hidden == 0
                                   else [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)])
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features.to(self.layers[0].weight.dtype))

    @classmethod
    def from_sklearn(cls, scaler, estimator, num_classes: int, *, dtype: torch.dtype = torch.float64) -> "ProbeHead":
        """Copy a fitted ``StandardScaler`` + ``LogisticRegression`` / ``MLPClassifier`` exactly.

        Classes are the estimator's ``classes_`` (0..K-1, all present). sklearn keeps one logit z for two classes
        (P(class 1) = sigmoid(z)); the head uses logits (0, z), whose softmax is the same.
        """
        classes = np.asarray(estimator.classes_)
        if classes.tolist() != list(range(num_classes)):
            raise ValueError(f"estimator was fitted on classes {classes.tolist()}, expected 0..{num_classes - 1}")
        mean = np.asarray(scaler.mean_, dtype=np.float64)
        scale = np.asarray(scaler.scale_, dtype=np.float64)
        if hasattr(estimator, "coefs_"):  # MLPClassifier
            if len(estimator.coefs_) != 2 or estimator.activation != "relu":
                raise ValueError("only a one-hidden-layer ReLU MLPClassifier can be copied")
            w1, b1 = estimator.coefs_[0].T, estimator.intercepts_[0]
            w2, b2 = estimator.coefs_[1].T, estimator.intercepts_[1]
            hidden = w1.shape[0]
        else:  # LogisticRegression
            w1, b1, hidden = None, None, 0
            w2, b2 = np.asarray(estimator.coef_), np.asarray(estimator.intercept_)
        if w2.shape[0] == 1:  # binary: logits (0, z)
            w2 = np.concatenate([np.zeros_like(w2), w2])
            b2 = np.concatenate([np.zeros_like(b2), b2])
        head = cls(len(mean), num_classes, hidden).to(dtype)
        # the scaler x -> (x - mean) / scale folds into the first layer: W / scale, b - W (mean / scale)
        first_w, first_b = (w2, b2) if hidden == 0 else (w1, b1)
        folded_w = first_w / scale
        folded_b = first_b - folded_w @ mean
        with torch.no_grad():
            head.layers[0].weight.copy_(torch.from_numpy(folded_w))
            head.layers[0].bias.copy_(torch.from_numpy(folded_b))
            if hidden:
                head.layers[2].weight.copy_(torch.from_numpy(w2))
                head.layers[2].bias.copy_(torch.from_numpy(b2))
        return head


class ClipProbeClassifier(AttributeClassifier):
    """Face crops -> ``head(embedder(faces))``; both frozen here (``requires_grad_(False)`` on the head)."""

    def __init__(self, embedder: ImageEmbedder, head: ProbeHead, attribute: str | Attribute) -> None:
        super().__init__(attribute)
        if head.num_classes != self.num_classes:
            raise ValueError(f"probe head has {head.num_classes} classes but attribute {self.attribute.name!r} has "
                             f"{self.num_classes}: {list(self.class_names)}")
        if head.in_dim != embedder.dim:
            raise ValueError(f"probe head takes {head.in_dim}-d features but the embedder gives {embedder.dim}-d")
        self.embedder, self.head = embedder, head.requires_grad_(False)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedder(faces))


@dataclass
class ProbeReport:
    """Fit summary: sizes and accuracies on the training and the held-out evaluation split."""

    num_train: int
    num_eval: int
    train_accuracy: float
    eval_accuracy: float | None
    eval_per_class_accuracy: dict[str, float | None] = field(default_factory=dict)
    eval_confusion: list[list[int]] = field(default_factory=list)
    class_counts_train: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_probe(train_features: np.ndarray, train_labels: np.ndarray, attribute: str | Attribute, *,
              eval_features: np.ndarray | None = None, eval_labels: np.ndarray | None = None, hidden: int = 0,
              C: float = 1.0, seed: int = 0, max_iter: int = 2000) -> tuple[ProbeHead, ProbeReport, Any]:
    """Fit the probe with scikit-learn and copy it into a :class:`ProbeHead`.

    Parameters
    ----------
    train_features, train_labels : (N, D) float, (N,) int in 0..K-1
    attribute : str or Attribute
    eval_features, eval_labels : optional held-out split, reported (not used for fitting)
    hidden : int
        0: logistic regression (inverse regularisation ``C``); > 0: MLP with that many ReLU units
        (L2 penalty ``alpha = 1 / C``: sklearn's MLP divides alpha by N, so this is the same strength as the
        logistic regression's).
    seed : int
        The MLP's initialisation and shuffling.

    Returns
    -------
    head, report, sklearn_pipeline
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    attr = get_attribute(attribute)
    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 2:
        raise ValueError(f"train_features must be (N, D) with N >= 2 and train_labels (N,); got {x.shape}, {y.shape}")
    missing = [attr.class_names[k] for k in range(attr.num_classes) if not np.any(y == k)]
    if missing or y.min() < 0 or y.max() >= attr.num_classes:
        raise ValueError(f"train_labels must cover every class 0..{attr.num_classes - 1} of {attr.name!r}; "
                         f"classes without training images: {missing}")
    if not (C > 0):
        raise ValueError(f"C must be > 0; got {C}")
    estimator = (LogisticRegression(C=C, max_iter=max_iter) if hidden == 0 else
                 MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1.0 / C, max_iter=max_iter,
                               random_state=seed))
    pipeline = make_pipeline(StandardScaler(), estimator).fit(x, y)
    head = ProbeHead.from_sklearn(pipeline[0], pipeline[-1], attr.num_classes).float()
    report = ProbeReport(num_train=len(y), num_eval=0, train_accuracy=float(pipeline.score(x, y)),
                         eval_accuracy=None,
                         class_counts_train={c: int(np.sum(y == k)) for k, c in enumerate(attr.class_names)})
    if eval_features is not None and len(eval_features):
        from sklearn.metrics import confusion_matrix

        ex, ey = np.asarray(eval_features, dtype=np.float64), np.asarray(eval_labels)
        pred = pipeline.predict(ex)
        report.num_eval = len(ey)
        report.eval_accuracy = float(np.mean(pred == ey))
        report.eval_per_class_accuracy = {
            c: (float(np.mean(pred[ey == k] == k)) if np.any(ey == k) else None)
            for k, c in enumerate(attr.class_names)}
        report.eval_confusion = confusion_matrix(ey, pred, labels=list(range(attr.num_classes))).tolist()
    return head, report, pipeline


def save_probe(folder: str | Path, head: ProbeHead, attribute: str | Attribute,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write ``folder/head.safetensors`` and ``folder/probe.json`` (attribute, classes, sizes, ``metadata``)."""

    attr = get_attribute(attribute)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    from safetensors.torch import save as save_bytes

    atomic_write(folder / HEAD_FILE, lambda f: f.write(save_bytes(tensors)))
    meta = {"attribute": attr.name, "class_names": list(attr.class_names), "in_dim": head.in_dim,
            "num_classes": head.num_classes, "hidden": head.hidden, **(metadata or {})}
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2))
    return folder


def load_probe(folder: str | Path) -> tuple[ProbeHead, Attribute, dict[str, Any]]:
    """Read a probe written by :func:`save_probe`: (head, attribute, metadata).

    Raises
    ------
    ValueError
        If the folder lacks the two files or its classes do not match the named attribute.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file() or not (folder / META_FILE).is_file():
        raise ValueError(f"probe folder {str(folder)!r} must contain {HEAD_FILE} and {META_FILE} "
                         "(written by save_probe / python -m scaleup.perception.train_probe)")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        # a probe of a user-defined attribute (folder/<class>/ layout) carries its classes in probe.json
        attr = get_attribute(meta["attribute"]) if meta["attribute"] in ATTRIBUTES else \
            Attribute(meta["attribute"], tuple(meta["class_names"]))
        sizes = (int(meta["in_dim"]), int(meta["num_classes"]), int(meta["hidden"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"probe file {folder / META_FILE} is damaged ({type(err).__name__}: {err}); "
                         "write it again with python -m scaleup.perception.train_probe") from None
    check_class_names(meta["class_names"], attr, owner=f"probe {folder}")
    head = ProbeHead(*sizes)
    try:
        head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    except Exception as err:  # safetensors' own error type differs by version; a wrong shape is a RuntimeError
        raise ValueError(f"probe file {folder / HEAD_FILE} is damaged or does not match {META_FILE} "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); write it again "
                         "with python -m scaleup.perception.train_probe") from None
    return head, attr, meta
