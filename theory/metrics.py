"""Fairness metrics of the four seeds, each stated once.

- :func:`frequency_bias` — seed 000 [0124]: mean pairwise |freq(i) - freq(j)| over the K groups.
- :func:`discrepancy` — seed 001 eq. (11): || E_ideal[p(u|x)] - E_theta[p(u|x)] ||_2.
- :func:`tpr_bias` — seed 002 eq. (12): weighted average pairwise TPR disparity across protected groups.
- :func:`bias_performance_coefficient` — seed 002 eq. (13).
- :func:`bias_amplification` — seed 002 eq. (14).
- :func:`symmetric_score_kl` — seed 002 eq. (15): symmetric KL of smoothed classifier-score histograms.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike

from theory.validation import check_count, check_distribution, check_probabilities


def _binary_vector(values: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] == 0 or (n is not None and v.shape[0] != n):
        expected = f"length {n}" if n is not None else "at least one entry"
        raise ValueError(f"{name} must be a 1-D array with {expected}; got shape {v.shape}")
    if v.dtype != bool:
        if not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name} must be binary (bool or 0/1); got values {np.unique(v)[:5].tolist()}")
        v = v.astype(bool)
    return v


def class_frequencies(labels: ArrayLike, n_classes: int) -> np.ndarray:
    """freq(k) = #{i : label_i = k} / N for k = 0..K-1, from integer class labels."""
    n_classes = check_count(n_classes, "n_classes", minimum=1)  # first: a class range [0, -1] cannot be stated
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class indices; got shape {lab.shape}")
    if lab.dtype.kind not in "iu" or lab.min() < 0 or lab.max() >= n_classes:
        raise ValueError(f"labels must be integers in [0, {n_classes - 1}]; got dtype {lab.dtype}, "
                         f"range [{lab.min()}, {lab.max()}]")
    return np.bincount(lab, minlength=n_classes) / lab.shape[0]


def frequency_bias(freq: ArrayLike) -> float:
    """bias(P) = (1 / (K (K-1) / 2)) sum_{i<j} |freq(i) - freq(j)| (seed 000, [0124]).

    ``freq`` are the K groups' frequencies among the generated images (e.g. :func:`class_frequencies`); 0 means a
    perfectly balanced batch, and a batch entirely in one group scores 2 / K.
    """
    f = check_distribution(freq, name="freq")
    k = f.shape[0]
    return float(sum(abs(f[i] - f[j]) for i, j in combinations(range(k), 2)) / (k * (k - 1) / 2))


def discrepancy(probs: ArrayLike, ideal: ArrayLike) -> float:
    """Fairness discrepancy f = || E_ideal[p(u|x)] - E_theta[p(u|x)] ||_2 (seed 001, eq. 11; Choi et al. 2020).

    Parameters
    ----------
    probs : array-like of shape (N, K)
        Attribute-classifier probabilities p(u|x) of the model's samples (one-hot rows for hard labels).
    ideal : array-like of shape (K,) or (M, K)
        The ideal distribution's expected p(u|x) directly (e.g. (0.5, 0.5)), or classifier probabilities of samples
        from it.
    """
    p = check_probabilities(probs)
    ideal_arr = np.asarray(ideal, dtype=np.float64)
    if ideal_arr.ndim == 2:
        ideal_mean = check_probabilities(ideal_arr, name="ideal").mean(axis=0)
        if ideal_mean.shape[0] != p.shape[1]:
            raise ValueError(f"ideal has K = {ideal_mean.shape[0]} classes but probs have K = {p.shape[1]}")
    else:
        ideal_mean = check_distribution(ideal_arr, p.shape[1], name="ideal")
    return float(np.linalg.norm(ideal_mean - p.mean(axis=0)))


