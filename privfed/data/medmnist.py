"""MedMNIST 2D (28x28) datasets from their official ``.npz`` files.

A file ``<name>.npz`` holds ``train_images``, ``val_images``, ``test_images``
(``uint8``, ``(N, 28, 28)`` grayscale or ``(N, 28, 28, 3)`` RGB) and the
matching ``*_labels`` (``(N, 1)``). It is looked for as
``<data_dir>/medmnist/<name>.npz``, then ``<data_dir>/<name>.npz``; no other
names are accepted. ``data_dir`` may also be the path of the ``.npz`` file
itself, e.g. a re-assembled copy.

Checksums: a downloaded file must match the official MD5 (from the
``medmnist`` package's ``INFO`` table for Zenodo record 10519652) or it is
discarded. A file already on disk is validated structurally (keys, dtypes,
shapes, label range) and, if its MD5 differs from the official one, loaded
with a :class:`~privfed.data.errors.DataIntegrityWarning`.

The official ``train`` split becomes ``x_train`` and ``test`` becomes
``x_test``; ``val`` is not used and nothing is merged, so ``split_seed`` and
``test_fraction`` do not apply. Images are ``(N, C, 28, 28)`` float32; default
scaling ``"centered"`` (pixels / 255 mapped to [-1, 1], MedMNIST's reference
``Normalize(mean=0.5, std=0.5)``; no statistics of anyone's data), ``"unit"``
is pixels / 255, ``"standard"`` uses per-channel statistics of the pooled
training set, ``"none"`` keeps raw 0..255 values. ``chestmnist`` is
multi-label and not supported.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privfed.data.dataset import Dataset, LoadRequest
from privfed.data.download import md5_file
from privfed.data.errors import DataFormatError, DataIntegrityWarning
from privfed.data.locate import RemoteFile, ensure_files, resolve_data_dir
from privfed.data.scaling import PIXEL_MAX, SCALINGS, apply_scaling, check_scaling

ZENODO_RECORD_URL = "https://zenodo.org/records/10519652/files"
SUBDIR = "medmnist"
IMAGE_SIZE = 28
DEFAULT_SCALING = "centered"
UNSUPPORTED = {
    "chestmnist": "chestmnist is multi-label (14 binary findings per image); "
    "privfed.data supports single-label classification only",
}


@dataclass(frozen=True)
class MedMNISTSpec:
    """One MedMNIST 2D dataset.

    Parameters
    ----------
    name : str
        Registry and file name stem, e.g. ``"breastmnist"``.
    num_classes : int
        Number of classes.
    channels : int
        1 (grayscale) or 3 (RGB).
    md5 : str
        Official MD5 of ``<name>.npz`` (28x28 version).
    """

    name: str
    num_classes: int
    channels: int
    md5: str

    @property
    def remote_file(self) -> RemoteFile:
        """The official ``.npz`` as a :class:`RemoteFile`."""
        return RemoteFile(
            f"{self.name}.npz", f"{ZENODO_RECORD_URL}/{self.name}.npz?download=1", self.md5
        )


MEDMNIST_SPECS: dict[str, MedMNISTSpec] = {
    spec.name: spec
    for spec in (
        MedMNISTSpec("pathmnist", 9, 3, "a8b06965200029087d5bd730944a56c1"),
        MedMNISTSpec("dermamnist", 7, 3, "0744692d530f8e62ec473284d019b0c7"),
        MedMNISTSpec("octmnist", 4, 1, "c68d92d5b585d8d81f7112f81e2d0842"),
        MedMNISTSpec("pneumoniamnist", 2, 1, "28209eda62fecd6e6a2d98b1501bb15f"),
        MedMNISTSpec("retinamnist", 5, 3, "bd4c0672f1bba3e3a89f0e4e876791e4"),
        MedMNISTSpec("breastmnist", 2, 1, "750601b1f35ba3300ea97c75c52ff8f6"),
        MedMNISTSpec("bloodmnist", 8, 3, "7053d0359d879ad8a5505303e11de1dc"),
        MedMNISTSpec("tissuemnist", 8, 1, "ebe78ee8b05294063de985d821c1c34b"),
        MedMNISTSpec("organamnist", 11, 1, "68e3f8846a6bd62f0c9bf841c0d9eacc"),
        MedMNISTSpec("organcmnist", 11, 1, "b9ceb9546e10131b32923c5bbeaea2b1"),
        MedMNISTSpec("organsmnist", 11, 1, "9ab87b696fb54e2a387ebe992d6ed5f1"),
    )
}

_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _KEYS if key not in npz.files]
            if missing:
                raise DataFormatError(
                    f"{path}: missing key(s) {', '.join(missing)}; a MedMNIST .npz needs "
                    f"{', '.join(_KEYS)} (found: {', '.join(npz.files) or 'none'})"
                )
            return {key: npz[key] for key in _KEYS}
    except DataFormatError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc})") from exc


def _check_split(
    path: Path, spec: MedMNISTSpec, split: str, images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    size = (IMAGE_SIZE, IMAGE_SIZE)
    expected = size if spec.channels == 1 else (*size, spec.channels)
    if images.dtype != np.uint8 or images.shape[1:] != expected:
        raise DataFormatError(
            f"{path}: {split}_images must be uint8 of shape (N, {', '.join(map(str, expected))}) "
            f"for {spec.name}, got {images.dtype} {images.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape not in {
        (len(labels), 1),
        (len(labels),),
    }:
        raise DataFormatError(
            f"{path}: {split}_labels must be integers of shape (N, 1) or (N,), "
            f"got {labels.dtype} {labels.shape}"
        )
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != len(images):
        raise DataFormatError(
            f"{path}: {split}_labels has {len(labels)} entries but {split}_images has "
            f"{len(images)}; the counts must match"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataFormatError(
            f"{path}: {split}_labels values must lie in 0..{spec.num_classes - 1} for "
            f"{spec.name}, got range {labels.min()}..{labels.max()}"
        )
    chw = (
        images[:, None]
        if spec.channels == 1
        else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    )
    return chw, labels


def read_medmnist_npz(
    path: Path, spec: MedMNISTSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and validate the train and test splits of a MedMNIST ``.npz``.

    Parameters
    ----------
    path : pathlib.Path
        The ``.npz`` file.
    spec : MedMNISTSpec
        Expected channels and number of classes.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x_train, y_train, x_test, y_test)``: ``uint8`` images ``(N, C, 28, 28)``
        and ``int64`` labels ``(N,)``.

    Raises
    ------
    DataFormatError
        If the file is not a readable ``.npz``, lacks a key, or holds arrays of
        the wrong dtype, shape or label range.
    """
    arrays = _load_arrays(path)
    x_train, y_train = _check_split(
        path, spec, "train", arrays["train_images"], arrays["train_labels"]
    )
    x_test, y_test = _check_split(path, spec, "test", arrays["test_images"], arrays["test_labels"])
    return x_train, y_train, x_test, y_test


