"""Tests for the data-independent scalings and each image dataset's default scaling."""

from __future__ import annotations

import gzip
import io
import tomllib
from pathlib import Path

import numpy as np
import pytest

from privfed.config import load_config
from privfed.data import load_dataset
from privfed.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from privfed.data.medmnist import MEDMNIST_SPECS
from privfed.data.mnist import IDX_SPECS
from privfed.data.scaling import SCALINGS, apply_scaling, check_scaling

pytestmark = pytest.mark.filterwarnings("ignore::privfed.data.DataIntegrityWarning")


def test_centered_maps_the_pixel_range_onto_minus_one_to_one_exactly() -> None:
    raw = np.array([0.0, 127.5, 255.0, 51.0], dtype=np.float32)
    train, test = apply_scaling("centered", raw, raw[::-1], axes=(0,), max_value=255.0)
    assert train.dtype == np.float32 and test.dtype == np.float32
    np.testing.assert_array_equal(train[:3], np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    np.testing.assert_allclose(train[3], 51 / 127.5 - 1, rtol=1e-6)
    np.testing.assert_array_equal(test, train[::-1])


def test_centered_is_unit_scaling_moved_to_zero_mean_half_range() -> None:
    raw = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    unit, _ = apply_scaling("unit", raw, raw, axes=(0, 2, 3), max_value=255.0)
    centered, _ = apply_scaling("centered", raw, raw, axes=(0, 2, 3), max_value=255.0)
    np.testing.assert_allclose(centered, (unit - 0.5) / 0.5, atol=1e-6)


def test_centered_uses_no_statistics_of_the_data() -> None:
    """The map of a pixel value is the same whatever the rest of the training set holds."""
    dark = np.array([[0, 10, 255]], dtype=np.uint8)
    bright = np.array([[200, 250, 255]], dtype=np.uint8)
    _, from_dark = apply_scaling("centered", dark, dark, axes=(0,), max_value=255.0)
    _, from_bright = apply_scaling("centered", bright, dark, axes=(0,), max_value=255.0)
    np.testing.assert_array_equal(from_dark, from_bright)


def test_range_scalings_need_a_known_maximum() -> None:
    raw = np.zeros((2, 3), dtype=np.float32)
    for scaling in ("centered", "unit"):
        with pytest.raises(ValueError, match=rf"scaling='{scaling}' needs a known maximum"):
            apply_scaling(scaling, raw, raw, axes=(0,), max_value=None)


def test_existing_names_still_work_and_centered_is_listed() -> None:
    assert set(SCALINGS) == {"centered", "standard", "unit", "none"}
    raw = np.array([[0.0, 255.0]], dtype=np.float32)
    assert check_scaling(None, default="centered", allowed=SCALINGS, dataset="x") == "centered"
    np.testing.assert_array_equal(
        apply_scaling("unit", raw, raw, axes=(0,), max_value=255.0)[0], [[0.0, 1.0]])
    np.testing.assert_array_equal(
        apply_scaling("none", raw, raw, axes=(0,), max_value=255.0)[0], raw)


def _write_medmnist(path: Path, channels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (8, 28, 28) if channels == 1 else (8, 28, 28, channels)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(8) % 2).astype(np.uint8).reshape(8, 1)
    arrays["train_images"][0] = 0
    arrays["train_images"][1] = 255
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return arrays["train_images"]


@pytest.mark.parametrize(("name", "channels"), [("breastmnist", 1), ("bloodmnist", 3)])
def test_medmnist_default_is_centered(tmp_path: Path, name: str, channels: int) -> None:
    raw = _write_medmnist(tmp_path / "medmnist" / f"{name}.npz", channels)
    data = load_dataset(name, data_dir=tmp_path, download=False)
    chw = raw[:, None] if channels == 1 else raw.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(data.x_train, chw / np.float32(127.5) - 1, atol=1e-6)
    assert data.x_train[0].min() == -1.0 and data.x_train[1].max() == 1.0


def _write_idx(folder: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    images[0], images[1] = 0, 255
    labels = (np.arange(6) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        for kind, array, magic in (("images-idx3", images, IMAGES_MAGIC),
                                   ("labels-idx1", labels, LABELS_MAGIC)):
            header = magic.to_bytes(4, "big") + b"".join(
                d.to_bytes(4, "big") for d in array.shape)
            data = gzip.compress(header + array.tobytes(), mtime=0)
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(data)
    return images


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_and_fashion_mnist_default_is_centered(tmp_path: Path, name: str) -> None:
    images = _write_idx(tmp_path / name)
    data = load_dataset(name, data_dir=tmp_path, download=False)
    np.testing.assert_allclose(data.x_test[:, 0], images / np.float32(127.5) - 1, atol=1e-6)
    assert data.x_train[0].min() == -1.0 and data.x_train[1].max() == 1.0


def test_embedded_default_stays_standard() -> None:
    data = load_dataset("digits", split_seed=0, test_fraction=0.25)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)


def test_shipped_image_configs_use_a_data_independent_scaling() -> None:
    """Every image set in the registry has a shipped config, and none scales with statistics
    of the pooled private training data."""
    configs = Path(__file__).parents[2] / "experiments" / "configs"
    image_sets = set(MEDMNIST_SPECS) | set(IDX_SPECS)
    shipped = {}
    for path in configs.glob("*.toml"):
        data = tomllib.loads(path.read_text(encoding="utf-8")).get("data", {})
        if data.get("dataset") in image_sets:
            shipped[data["dataset"]] = load_config(path).data.scaling
    assert set(shipped) == image_sets
    assert set(shipped.values()) == {"centered"}
