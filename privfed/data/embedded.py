"""Datasets bundled with scikit-learn: no files and no download needed.

Both are split with a seeded, stratified
``sklearn.model_selection.train_test_split`` and scaled with statistics of the
training part only.

* ``digits``: 1797 8x8 handwritten digits, 10 classes, raw pixel values
  0..16, returned as images ``(N, 1, 8, 8)``. Scalings: ``"standard"``
  (default, per pixel), ``"unit"`` (``X / 16``) and ``"none"``.
* ``breast_cancer``: Wisconsin diagnostic, 569 samples, 30 features,
  2 classes, returned as ``(N, 30)``. Scalings: ``"standard"`` (default,
  per feature) and ``"none"``. ``"unit"`` is rejected: the features have no
  known maximum value.
"""

from __future__ import annotations

import numpy as np

from privfed.data.dataset import Dataset, LoadRequest
from privfed.data.scaling import apply_scaling, check_scaling

DIGITS_MAX_VALUE = 16.0


def _split(
    x: np.ndarray, y: np.ndarray, request: LoadRequest
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # scikit-learn loads when used

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=request.test_fraction, stratify=y, random_state=request.split_seed
    )
    return x_train, x_test, y_train.astype(np.int64), y_test.astype(np.int64)


def load_digits_dataset(request: LoadRequest) -> Dataset:
    """Load scikit-learn's ``digits`` as ``(N, 1, 8, 8)`` float32 images.

    Parameters
    ----------
    request : LoadRequest
        Uses ``split_seed``, ``test_fraction`` and ``scaling``.

    Returns
    -------
    Dataset
        With ``test_fraction=0.2``: 1437 training and 360 test samples.
    """
    scaling = check_scaling(
        request.scaling, default="standard", allowed=("standard", "unit", "none"), dataset="digits"
    )
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = _split(x, y, request)
    x_train, x_test = apply_scaling(scaling, x_train, x_test, axes=(0,), max_value=DIGITS_MAX_VALUE)
    return Dataset(
        name="digits",
        x_train=x_train.reshape(-1, 1, 8, 8),
        y_train=y_train,
        x_test=x_test.reshape(-1, 1, 8, 8),
        y_test=y_test,
        num_classes=10,
    )


def load_breast_cancer_dataset(request: LoadRequest) -> Dataset:
    """Load scikit-learn's Wisconsin ``breast_cancer`` data as ``(N, 30)`` float32.

    Parameters
    ----------
    request : LoadRequest
        Uses ``split_seed``, ``test_fraction`` and ``scaling``
        (``"standard"`` or ``"none"``).

    Returns
    -------
    Dataset
        Two classes (0 = malignant, 1 = benign).
    """
    scaling = check_scaling(
        request.scaling, default="standard", allowed=("standard", "none"), dataset="breast_cancer"
    )
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = _split(x, y, request)
    x_train, x_test = apply_scaling(scaling, x_train, x_test, axes=(0,), max_value=None)
    return Dataset(
        name="breast_cancer",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=2,
    )
