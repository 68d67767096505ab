"""Tests for the IDX reader and the MNIST / Fashion-MNIST loaders, on small files."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
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
    mnist,
)
from privfed.data.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx

N_TRAIN, N_TEST = 30, 12
pytestmark = pytest.mark.filterwarnings("ignore::privfed.data.DataIntegrityWarning")

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Encode a uint8 array as IDX."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Small random MNIST-shaped arrays keyed by file stem."""
    rng = np.random.default_rng(seed)
    return {
        STEMS[0]: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        STEMS[1]: rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        STEMS[2]: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        STEMS[3]: rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def encode(stem: str, array: np.ndarray) -> bytes:
    return idx_bytes(array, IMAGES_MAGIC if "images" in stem else LABELS_MAGIC)


def write_files(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool) -> dict[str, bytes]:
    """Write the four IDX files (gzip or raw) and return the bytes written per file name."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, array in arrays.items():
        data = encode(stem, array)
        name = f"{stem}.gz" if gz else stem
        payload = gzip.compress(data, mtime=0) if gz else data
        (folder / name).write_bytes(payload)
        written[name] = payload
    return written


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, dest: Path, timeout: float = 0.0) -> None:
        raise urllib.error.URLError(f"network disabled in tests ({url})")

    monkeypatch.setattr(download, "fetch_url", refuse)


@pytest.mark.parametrize(("gz", "subdir"), [(True, "mnist"), (False, "mnist"), (False, "")])
def test_round_trip_gzip_and_raw(tmp_path: Path, gz: bool, subdir: str) -> None:
    arrays = make_arrays()
    write_files(tmp_path / subdir, arrays, gz=gz)
    data = load_dataset("mnist", data_dir=tmp_path, download=False, scaling="none")
    assert data.x_train.shape == (N_TRAIN, 1, 28, 28) and data.x_train.dtype == np.float32
    assert data.y_train.dtype == np.int64 and data.num_classes == 10
    np.testing.assert_array_equal(data.x_train[:, 0], arrays[STEMS[0]])
    np.testing.assert_array_equal(data.y_train, arrays[STEMS[1]])
    np.testing.assert_array_equal(data.x_test[:, 0], arrays[STEMS[2]])
    np.testing.assert_array_equal(data.y_test, arrays[STEMS[3]])


def test_scalings_unit_and_standard(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_files(tmp_path / "fashion_mnist", arrays, gz=True)
    unit = load_dataset("fashion_mnist", data_dir=tmp_path, download=False, scaling="unit")
    np.testing.assert_array_equal(unit.x_train[:, 0], arrays[STEMS[0]] / np.float32(255))
    std = load_dataset("fashion_mnist", data_dir=tmp_path, download=False, scaling="standard")
    assert abs(std.x_train.mean()) < 1e-5 and abs(std.x_train.std() - 1) < 1e-4
    train = arrays[STEMS[0]].astype(np.float64)
    expected_test = (arrays[STEMS[2]] - train.mean()) / train.std()
    np.testing.assert_allclose(std.x_test[:, 0], expected_test, rtol=1e-5, atol=1e-5)


def test_env_var_selects_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = make_arrays()
    write_files(tmp_path / "mnist", arrays, gz=True)
    monkeypatch.setenv("PRIVFED_DATA", str(tmp_path))
    with pytest.warns(DataIntegrityWarning, match="not the official mnist file"):
        data = load_dataset("mnist", download=False)
    assert data.num_train == N_TRAIN and data.num_test == N_TEST


def test_official_checksum_means_no_warning(tmp_path: Path, monkeypatch) -> None:
    written = write_files(tmp_path / "mnist", make_arrays(), gz=True)
    md5 = {name[:-3]: hashlib.md5(data).hexdigest() for name, data in written.items()}
    spec = dataclasses.replace(mnist.IDX_SPECS["mnist"], md5=md5, raw_md5={})
    monkeypatch.setitem(mnist.IDX_SPECS, "mnist", spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataIntegrityWarning)
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_truncated_payload_names_file_and_byte_counts(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_files(tmp_path / "mnist", arrays, gz=False)
    path = tmp_path / "mnist" / STEMS[0]
    path.write_bytes(path.read_bytes()[:-10])
    expected = N_TRAIN * 28 * 28
    with pytest.raises(
        DataFormatError, match=rf"{STEMS[0]}.*truncated.*{expected} bytes, got {expected - 10}"
    ):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_truncated_gzip_stream_is_a_format_error(tmp_path: Path) -> None:
    write_files(tmp_path / "mnist", make_arrays(), gz=True)
    path = tmp_path / "mnist" / f"{STEMS[0]}.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFormatError, match=rf"{STEMS[0]}\.gz: corrupt or truncated gzip"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_bad_magic_number(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_files(tmp_path / "mnist", arrays, gz=False)
    (tmp_path / "mnist" / STEMS[1]).write_bytes(idx_bytes(arrays[STEMS[1]], IMAGES_MAGIC))
    with pytest.raises(
        DataFormatError, match=rf"{STEMS[1]}: bad IDX magic number 2051, expected 2049"
    ):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_parse_idx_rejects_trailing_bytes_and_short_header() -> None:
    data = idx_bytes(np.zeros(5, dtype=np.uint8), LABELS_MAGIC)
    with pytest.raises(DataFormatError, match=r"x: IDX payload has trailing bytes.*5 bytes, got 6"):
        parse_idx(data + b"\0", source="x", magic=LABELS_MAGIC)
    with pytest.raises(DataFormatError, match=r"truncated IDX header, expected 8 bytes, got 6"):
        parse_idx(data[:6], source="x", magic=LABELS_MAGIC)


def test_label_count_must_match_image_count(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays[STEMS[1]] = arrays[STEMS[1]][:-1]
    write_files(tmp_path / "mnist", arrays, gz=True)
    with pytest.raises(
        DataFormatError, match=rf"holds {N_TRAIN - 1} labels but .* holds {N_TRAIN} images"
    ):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_label_out_of_range_and_wrong_image_size(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays[STEMS[3]][0] = 10
    write_files(tmp_path / "mnist", arrays, gz=True)
    with pytest.raises(DataFormatError, match=r"label 10 out of range, allowed 0..9"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    arrays = make_arrays()
    arrays[STEMS[0]] = arrays[STEMS[0]][:, :27]
    write_files(tmp_path / "mnist", arrays, gz=True)
    with pytest.raises(DataFormatError, match=r"shape \(N, 28, 28\), got \(30, 27, 28\)"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_missing_files_error_lists_files_dir_env_var_and_url(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_files(tmp_path / "mnist", {STEMS[0]: arrays[STEMS[0]]}, gz=True)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert f"{STEMS[0]}.gz" not in message.split(";")[0]
    for stem in STEMS[1:]:
        assert f"{stem}.gz" in message
        assert f"https://ossci-datasets.s3.amazonaws.com/mnist/{stem}.gz" in message
    assert str(tmp_path / "mnist") in message
    assert "PRIVFED_DATA" in message and "--data-dir" in message


def test_no_network_download_failure_is_dataset_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"download failed \(URLError.*network disabled"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []  # no partial file, no empty cache folder


def fake_fetch_serving(files: dict[str, bytes]):
    """A fetch_url replacement serving ``files`` by the URL's last path component."""
    calls: list[str] = []

    def fetch(url: str, dest: Path, timeout: float = 0.0) -> None:
        calls.append(url)
        dest.write_bytes(files[url.rsplit("/", 1)[-1]])

    return fetch, calls


def test_download_with_wrong_checksum_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    served = write_files(tmp_path / "served", make_arrays(), gz=True)
    fetch, _ = fake_fetch_serving(served)
    monkeypatch.setattr(download, "fetch_url", fetch)
    root = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=rf"{STEMS[0]}\.gz.*expected MD5 f68b3c2d"):
        load_dataset("mnist", data_dir=root)
    assert not root.exists()


def test_download_with_right_checksum_is_cached_and_loaded(tmp_path: Path, monkeypatch) -> None:
    arrays = make_arrays()
    served = write_files(tmp_path / "served", arrays, gz=True)
    md5 = {name[:-3]: hashlib.md5(data).hexdigest() for name, data in served.items()}
    spec = dataclasses.replace(mnist.IDX_SPECS["mnist"], md5=md5)
    monkeypatch.setitem(mnist.IDX_SPECS, "mnist", spec)
    fetch, calls = fake_fetch_serving(served)
    monkeypatch.setattr(download, "fetch_url", fetch)
    root = tmp_path / "cache"
    data = load_dataset("mnist", data_dir=root, scaling="none")
    assert len(calls) == 4
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(served)
    np.testing.assert_array_equal(data.y_test, arrays[STEMS[3]])
    again = load_dataset("mnist", data_dir=root, scaling="none")
    assert len(calls) == 4
    np.testing.assert_array_equal(again.x_train, data.x_train)
