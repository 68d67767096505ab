"""Attack metrics: ROC analysis of membership scores and image reconstruction quality."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["roc_curve", "roc_auc", "tpr_at_fpr", "advantage", "mse", "psnr", "ssim"]


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
    """Peak signal-to-noise ratio in dB per example; ``inf`` for a perfect reconstruction."""
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
    """Structural similarity (Wang et al. 2004) per example, Gaussian window, mean over pixels.

    Parameters
    ----------
    original, reconstruction : numpy.ndarray
        Images of shape ``(N, C, H, W)`` (channels are averaged) with values in
        ``[0, data_range]``.
    data_range : float
        Dynamic range L of the pixel values (``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``).
    window, sigma : int, float
        Size and standard deviation of the Gaussian window; only windows that fit entirely
        inside the image are used ("valid" filtering), as in scikit-image with
        ``gaussian_weights=True``.

    Returns
    -------
    numpy.ndarray
        One SSIM per example, 1 for identical images.
    """
    x = torch.as_tensor(np.asarray(original), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(reconstruction), dtype=torch.float64)
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) arrays of one shape, got {x.shape}, {y.shape}")
    window = min(window, x.shape[-1], x.shape[-2])
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = torch.outer(g, g) / g.sum() ** 2
    kernel = kernel.expand(x.shape[1], 1, window, window).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    # Unbiased (sample) covariances, as scikit-image computes them.
    n = window * window
    cov_norm = n / (n - 1)
    var_x = cov_norm * (blur(x * x) - mu_x**2)
    var_y = cov_norm * (blur(y * y) - mu_y**2)
    cov = cov_norm * (blur(x * y) - mu_x * mu_y)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.reshape(len(x), -1).mean(dim=1).numpy()