def tpr_bias(
    y_true: ArrayLike, y_pred: ArrayLike, protected: ArrayLike, *, weights: ArrayLike | None = None
) -> float:
    """Bias(A_t): weighted average pairwise TPR disparity across protected groups (seed 002, eq. 12).

        Bias = sum_{i<j} |TPR_i - TPR_j| w_i w_j / sum_{i<j} w_i w_j

    TPR_i is the true positive rate for the target attribute A_t among the samples of protected group i. Eq. 12
    prints the signed difference TPR_i - TPR_j, which would depend on how the groups are numbered and could cancel;
    following the disparity measures it cites (Dhar et al.), the absolute difference is used.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
        True and predicted A_t (bool or 0/1).
    protected : array-like of shape (N,)
        Protected-group label of each sample (any hashable values; at least two groups).
    weights : array-like of shape (G,), optional
        w_i per group in sorted label order; default: each group's share of the positive samples.
    """
    yt = _binary_vector(y_true, "y_true")
    yp = _binary_vector(y_pred, "y_pred", yt.shape[0])
    groups = np.asarray(protected)
    if groups.shape != yt.shape:
        raise ValueError(f"protected must have one label per sample (shape {yt.shape}); got shape {groups.shape}")
    labels = np.unique(groups)
    if labels.shape[0] < 2:
        raise ValueError(f"tpr_bias needs at least two protected groups; got {labels.tolist()}")
    tpr, positives = [], []
    for g in labels:
        pos = yt & (groups == g)
        if not pos.any():
            raise ValueError(f"protected group {g!r} has no positive samples, so its TPR is undefined")
        tpr.append(yp[pos].mean())
        positives.append(pos.sum())
    w = np.asarray(positives, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (labels.shape[0],) or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be {labels.shape[0]} non-negative finite numbers, one per group; got {w.tolist()}")
    pairs = list(combinations(range(labels.shape[0]), 2))
    denom = sum(w[i] * w[j] for i, j in pairs)
    if denom == 0:
        raise ValueError("weights give every pair of groups zero weight")
    return float(sum(abs(tpr[i] - tpr[j]) * w[i] * w[j] for i, j in pairs) / denom)


def true_positive_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """TPR = #{pred & true} / #{true} for binary labels."""
    yt = _binary_vector(y_true, "y_true")
    yp = _binary_vector(y_pred, "y_pred", yt.shape[0])
    if not yt.any():
        raise ValueError("y_true has no positive samples, so the TPR is undefined")
    return float(yp[yt].mean())


def bias_performance_coefficient(bias: float, bias_debiased: float, tpr: float, tpr_debiased: float) -> float:
    """BPC = (Bias - Bias_deb) / Bias - (TPR - TPR_deb) / TPR (seed 002, eq. 13; Dhar et al.).

    Positive when debiasing lowers the bias by a larger fraction than it lowers the TPR; 0 for no change.
    """
    if not bias > 0 or not tpr > 0:
        raise ValueError(f"BPC divides by the original Bias and TPR, which must be > 0; got bias={bias!r}, tpr={tpr!r}")
    return float((bias - bias_debiased) / bias - (tpr - tpr_debiased) / tpr)


def bias_amplification(y_true: ArrayLike, y_pred: ArrayLike, protected: ArrayLike) -> float:
    """BA(A_t) for one protected attribute value A_p (seed 002, eq. 14; Wang & Russakovsky 2021).

        BA = +(P(A_t | A_p) - P(pred A_t | A_p)) / P(pred A_t | A_p)   if P(A_t, A_p) > P(A_t) P(A_p)
             -(P(A_t | A_p) - P(pred A_t | A_p)) / P(pred A_t | A_p)   otherwise

    implemented as printed in the seed. ``protected`` marks the samples with A_p (bool or 0/1).
    """
    yt = _binary_vector(y_true, "y_true")
    yp = _binary_vector(y_pred, "y_pred", yt.shape[0])
    ap = _binary_vector(protected, "protected", yt.shape[0])
    if not ap.any():
        raise ValueError("protected marks no sample, so P(A_t | A_p) is undefined")
    p_true = yt[ap].mean()
    p_pred = yp[ap].mean()
    if p_pred == 0:
        raise ValueError("no sample with A_p is predicted to have A_t, so BA (eq. 14) divides by zero")
    sign = 1.0 if (yt & ap).mean() > yt.mean() * ap.mean() else -1.0
    return float(sign * (p_true - p_pred) / p_pred)


def symmetric_score_kl(
    scores: ArrayLike, protected: ArrayLike, *, bins: int = 20, smoothing: float = 1e-3
) -> float:
    """KL(S_{A_p=-1} || S_{A_p=1}) + KL(S_{A_p=1} || S_{A_p=-1}) (seed 002, eq. 15).

    S are normalised histograms of the classifier's A_t scores in [0, 1] (``bins`` equal bins), smoothed by adding
    ``smoothing`` to every bin count before normalising so that both KL terms are finite; compute it on the samples
    of one A_t class, as in the seed.
    """
    s = np.asarray(scores, dtype=np.float64)
    # scores first: their length is what protected must match, so an empty or 2-D scores is reported as such
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty 1-D array of classifier scores in [0, 1]; got shape {s.shape}")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError("scores must be a 1-D array of finite classifier scores in [0, 1]")
    ap = _binary_vector(protected, "protected", s.shape[0])
    if ap.all() or not ap.any():
        raise ValueError("symmetric_score_kl needs samples both with and without A_p")
    if int(bins) < 1 or not smoothing > 0:
        raise ValueError(f"bins must be >= 1 and smoothing > 0; got bins={bins!r}, smoothing={smoothing!r}")
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    hist_pos = np.histogram(s[ap], bins=edges)[0] + smoothing
    hist_neg = np.histogram(s[~ap], bins=edges)[0] + smoothing
    p_pos, p_neg = hist_pos / hist_pos.sum(), hist_neg / hist_neg.sum()
    return float(np.sum(p_neg * np.log(p_neg / p_pos)) + np.sum(p_pos * np.log(p_pos / p_neg)))
