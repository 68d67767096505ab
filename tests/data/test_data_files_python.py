"""Tests for privfed.data.files' ``"python"`` format: a site's own function by import path."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from privfed.data import DataFormatError
from privfed.data.files import (
    FileSpec,
    load_file,
)

# --- python callable ---------------------------------------------------------------------------

SITE_MODULE = """
import numpy as np
import torch
from privfed.data import Dataset

def pairs(n=4):
    return np.arange(n * 3, dtype=np.float64).reshape(n, 3), np.arange(n) % 2

def four():
    x = np.ones((6, 2, 3, 3))
    return x, np.array([0, 1, 2, 0, 1, 2]), x[:2] * 2, np.array([[2], [1]])

def torch_dataset():
    x = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 1, 2, 2)
    return torch.utils.data.TensorDataset(x, torch.tensor([1, 0, 1, 0, 1]))

def privfed_dataset():
    x = np.zeros((3, 2), np.float32)
    y = np.array([0, 1, 2], np.int64)
    return Dataset("mine", x, y, x[:1], y[:1], num_classes=3)

def bad_lengths():
    return np.zeros((3, 2)), np.array([0, 1])

def nan_inputs():
    x = np.zeros((3, 2))
    x[1, 0] = np.nan
    return x, np.array([0, 1, 0])

def fractional_labels():
    return np.zeros((2, 2)), np.array([0.0, 0.5])

def wrong_type():
    return {"x": 1}

NOT_CALLABLE = 3
"""


@pytest.fixture
def site_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "mysite_loader.py").write_text(textwrap.dedent(SITE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "mysite_loader"


def python_spec(module: str, func: str, **kw) -> FileSpec:
    return FileSpec(format="python", path=f"{module}:{func}", **kw)


def test_python_arrays_with_options(site_module):
    out = load_file(python_spec(site_module, "pairs", options={"n": 5}))
    assert out.x.shape == (5, 3) and out.x.dtype == np.float32
    np.testing.assert_array_equal(out.x[1], [3, 4, 5])
    np.testing.assert_array_equal(out.y, [0, 1, 0, 1, 0])
    assert out.classes == ("0", "1") and out.x_test is None


def test_python_four_tuple_and_privfed_dataset(site_module):
    out = load_file(python_spec(site_module, "four", classes=("2", "1", "0")))
    assert out.x.shape == (6, 2, 3, 3) and out.x_test.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(out.y, [2, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(out.y_test, [0, 1])
    np.testing.assert_array_equal(out.x_test, 2.0)
    out = load_file(python_spec(site_module, "privfed_dataset"))
    assert out.classes == ("0", "1", "2") and out.y.tolist() == [0, 1, 2]
    assert out.y_test.tolist() == [0]


def test_python_torch_dataset_is_stacked(site_module):
    out = load_file(python_spec(site_module, "torch_dataset", channels=3, image_size=(4, 4)))
    assert out.x.shape == (5, 3, 4, 4) and out.x.dtype == np.float32
    plain = load_file(python_spec(site_module, "torch_dataset"))
    np.testing.assert_array_equal(plain.x[2, 0], [[8, 9], [10, 11]])
    np.testing.assert_array_equal(plain.y, [1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    "func, pattern",
    [
        ("bad_lengths", "x_train has 3 samples but y_train has 2 labels"),
        ("nan_inputs", "x_train: NaN or infinite values in 1 sample at index: 1"),
        ("fractional_labels", "y_train: labels must be integer-valued"),
        ("wrong_type", "returned dict; expected"),
    ],
)
def test_python_bad_results(site_module, func, pattern):
    with pytest.raises(DataFormatError, match=pattern) as err:
        load_file(python_spec(site_module, func))
    assert f"{site_module}:{func}" in str(err.value)


@pytest.mark.parametrize("path", ["nocolon", "a.b:c:d", ":func", "mod:", "1mod:f", "mod:f()"])
def test_bad_import_path_forms(path):
    with pytest.raises(DataFormatError, match="is not an import path") as err:
        FileSpec(format="python", path=path)
    assert repr(path) in str(err.value)


@pytest.mark.parametrize(
    "func, pattern",
    [
        ("missing", "has no attribute 'missing'"),
        ("NOT_CALLABLE", "'NOT_CALLABLE' is a int, not callable"),
    ],
)
def test_import_path_attribute_errors(site_module, func, pattern):
    with pytest.raises(DataFormatError, match=pattern):
        load_file(python_spec(site_module, func))


def test_import_path_missing_module():
    with pytest.raises(DataFormatError, match="cannot import module 'no_such_site_module.sub'"):
        load_file(FileSpec(format="python", path="no_such_site_module.sub:load"))