def load_medmnist(request: LoadRequest) -> Dataset:
    """Load a MedMNIST 2D dataset (``request.name``) from its ``.npz`` file.

    Parameters
    ----------
    request : LoadRequest
        Uses ``name``, ``data_dir`` (a directory, or the ``.npz`` file itself),
        ``download`` and ``scaling``.

    Returns
    -------
    Dataset
        ``(N, C, 28, 28)`` float32 images from the official train and test splits.

    Raises
    ------
    DatasetNotFoundError
        If the file is missing and cannot be downloaded.
    DataFormatError
        If the file is malformed.
    ChecksumError
        If a downloaded file does not match its official MD5.
    """
    spec = MEDMNIST_SPECS[request.name]
    scaling = check_scaling(request.scaling, default=DEFAULT_SCALING, allowed=SCALINGS,
                            dataset=spec.name)
    root = resolve_data_dir(request.data_dir)
    if root.is_file():
        path = root
    else:
        remote = spec.remote_file
        path = ensure_files(
            spec.name, [remote], root=root, subdir=SUBDIR, allow_download=request.download
        )[remote.name]
    x_train, y_train, x_test, y_test = read_medmnist_npz(path, spec)
    if md5_file(path) != spec.md5:
        warnings.warn(
            f"{path} is not the official {spec.name}.npz (MD5 differs from {spec.md5}); "
            "its structure is valid, loading it anyway",
            DataIntegrityWarning,
            stacklevel=2,
        )
    x_train, x_test = apply_scaling(scaling, x_train, x_test, axes=(0, 2, 3), max_value=PIXEL_MAX)
    return Dataset(spec.name, x_train, y_train, x_test, y_test, num_classes=spec.num_classes)
