"""Attack metrics: ROC analysis of membership scores and image reconstruction quality."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

__all__ = ["MatchedPairs", "advantage", "match_reconstructions", "mse", "psnr", "roc_auc",
           "roc_curve", "ssim", "tpr_at_fpr"]


def roc_curve(
    labels: np.ndarray, scores: np.ndarray, *, attack: str = "membership attack"
) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (higher score = member).

    Parameters
    ----------
    labels : numpy.ndarray
        1 for members (positives), 0 for non-members; both classes must occur.
    scores : numpy.ndarray
        Attack scores; a larger score means "more likely a member". ``+inf`` and ``-inf``
        are valid (and tie with each other like any equal scores); NaN is not.
    attack : str
        Name of the attack that produced ``scores``, for the error messages.

    Returns
    -------
    fpr, tpr : numpy.ndarray
        Non-decreasing rates starting at (0, 0) and ending at (1, 1), one point per distinct
        score (ties are kept together, as in ``sklearn.metrics.roc_curve`` without dropping
        intermediate points).

    Raises
    ------
    ValueError
        If the shapes differ, a class is missing, or a score is NaN.
    """
    labels, scores = _checked(labels, scores, attack)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # ``!=`` rather than ``np.diff``: inf - inf is NaN, but inf == inf, so tied infinities
    # form one threshold like any other tie.
    last_of_tie = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]),
                        sorted_scores.size - 1]
    tp = np.cumsum(sorted_labels)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]


def _checked(
    labels: np.ndarray, scores: np.ndarray, attack: str
) -> tuple[np.ndarray, np.ndarray]:
    """Labels as bool and scores as float64, after checking what a ROC analysis needs."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"{attack}: labels {labels.shape} and scores {scores.shape} must be "
                         "equal 1-D")
    if labels.all() or not labels.any():
        raise ValueError(f"{attack}: ROC needs at least one member and one non-member")
    nan = int(np.isnan(scores).sum())
    if nan:
        raise ValueError(f"{attack} produced NaN scores for {nan} of {scores.size} examples; "
                         "a NaN cannot be ranked (check the attack's inputs for NaN or "
                         "overflow)")
    return labels, scores


def roc_auc(labels: np.ndarray, scores: np.ndarray, *, attack: str = "membership attack") -> float:
    """Area under the ROC curve (trapezoids, so ties count one half).

    Equals the Mann-Whitney U statistic of the members' scores against the non-members',
    divided by ``members * non_members``; infinite scores are ranked like any other.

    Parameters
    ----------
    labels, scores : numpy.ndarray
        As in :func:`roc_curve`.
    attack : str
        Name of the attack, for the error messages.

    Returns
    -------
    float
        The AUC in [0, 1].
    """
    fpr, tpr = roc_curve(labels, scores, attack=attack)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(
    labels: np.ndarray,
    scores: np.ndarray,
    fpr_target: float,
    *,
    attack: str = "membership attack",
) -> float:
    """Largest true positive rate of a threshold whose false positive rate is <= the target.

    This is the conservative reading used by Carlini et al. (2022): no interpolation towards
    a better point of the curve.

    Parameters
    ----------
    labels, scores : numpy.ndarray
        As in :func:`roc_curve`.
    fpr_target : float
        The largest false positive rate allowed, in [0, 1].
    attack : str
        Name of the attack, for the error messages.

    Returns
    -------
    float
        The true positive rate.
    """
    if not 0.0 <= fpr_target <= 1.0:
        raise ValueError(f"fpr_target must be in [0, 1], got {fpr_target}")
    fpr, tpr = roc_curve(labels, scores, attack=attack)
    return float(tpr[fpr <= fpr_target + 1e-12].max())


def advantage(
    labels: np.ndarray, scores: np.ndarray, *, attack: str = "membership attack"
) -> float:
    """Membership advantage ``max_t TPR(t) - FPR(t)`` (Yeom et al. 2018).

    Parameters
    ----------
    labels, scores : numpy.ndarray
        As in :func:`roc_curve`.
    attack : str
        Name of the attack, for the error messages.

    Returns
    -------
    float
        The advantage in [0, 1].
    """
    fpr, tpr = roc_curve(labels, scores, attack=attack)
    return float(np.max(tpr - fpr))


def mse(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Mean squared error per example (first axis), images in [0, 1]."""
    diff = np.asarray(original, np.float64) - np.asarray(reconstruction, np.float64)
    return (diff**2).reshape(len(diff), -1).mean(axis=1)


