"""Tests for the MedMNIST .npz loader, on small files written by the tests."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest

from privfed.data import (
    ChecksumError,
    DataFormatError,
    DataIntegrityWarning,
    DatasetNotFoundError,
    download,
    load_dataset,
    medmnist,
)

pytestmark = pytest.mark.filterwarnings("ignore::privfed.data.DataIntegrityWarning")

SIZES = {"train": 40, "val": 6, "test": 16}


def make_arrays(channels: int = 1, num_classes: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """MedMNIST-like arrays: uint8 images (N, 28, 28[, 3]) and uint8 labels (N, 1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        shape = (n, 28, 28) if channels == 1 else (n, 28, 28, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = np.arange(n) % num_classes
        arrays[f"{split}_labels"] = rng.permutation(labels).astype(np.uint8).reshape(n, 1)
    return arrays


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = npz_bytes(arrays)
    path.write_bytes(data)
    return data


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, dest: Path, timeout: float = 0.0) -> None:
        raise urllib.error.URLError(f"network disabled in tests ({url})")

    monkeypatch.setattr(download, "fetch_url", refuse)


@pytest.mark.parametrize("where", ["medmnist", ""])
def test_grayscale_round_trip(tmp_path: Path, where: str) -> None:
    arrays = make_arrays()
    write_npz(tmp_path / where / "breastmnist.npz", arrays)
    data = load_dataset("breastmnist", data_dir=tmp_path, download=False, scaling="none")
    assert data.x_train.shape == (SIZES["train"], 1, 28, 28)
    assert data.x_test.shape == (SIZES["test"], 1, 28, 28)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(data.y_train, arrays["train_labels"][:, 0])
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"][:, 0])
    assert data.num_classes == 2


def test_rgb_becomes_channels_first_and_standard_is_per_channel(tmp_path: Path) -> None:
    arrays = make_arrays(channels=3, num_classes=8)
    arrays["train_images"][..., 2] //= 4  # give channel 2 a different mean and spread
    write_npz(tmp_path / "medmnist" / "bloodmnist.npz", arrays)
    raw = load_dataset("bloodmnist", data_dir=tmp_path, download=False, scaling="none")
    assert raw.input_shape == (3, 28, 28)
    assert raw.x_train.flags.c_contiguous and raw.x_train.flags.writeable
    np.testing.assert_array_equal(raw.x_train[5, 2], arrays["train_images"][5, :, :, 2])
    unit = load_dataset("bloodmnist", data_dir=tmp_path, download=False, scaling="unit")
    np.testing.assert_array_equal(unit.x_test, raw.x_test / np.float32(255))
    std = load_dataset("bloodmnist", data_dir=tmp_path, download=False, scaling="standard")
    np.testing.assert_allclose(std.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(std.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_data_dir_may_be_the_npz_file_itself_with_a_checksum_warning(tmp_path: Path) -> None:
    path = tmp_path / "pneumoniamnist_reassembled.npz"
    write_npz(path, make_arrays())
    with pytest.warns(DataIntegrityWarning, match="not the official pneumoniamnist.npz"):
        data = load_dataset("pneumoniamnist", data_dir=path, download=False)
    assert data.num_train == SIZES["train"] and data.num_test == SIZES["test"]


def test_official_checksum_means_no_warning(tmp_path: Path, monkeypatch) -> None:
    data = write_npz(tmp_path / "medmnist" / "breastmnist.npz", make_arrays())
    spec = dataclasses.replace(medmnist.MEDMNIST_SPECS["breastmnist"], md5=md5(data))
    monkeypatch.setitem(medmnist.MEDMNIST_SPECS, "breastmnist", spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataIntegrityWarning)
        load_dataset("breastmnist", data_dir=tmp_path, download=False)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_missing_key_names_file_and_keys(tmp_path: Path) -> None:
    arrays = make_arrays()
    del arrays["test_labels"]
    write_npz(tmp_path / "medmnist" / "breastmnist.npz", arrays)
    with pytest.raises(DataFormatError, match=r"breastmnist\.npz: missing key\(s\) test_labels"):
        load_dataset("breastmnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("train_images", np.zeros((40, 28, 28), np.float32), r"train_images must be uint8"),
        (
            "test_images",
            np.zeros((16, 28, 28, 3), np.uint8),
            r"shape \(N, 28, 28\).*\(16, 28, 28, 3\)",
        ),
        ("train_labels", np.zeros((40, 2), np.uint8), r"train_labels must be integers of shape"),
        ("train_labels", np.zeros((39, 1), np.uint8), r"39 entries but train_images has 40"),
        ("test_labels", np.full((16, 1), 2, np.uint8), r"test_labels values must lie in 0..1"),
    ],
)
def test_wrong_arrays_are_rejected(tmp_path: Path, key: str, value, pattern: str) -> None:
    arrays = make_arrays()
    arrays[key] = value
    write_npz(tmp_path / "medmnist" / "breastmnist.npz", arrays)
    with pytest.raises(DataFormatError, match=pattern):
        load_dataset("breastmnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_or_garbage_file(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "medmnist" / "breastmnist.npz"
    data = npz_bytes(make_arrays())
    path.parent.mkdir()
    path.write_bytes(data[: int(len(data) * keep)] or b"not a zip file")
    with pytest.raises(DataFormatError, match=r"breastmnist\.npz: not a readable \.npz file"):
        load_dataset("breastmnist", data_dir=tmp_path, download=False)


def test_chestmnist_is_rejected_as_multi_label() -> None:
    with pytest.raises(ValueError, match=r"'chestmnist' is not supported: .*multi-label"):
        load_dataset("chestmnist")


def test_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("pneumoniamnist", data_dir=tmp_path)
    message = str(info.value)
    assert "pneumoniamnist.npz" in message and str(tmp_path / "medmnist") in message
    assert "https://zenodo.org/records/10519652/files/pneumoniamnist.npz" in message
    assert "PRIVFED_DATA" in message and "download failed" in message


def test_download_checks_md5(tmp_path: Path, monkeypatch) -> None:
    arrays = make_arrays()
    served = npz_bytes(arrays)

    def fetch(url: str, dest: Path, timeout: float = 0.0) -> None:
        assert url == "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
        dest.write_bytes(served)

    monkeypatch.setattr(download, "fetch_url", fetch)
    with pytest.raises(ChecksumError, match=r"breastmnist\.npz.*expected MD5 750601b1"):
        load_dataset("breastmnist", data_dir=tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []

    spec = dataclasses.replace(medmnist.MEDMNIST_SPECS["breastmnist"], md5=md5(served))
    monkeypatch.setitem(medmnist.MEDMNIST_SPECS, "breastmnist", spec)
    data = load_dataset("breastmnist", data_dir=tmp_path, scaling="none")
    assert (tmp_path / "medmnist" / "breastmnist.npz").read_bytes() == served
    np.testing.assert_array_equal(data.x_test[:, 0], arrays["test_images"])
