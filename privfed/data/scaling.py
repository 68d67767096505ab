"""Feature scaling: fixed public constants, or statistics of the training part only.

``"centered"`` and ``"unit"`` use only the known range of the raw features (0..255 for
8-bit pixels), so they need no statistics of anyone's data and suit federated image data.
``"standard"`` uses the pooled training mean and standard deviation: fine for the embedded
tabular sets, but in a federation those statistics come from every client's private data.
"""

from __future__ import annotations

import numpy as np

from privfed.data.files.preprocess import Standardizer

SCALINGS = ("centered", "standard", "unit", "none")
PIXEL_MAX = 255.0
"""The largest value of an 8-bit pixel: the public range of "unit" and "centered"."""
"""Every scaling name; a dataset supports a subset of them (see :func:`check_scaling`)."""


def check_scaling(
    scaling: str | None, *, default: str, allowed: tuple[str, ...], dataset: str
) -> str:
    """Return the scaling to apply, validating it against what a dataset supports.

    Parameters
    ----------
    scaling : str or None
        Requested scaling; ``None`` selects ``default``.
    default : str
        The dataset's default scaling.
    allowed : tuple of str
        Scalings the dataset supports.
    dataset : str
        Dataset name, used in the error message.

    Returns
    -------
    str
        The scaling to apply.

    Raises
    ------
    ValueError
        If ``scaling`` is not one of ``allowed``.
    """
    chosen = default if scaling is None else scaling
    if chosen not in allowed:
        raise ValueError(
            f"scaling={chosen!r} is not supported for dataset {dataset!r}; "
            f"allowed: {', '.join(repr(s) for s in allowed)}"
        )
    return chosen


def standardize(
    train: np.ndarray, test: np.ndarray, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the training mean and divide by the training standard deviation.

    Statistics are computed over ``axes`` of ``train`` only (in float64) and
    applied to both arrays. Zero-variance entries are divided by 1, not 0.

    Parameters
    ----------
    train, test : numpy.ndarray
        Arrays with the same shape apart from the first axis.
    axes : tuple of int
        Axes reduced when computing statistics: ``(0,)`` for per-feature,
        ``(0, 2, 3)`` for per-channel image statistics.

    Returns
    -------
    tuple of numpy.ndarray
        Standardised ``(train, test)`` as float32.
    """
    scaler = Standardizer.fit(train, axes)
    return scaler.apply(train), scaler.apply(test)


def divide(train: np.ndarray, test: np.ndarray, max_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Divide both arrays by the known maximum of the raw features.

    Parameters
    ----------
    train, test : numpy.ndarray
        Raw arrays.
    max_value : float
        Known maximum raw value (255 for 8-bit pixels, 16 for ``digits``).

    Returns
    -------
    tuple of numpy.ndarray
        ``(train / max_value, test / max_value)`` as float32.
    """
    scale = np.float32(max_value)
    train, test = train.astype(np.float32), test.astype(np.float32)
    train /= scale  # in place: one float32 copy of the data at a time, not two
    test /= scale
    return train, test


def center(train: np.ndarray, test: np.ndarray, max_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Map ``[0, max_value]`` linearly onto ``[-1, 1]``.

    With ``max_value = 255`` this is MedMNIST's reference preprocessing,
    ``ToTensor()`` then ``Normalize(mean=0.5, std=0.5)``: ``x / 255 * 2 - 1``.

    Parameters
    ----------
    train, test : numpy.ndarray
        Raw arrays.
    max_value : float
        Known maximum raw value (255 for 8-bit pixels).

    Returns
    -------
    tuple of numpy.ndarray
        ``(2 * train / max_value - 1, 2 * test / max_value - 1)`` as float32.
    """
    half = np.float32(max_value / 2)
    train, test = train.astype(np.float32), test.astype(np.float32)
    for x in (train, test):  # in place: one float32 copy of the data at a time, not two
        x /= half
        x -= 1
    return train, test


def apply_scaling(
    scaling: str,
    train: np.ndarray,
    test: np.ndarray,
    *,
    axes: tuple[int, ...],
    max_value: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a validated scaling (see :func:`check_scaling`) to a train/test pair.

    Parameters
    ----------
    scaling : {"centered", "standard", "unit", "none"}
        Scaling to apply.
    train, test : numpy.ndarray
        Raw arrays.
    axes : tuple of int
        Reduction axes for ``"standard"``.
    max_value : float or None
        Known maximum raw value for ``"unit"`` and ``"centered"``; must be given for them.

    Returns
    -------
    tuple of numpy.ndarray
        Scaled ``(train, test)`` as float32.
    """
    if scaling == "standard":
        return standardize(train, test, axes)
    if scaling in ("unit", "centered"):
        if max_value is None:
            raise ValueError(f"scaling={scaling!r} needs a known maximum value")
        return (divide if scaling == "unit" else center)(train, test, max_value)
    if scaling == "none":
        return train.astype(np.float32), test.astype(np.float32)
    raise ValueError(f"scaling={scaling!r} is unknown; allowed: {', '.join(map(repr, SCALINGS))}")