def psnr(original: np.ndarray, reconstruction: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio ``10 log10(L^2 / MSE)`` in dB per example (first axis);
    ``inf`` for a perfect reconstruction."""
    err = mse(original, reconstruction)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / err)


def ssim(
    original: np.ndarray,
    reconstruction: np.ndarray,
    data_range: float = 1.0,
    window: int = 7,
    sigma: float = 1.5,
) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) per example, by scikit-image.

    Each pair is scored by ``skimage.metrics.structural_similarity`` with Gaussian weights
    (``sigma``, truncated at 3.5 sigma, reflected at the border), sample covariances,
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and the mean over channels and over the pixels
    at least ``window // 2`` from the border. Spatial axes
    of size 1 (flat feature vectors stored as ``(N, C, 1, W)``) are dropped, so a vector is
    scored as a 1-D signal.

    Parameters
    ----------
    original, reconstruction : numpy.ndarray
        Images of shape ``(N, C, H, W)`` with values in ``[0, data_range]``.
    data_range : float
        Dynamic range L of the pixel values.
    window : int
        Largest odd window size; smaller images use the largest odd size that fits.
    sigma : float
        Standard deviation of the Gaussian weights, in pixels.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64, one SSIM per example in [-1, 1], 1 for identical images.

    Raises
    ------
    ValueError
        If the shapes differ or are not 4-D, or a spatial axis has 2 pixels (no odd
        window of at least 3 fits).
    """
    x, y = np.asarray(original, np.float64), np.asarray(reconstruction, np.float64)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) arrays of one shape, got {x.shape}, "
                         f"{y.shape}")
    spatial = tuple(size for size in x.shape[2:] if size > 1)
    size = min(window, *spatial) if spatial else 1
    size -= 1 - size % 2  # the largest odd size that fits
    if size < 3:
        raise ValueError(f"SSIM needs at least 3 pixels along each spatial axis, got "
                         f"{x.shape[2:]}")
    shape = (x.shape[1], *spatial)
    return np.array([
        structural_similarity(a.reshape(shape), b.reshape(shape), data_range=data_range,
                              gaussian_weights=True, sigma=sigma, win_size=size,
                              channel_axis=0)
        for a, b in zip(x, y, strict=True)
    ])


class MatchedPairs(NamedTuple):
    """Reconstructions paired one-to-one with the originals of the attacked batch.

    Attributes
    ----------
    original, reconstruction : numpy.ndarray
        ``(K,)`` int64 indices of the paired originals and reconstructions,
        ``K = min(N, M)``.
    psnr, ssim : numpy.ndarray
        ``(K,)`` float64 PSNR (dB, ``inf`` for an exact pair) and SSIM of each pair.
    """

    original: np.ndarray
    reconstruction: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def match_reconstructions(
    originals: np.ndarray, reconstructions: np.ndarray, data_range: float = 1.0
) -> MatchedPairs:
    """Pair each reconstruction with a true example by the assignment of least total MSE.

    The pairing is the optimal one-to-one assignment (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``) on the pairwise MSE, so the order in which an
    attack returns its reconstructions does not matter, and no original is credited twice.
    With fewer reconstructions than originals only the reconstructions are paired (and
    vice versa): the scores say how good what was reconstructed is, not how much of the
    batch was.

    Parameters
    ----------
    originals : numpy.ndarray
        ``(N, C, H, W)`` the attacked batch, values in ``[0, data_range]``.
    reconstructions : numpy.ndarray
        ``(M, C, H, W)`` the attack's reconstructions.
    data_range : float
        Dynamic range of the pixel values (for PSNR and SSIM).

    Returns
    -------
    MatchedPairs
        The pairs (in increasing order of original index) and their PSNR and SSIM.

    Raises
    ------
    ValueError
        If the images' shapes differ, or either set is empty.
    """
    a, b = np.asarray(originals, np.float64), np.asarray(reconstructions, np.float64)
    if a.shape[1:] != b.shape[1:] or not len(a) or not len(b):
        raise ValueError(f"expected non-empty image batches of one image shape, got "
                         f"{a.shape}, {b.shape}")
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    cost = ((flat_a[:, None, :] - flat_b[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return MatchedPairs(rows.astype(np.int64), cols.astype(np.int64),
                        psnr(a[rows], b[cols], data_range), ssim(a[rows], b[cols], data_range))
