"""The in-memory :class:`Dataset` container and the loader request."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset split into a training and a test part.

    Parameters
    ----------
    name : str
        Registry name of the dataset, e.g. ``"mnist"``.
    x_train, x_test : numpy.ndarray
        ``float32`` inputs. Images are ``(N, C, H, W)``, tabular data ``(N, F)``.
    y_train, y_test : numpy.ndarray
        ``int64`` class labels of shape ``(N,)`` with values in ``[0, num_classes)``.
    num_classes : int
        Number of classes.

    Raises
    ------
    ValueError
        If dtypes, shapes or label values are inconsistent.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            if x.dtype != np.float32:
                raise ValueError(f"x_{part} must be float32, got {x.dtype}")
            if y.dtype != np.int64 or y.ndim != 1:
                raise ValueError(f"y_{part} must be a 1-D int64 array, got {y.dtype} {y.shape}")
            if len(x) != len(y):
                raise ValueError(f"x_{part} has {len(x)} samples but y_{part} has {len(y)}")
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"y_{part} values must lie in [0, {self.num_classes}), "
                    f"got range [{y.min()}, {y.max()}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"x_train sample shape {self.x_train.shape[1:]} differs from "
                f"x_test sample shape {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, ``x_train.shape[1:]``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return len(self.y_test)


@dataclass(frozen=True)
class LoadRequest:
    """The options of one :func:`~privfed.data.load_dataset` call, passed to a loader.

    Parameters
    ----------
    name : str
        Normalised dataset name.
    data_dir : str or os.PathLike or None
        Explicit data directory, or ``None`` for the default (see
        :func:`~privfed.data.resolve_data_dir`).
    split_seed : int
        Seed of the train/test split (embedded datasets only).
    test_fraction : float
        Fraction of samples held out for testing (embedded datasets only).
    scaling : str or None
        ``"standard"``, ``"unit"``, ``"none"`` or ``None`` for the dataset's default.
    download : bool
        Whether missing files may be downloaded.
    """

    name: str
    data_dir: str | os.PathLike[str] | None
    split_seed: int
    test_fraction: float
    scaling: str | None
    download: bool


Loader = Callable[[LoadRequest], Dataset]
