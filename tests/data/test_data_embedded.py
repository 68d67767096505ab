"""Tests for the embedded scikit-learn datasets and load_dataset's argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from privfed.data import DATASETS, Dataset, load_dataset


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_registry_lists_required_names() -> None:
    required = {
        "digits",
        "breast_cancer",
        "mnist",
        "fashion_mnist",
        "breastmnist",
        "pneumoniamnist",
    }
    assert required <= set(DATASETS)


def test_digits_shapes_and_dtypes(digits: Dataset) -> None:
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert (digits.num_train, digits.num_test, digits.input_shape) == (1437, 360, (1, 8, 8))
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert digits.num_classes == 10


def test_digits_split_is_stratified(digits: Dataset) -> None:
    train_share = np.bincount(digits.y_train) / digits.num_train
    test_share = np.bincount(digits.y_test) / digits.num_test
    assert np.abs(train_share - test_share).max() < 0.01


def test_standard_scaling_is_fitted_on_the_training_part_only(digits: Dataset) -> None:
    x_train = digits.x_train.reshape(digits.num_train, -1).astype(np.float64)
    x_test = digits.x_test.reshape(digits.num_test, -1).astype(np.float64)
    raw = load_dataset("digits", scaling="none").x_train.reshape(digits.num_train, -1)
    varying = raw.std(axis=0) > 0
    assert not varying.all()  # some border pixels are constant: they must stay finite
    np.testing.assert_allclose(x_train[:, varying].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train[:, varying].std(axis=0), 1, atol=1e-4)
    np.testing.assert_array_equal(x_train[:, ~varying], 0)  # (x - mean) / 1 with x == mean
    assert np.isfinite(x_test).all()
    assert np.abs(x_test.mean(axis=0)).max() > 0.05  # not refitted on the test part


def test_unit_scaling_is_pixels_over_16() -> None:
    data = load_dataset("digits", scaling="unit", split_seed=3, test_fraction=0.25)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, stratify=y, random_state=3)
    np.testing.assert_array_equal(
        data.x_train.reshape(len(x_train), -1), (x_train / 16).astype(np.float32)
    )
    np.testing.assert_array_equal(
        data.x_test.reshape(len(x_test), -1), (x_test / 16).astype(np.float32)
    )
    np.testing.assert_array_equal(data.y_train, y_train)


def test_split_seed_controls_the_split() -> None:
    a = load_dataset("digits", split_seed=1, scaling="none")
    b = load_dataset("digits", split_seed=1, scaling="none")
    c = load_dataset("digits", split_seed=2, scaling="none")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_breast_cancer_shapes_and_scaling() -> None:
    data = load_dataset("breast_cancer")
    assert data.x_train.shape == (455, 30) and data.x_test.shape == (114, 30)
    assert data.num_classes == 2 and set(np.unique(data.y_train)) == {0, 1}
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    with pytest.raises(
        ValueError,
        match=r"scaling='unit' is not supported for dataset 'breast_cancer'; "
        r"allowed: 'standard', 'none'",
    ):
        load_dataset("breast_cancer", scaling="unit")


def test_unknown_dataset_lists_allowed_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown dataset name 'cifar10'; allowed: .*breast_cancer, .*digits.*mnist",
    ):
        load_dataset("cifar10")


def test_name_is_normalised() -> None:
    assert load_dataset("  Breast-Cancer ").name == "breast_cancer"


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), "0.2"])
def test_bad_test_fraction(fraction) -> None:
    with pytest.raises(ValueError, match=r"test_fraction must lie in the open interval \(0, 1\)"):
        load_dataset("digits", test_fraction=fraction)


def test_unknown_scaling_lists_allowed() -> None:
    with pytest.raises(
        ValueError, match=r"scaling='minmax' .* allowed: 'standard', 'unit', 'none'"
    ):
        load_dataset("digits", scaling="minmax")


def test_dataset_validates_its_arrays() -> None:
    x = np.zeros((3, 2), np.float32)
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"x_train must be float32, got float64"):
        Dataset("t", x.astype(np.float64), y, x, y, num_classes=3)
    with pytest.raises(ValueError, match=r"y_test values must lie in \[0, 2\)"):
        Dataset("t", x, y % 2, x, y, num_classes=2)
    with pytest.raises(ValueError, match=r"x_test has 2 samples but y_test has 3"):
        Dataset("t", x, y, x[:2], y, num_classes=3)
