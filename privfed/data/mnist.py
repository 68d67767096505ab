"""MNIST and Fashion-MNIST from the original IDX files.

Each dataset needs four files, looked for (``.gz`` or uncompressed) in
``<data_dir>/<subdir>/`` and then directly in ``<data_dir>/``, with ``subdir``
``mnist`` or ``fashion_mnist``. Missing files are downloaded as ``.gz`` from the
official mirror and checked against the official MD5 (see
:mod:`privfed.data.locate`).

Files already on disk are not required to be byte-identical to the official
``.gz`` (re-compressed copies are common): their structure is validated
strictly, and a :class:`~privfed.data.errors.DataIntegrityWarning` is issued
when neither the file's MD5 nor (where known) the MD5 of its decompressed
content equals an official value.

Both datasets have an official test split (60000 train / 10000 test), so
``split_seed`` and ``test_fraction`` do not apply. Images are returned as
``(N, 1, 28, 28)`` float32; default scaling ``"centered"`` (pixels / 255
mapped to [-1, 1]; no statistics of anyone's data), ``"unit"`` is pixels / 255,
``"standard"`` uses the mean and standard deviation of the pooled training
set, ``"none"`` keeps raw 0..255 values.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privfed.data.dataset import Dataset, LoadRequest
from privfed.data.download import md5_bytes, md5_file
from privfed.data.errors import DataFormatError, DataIntegrityWarning
from privfed.data.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx_bytes
from privfed.data.locate import RemoteFile, ensure_files, resolve_data_dir
from privfed.data.scaling import PIXEL_MAX, SCALINGS, apply_scaling, check_scaling

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
DEFAULT_SCALING = "centered"


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Where an MNIST-style dataset lives and how to check its files.

    Parameters
    ----------
    name : str
        Registry name.
    subdir : str
        Sub-directory of the data directory.
    base_url : str
        Official download prefix (ending in ``/``).
    md5 : Mapping of str to str
        Official MD5 of each ``.gz`` file, keyed by the uncompressed file name.
    raw_md5 : Mapping of str to str
        Official MD5 of the decompressed content, where known.
    """

    name: str
    subdir: str
    base_url: str
    md5: Mapping[str, str]
    raw_md5: Mapping[str, str]

    def remote_files(self) -> list[RemoteFile]:
        """Return the four files as :class:`RemoteFile` (``.gz`` name, raw alias)."""
        return [
            RemoteFile(f"{base}.gz", f"{self.base_url}{base}.gz", md5, aliases=(base,))
            for base, md5 in self.md5.items()
        ]


IDX_SPECS: dict[str, IdxDatasetSpec] = {
    "mnist": IdxDatasetSpec(
        name="mnist",
        subdir="mnist",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        raw_md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion_mnist": IdxDatasetSpec(
        name="fashion_mnist",
        subdir="fashion_mnist",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        raw_md5={},
    ),
}


def _read(spec: IdxDatasetSpec, path: Path, base: str, magic: int) -> np.ndarray:
    data = read_idx_bytes(path)
    array = parse_idx(data, source=str(path), magic=magic)
    official = {spec.md5[base], spec.raw_md5.get(base)}
    if md5_bytes(data) not in official and md5_file(path) not in official:
        warnings.warn(
            f"{path} is not the official {spec.name} file {base}(.gz) (MD5 differs); "
            "its IDX structure is valid, loading it anyway",
            DataIntegrityWarning,
            stacklevel=2,
        )
    return array


def _read_split(
    spec: IdxDatasetSpec, paths: Mapping[str, Path], prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    images_base, labels_base = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images_path, labels_path = paths[f"{images_base}.gz"], paths[f"{labels_base}.gz"]
    images = _read(spec, images_path, images_base, IMAGES_MAGIC)
    labels = _read(spec, labels_path, labels_base, LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(
            f"{images_path}: images must have shape (N, 28, 28), got {images.shape}"
        )
    if labels.ndim != 1:
        raise DataFormatError(f"{labels_path}: labels must be 1-D, got shape {labels.shape}")
    if len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path} holds {len(labels)} labels but {images_path} holds "
            f"{len(images)} images; the counts must match"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataFormatError(
            f"{labels_path}: label {labels.max()} out of range, allowed 0..{NUM_CLASSES - 1}"
        )
    return images[:, None, :, :], labels.astype(np.int64)


def load_idx_dataset(request: LoadRequest) -> Dataset:
    """Load MNIST or Fashion-MNIST (``request.name``) from IDX files.

    Parameters
    ----------
    request : LoadRequest
        Uses ``name``, ``data_dir``, ``download`` and ``scaling``.

    Returns
    -------
    Dataset
        ``(N, 1, 28, 28)`` float32 images, 10 classes.

    Raises
    ------
    DatasetNotFoundError
        If files are missing and cannot be downloaded.
    DataFormatError
        If a file is malformed or truncated.
    ChecksumError
        If a downloaded file does not match its official MD5.
    """
    spec = IDX_SPECS[request.name]
    scaling = check_scaling(request.scaling, default=DEFAULT_SCALING, allowed=SCALINGS,
                            dataset=spec.name)
    paths = ensure_files(
        spec.name,
        spec.remote_files(),
        root=resolve_data_dir(request.data_dir),
        subdir=spec.subdir,
        allow_download=request.download,
    )
    x_train, y_train = _read_split(spec, paths, "train")
    x_test, y_test = _read_split(spec, paths, "t10k")
    x_train, x_test = apply_scaling(scaling, x_train, x_test, axes=(0, 2, 3), max_value=PIXEL_MAX)
    return Dataset(spec.name, x_train, y_train, x_test, y_test, num_classes=NUM_CLASSES)
