"""Per-site preprocessing: standardisation statistics and a stratified holdout split.

Statistics are computed per site from that site's own training data, never
pooled across sites: a site's raw data (and statistics of it) stay on the site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Subtract a mean and divide by a standard deviation, fitted on one site's training data.

    Statistics are computed per site from the site's own training data only,
    never pooled with other sites' data.

    Parameters
    ----------
    mean, std : numpy.ndarray
        ``float32`` arrays broadcastable to one sample (``x.shape[1:]``), e.g.
        ``(F,)`` for tabular data or ``(C, 1, 1)`` for per-channel image
        statistics. ``std`` is positive (zero-variance entries have ``std = 1``).

    Raises
    ------
    ValueError
        If ``mean`` and ``std`` differ in shape or ``std`` is not positive and finite.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if mean.shape != std.shape:
            raise ValueError(f"Standardizer: mean shape {mean.shape} != std shape {std.shape}")
        if not (np.all(np.isfinite(std)) and np.all(std > 0) and np.all(np.isfinite(mean))):
            raise ValueError("Standardizer: mean must be finite and std finite and positive")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, x: np.ndarray, axes: tuple[int, ...] = (0,)) -> Standardizer:
        """Compute statistics (in float64) over ``axes`` of this site's training inputs.

        Parameters
        ----------
        x : numpy.ndarray
            Training inputs ``(N, ...)`` with ``N >= 1``.
        axes : tuple of int
            Axes to reduce; must include 0 (the samples). ``(0,)`` gives
            per-feature statistics, ``(0, 2, 3)`` per-channel image statistics.

        Returns
        -------
        Standardizer
            ``mean``/``std`` of shape ``x.shape[1:]`` with reduced axes set to 1.

        Raises
        ------
        ValueError
            If ``x`` is empty, ``axes`` lacks 0 or names an axis ``x`` lacks.
        """
        axes = tuple(int(a) for a in axes)
        if 0 not in axes or any(a < 0 or a >= x.ndim for a in axes):
            raise ValueError(
                f"Standardizer.fit: axes must include 0 and lie in [0, {x.ndim}), got {axes}"
            )
        if len(x) == 0:
            raise ValueError("Standardizer.fit: no training samples")
        data = np.asarray(x, dtype=np.float64)
        mean = data.mean(axis=axes, keepdims=True)[0]
        std = data.std(axis=axes, keepdims=True)[0]
        return cls(mean=mean, std=np.where(std > 0, std, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Return ``(x - mean) / std`` as ``float32``; ``x`` is ``(N, ...)`` like the fitted data.

        Raises
        ------
        ValueError
            If ``x`` does not have one more dimension than ``mean``.
        """
        if x.ndim != self.mean.ndim + 1:
            raise ValueError(
                f"Standardizer.apply: x of shape {x.shape} does not match statistics of shape "
                f"{self.mean.shape}"
            )
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"mean": nested list, "std": nested list}``."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))


def _quotas(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Holdout size per class: largest remainders of ``fraction * count``, each below ``count``."""
    eligible = counts >= 2
    exact = np.where(eligible, fraction * counts, 0.0)
    quotas = np.minimum(np.floor(exact).astype(np.int64), np.maximum(counts - 1, 0))
    target = int(np.floor(fraction * counts[eligible].sum() + 0.5))
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    for k in order:
        if quotas.sum() >= target:
            break
        if eligible[k] and quotas[k] < counts[k] - 1:
            quotas[k] += 1
    return quotas


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and holdout, keeping each class's share.

    Each class with at least 2 examples contributes about ``fraction`` of its
    examples (rounded so that the total is ``round(fraction * n)`` over those
    classes) and keeps at least one in train; classes with one example stay in
    train. Used for each client's local validation split and for test splits.

    Parameters
    ----------
    y : numpy.ndarray
        Labels ``(N,)``.
    fraction : float
        Holdout fraction in ``[0, 1)``; 0 gives an empty holdout.
    seed : int
        Seed of the shuffle within each class.

    Returns
    -------
    tuple of numpy.ndarray
        ``(train_idx, holdout_idx)``, sorted ``int64`` indices; train is never
        empty when ``N >= 1``.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or ``fraction`` is outside ``[0, 1)``.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"stratified_holdout: y must be 1-D, got shape {y.shape}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"stratified_holdout: fraction must lie in [0, 1), got {fraction}")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    holdout = [
        rng.permutation(np.flatnonzero(inverse == k))[:quota]
        for k, quota in enumerate(_quotas(counts, fraction))
    ]
    held = np.zeros(len(y), dtype=bool)
    held[np.concatenate([np.empty(0, dtype=np.int64), *holdout])] = True
    return np.flatnonzero(~held), np.flatnonzero(held)
