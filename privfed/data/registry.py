"""Dataset registry and the :func:`load_dataset` entry point."""

from __future__ import annotations

import os

from privfed.data.dataset import Dataset, Loader, LoadRequest
from privfed.data.embedded import load_breast_cancer_dataset, load_digits_dataset
from privfed.data.medmnist import MEDMNIST_SPECS, UNSUPPORTED, load_medmnist
from privfed.data.mnist import IDX_SPECS, load_idx_dataset

DATASETS: dict[str, Loader] = {
    "digits": load_digits_dataset,
    "breast_cancer": load_breast_cancer_dataset,
    **dict.fromkeys(IDX_SPECS, load_idx_dataset),
    **dict.fromkeys(MEDMNIST_SPECS, load_medmnist),
}
"""Registry mapping each dataset name to its loader."""


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    scaling: str | None = None,
    download: bool = True,
) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS` (case-insensitive, ``-`` accepted for ``_``):
        ``"digits"``, ``"breast_cancer"``, ``"mnist"``, ``"fashion_mnist"`` or
        a MedMNIST 2D name such as ``"breastmnist"``.
    data_dir : str or os.PathLike or None
        Data directory for file-based datasets (see
        :func:`~privfed.data.resolve_data_dir`). For MedMNIST it may also be
        the ``.npz`` file itself. Ignored by the embedded datasets.
    split_seed : int
        Seed of the stratified train/test split. Only for ``digits`` and
        ``breast_cancer``; datasets with an official test split ignore it.
    test_fraction : float
        Fraction held out for testing, in ``(0, 1)``. Only for ``digits`` and
        ``breast_cancer``; datasets with an official test split ignore it.
    scaling : {"centered", "standard", "unit", "none"} or None
        ``None`` selects the default: ``"standard"`` for the embedded datasets,
        ``"centered"`` (pixels / 127.5 - 1, a public constant) for image files.
        Statistics ("standard") are always fitted on the training part only.
        ``breast_cancer`` rejects ``"unit"`` and ``"centered"``.
    download : bool
        Whether missing files may be downloaded (with checksum verification).

    Returns
    -------
    Dataset
        The loaded dataset.

    Raises
    ------
    ValueError
        For an unknown or unsupported name, a ``test_fraction`` outside
        ``(0, 1)`` or an unsupported ``scaling``.
    DatasetNotFoundError
        If the files are missing and cannot be downloaded.
    DataFormatError
        If a data file is malformed or truncated (a ``ValueError``).
    ChecksumError
        If a downloaded file does not match its official MD5 (a ``ValueError``).
    """
    key = name.strip().lower().replace("-", "_")
    if key in UNSUPPORTED:
        raise ValueError(f"dataset {name!r} is not supported: {UNSUPPORTED[key]}")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; allowed: {', '.join(sorted(DATASETS))}")
    if not (isinstance(test_fraction, float | int) and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"test_fraction must lie in the open interval (0, 1), got {test_fraction!r}"
        )
    request = LoadRequest(key, data_dir, split_seed, test_fraction, scaling, download)
    return DATASETS[key](request)
