"""Tests for privfed.data.files: loaders for a site's own files, on small files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from privfed.data import DataFormatError
from privfed.data.files import (
    FileSpec,
    SiteArrays,
    Standardizer,
    load_file,
    stratified_holdout,
)

TABLE = pd.DataFrame(
    {
        "age": [30, 41, 52, 63],
        "sex": ["f", "m", "f", "m"],
        "bmi": [21.5, 30.0, 25.25, 27.0],
        "site": ["a", "a", "b", "b"],
        "label": [1, 0, 2, 1],
    }
)


def write_csv(tmp_path: Path, frame: pd.DataFrame = TABLE, name: str = "site.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def csv_spec(path: Path, **kw) -> FileSpec:
    return FileSpec(format="csv", path=str(path), **kw)


# --- tabular -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tabular_round_trip(tmp_path, fmt):
    path = tmp_path / f"site.{fmt}"
    TABLE.to_csv(path, index=False) if fmt == "csv" else TABLE.to_parquet(path)
    out = load_file(
        FileSpec(format=fmt, path=str(path), categorical={"sex": ("m", "f")}, group_column="site")
    )
    assert out.feature_names == ("age", "sex=m", "sex=f", "bmi")
    expected = np.array(
        [[30, 0, 1, 21.5], [41, 1, 0, 30.0], [52, 0, 1, 25.25], [63, 1, 0, 27.0]], np.float32
    )
    np.testing.assert_array_equal(out.x, expected)
    assert out.x.dtype == np.float32 and out.y.dtype == np.int64
    assert out.classes == ("0", "1", "2")
    np.testing.assert_array_equal(out.y, [1, 0, 2, 1])
    assert out.groups.tolist() == ["a", "a", "b", "b"]
    assert out.x_test is None and out.y_test is None
    assert out.input_shape == (4,)


def test_one_hot_follows_declared_category_order(tmp_path):
    path = write_csv(tmp_path)
    spec = csv_spec(path, categorical={"sex": ("f", "m", "x")}, feature_columns=("sex",))
    out = load_file(spec)
    assert out.feature_names == ("sex=f", "sex=m", "sex=x")
    np.testing.assert_array_equal(out.x, [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])


def test_declared_classes_map_labels_in_declared_order(tmp_path):
    path = write_csv(tmp_path)
    spec = csv_spec(path, classes=("2", "1", "0"), feature_columns=("age",))
    out = load_file(spec)
    assert out.classes == ("2", "1", "0")
    np.testing.assert_array_equal(out.y, [1, 2, 0, 1])


def test_integer_labels_sort_numerically_and_string_labels_map(tmp_path):
    frame = pd.DataFrame({"v": [1.0, 2.0, 3.0], "label": [10, 9, 2]})
    out = load_file(csv_spec(write_csv(tmp_path, frame)))
    assert out.classes == ("2", "9", "10")
    np.testing.assert_array_equal(out.y, [2, 1, 0])
    frame = pd.DataFrame({"v": [1.0, 2.0, 3.0], "dx": ["benign", "malign", "benign"]})
    out = load_file(csv_spec(write_csv(tmp_path, frame, "s.csv"), label_column="dx"))
    assert out.classes == ("benign", "malign")
    np.testing.assert_array_equal(out.y, [0, 1, 0])


def test_missing_label_column_lists_columns(tmp_path):
    path = write_csv(tmp_path)
    with pytest.raises(DataFormatError, match="label column 'outcome' not found") as err:
        load_file(csv_spec(path, label_column="outcome", categorical={"sex": ("f", "m")}))
    assert str(path) in str(err.value) and "age, sex, bmi, site, label" in str(err.value)


def test_absent_feature_column_is_named(tmp_path):
    path = write_csv(tmp_path)
    with pytest.raises(DataFormatError, match="'weight' not found") as err:
        load_file(csv_spec(path, feature_columns=("age", "weight")))
    assert str(path) in str(err.value)


def test_non_numeric_undeclared_feature_lists_values(tmp_path):
    path = write_csv(tmp_path)
    with pytest.raises(DataFormatError, match="feature column 'sex' is not numeric") as err:
        load_file(csv_spec(path, feature_columns=("age", "sex")))
    message = str(err.value)
    assert str(path) in message and "'f', 'm'" in message and "data.categorical" in message


def test_value_outside_declared_categories(tmp_path):
    path = write_csv(tmp_path)
    with pytest.raises(DataFormatError, match="column 'sex' has value") as err:
        load_file(csv_spec(path, feature_columns=("sex",), categorical={"sex": ("f", "x")}))
    message = str(err.value)
    assert str(path) in message and "'m'" in message and "['f', 'x']" in message
    assert "2 rows: 2, 4" in message


def test_nan_in_csv_reports_column_count_and_rows(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("age,bmi,label\n30,21.5,0\n,30.0,1\n52,,0\n,27.0,1\n")
    with pytest.raises(DataFormatError, match="missing values") as err:
        load_file(csv_spec(path))
    message = str(err.value)
    assert str(path) in message
    assert "column 'age' (2 rows: 2, 4)" in message and "column 'bmi' (1 row: 3)" in message


def test_empty_csv_and_label_outside_classes(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty file"):
        load_file(csv_spec(empty))
    path = write_csv(tmp_path)
    with pytest.raises(DataFormatError, match=r"label value\(s\) '2' not in classes") as err:
        load_file(csv_spec(path, classes=("0", "1"), feature_columns=("age",)))
    assert "1 row: 3" in str(err.value)


# --- image folder ------------------------------------------------------------------------------


def write_image(path: Path, value: int | tuple[int, int, int], size=(6, 4)) -> None:
    """A solid image of ``size = (H, W)``."""
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, (size[1], size[0]), value).save(path)


def make_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "normal").mkdir(parents=True)
    (root / "tumour").mkdir()
    write_image(root / "normal" / "a.png", 10)
    write_image(root / "normal" / "b.PNG", 20)
    write_image(root / "tumour" / "c.png", (200, 100, 50))
    write_image(root / "tumour" / "d.jpeg", (0, 0, 0))
    (root / "tumour" / "notes.txt").write_text("ignored")
    return root


def test_image_folder_round_trip(tmp_path):
    root = make_folder(tmp_path)
    out = load_file(FileSpec(format="image_folder", path=str(root)))
    assert out.x.shape == (4, 3, 6, 4) and out.x.dtype == np.float32
    assert out.classes == ("normal", "tumour") and out.feature_names == ()
    np.testing.assert_array_equal(out.y, [0, 0, 1, 1])
    np.testing.assert_array_equal(out.x[1], np.full((3, 6, 4), 20.0))  # grayscale repeated
    np.testing.assert_array_equal(out.x[2, :, 0, 0], [200, 100, 50])


def test_image_folder_resize_channels_and_declared_order(tmp_path):
    root = make_folder(tmp_path)
    spec = FileSpec(
        format="image_folder",
        path=str(root),
        image_size=(3, 5),
        channels=1,
        classes=("tumour", "normal"),
    )
    out = load_file(spec)
    assert out.x.shape == (4, 1, 3, 5)
    np.testing.assert_array_equal(out.y, [0, 0, 1, 1])
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    np.testing.assert_allclose(out.x[0], np.full((1, 3, 5), luma), atol=1)
    np.testing.assert_array_equal(out.x[2], np.full((1, 3, 5), 10.0))


def test_class_folder_without_images_is_named(tmp_path):
    root = make_folder(tmp_path)
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.md").write_text("no images")
    with pytest.raises(DataFormatError, match="holds no images") as err:
        load_file(FileSpec(format="image_folder", path=str(root)))
    assert str(root / "empty_class") in str(err.value)


def test_image_folder_errors_name_the_culprit(tmp_path):
    root = make_folder(tmp_path)
    with pytest.raises(DataFormatError, match=r"declared class\(es\) \['cyst'\] have no folder"):
        load_file(FileSpec(format="image_folder", path=str(root), classes=("normal", "cyst")))
    write_image(root / "normal" / "e.png", 5, size=(8, 8))
    with pytest.raises(DataFormatError, match=r"image size \(8, 8\) differs") as err:
        load_file(FileSpec(format="image_folder", path=str(root)))
    assert str(root / "normal" / "e.png") in str(err.value)
    (root / "normal" / "e.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="unreadable image") as err:
        load_file(FileSpec(format="image_folder", path=str(root)))
    assert "e.png" in str(err.value)
    with pytest.raises(DataFormatError, match="image folder not found"):
        load_file(FileSpec(format="image_folder", path=str(tmp_path / "nope")))


# --- npz ---------------------------------------------------------------------------------------


def images(n: int, rgb: bool = False, seed: int = 0) -> np.ndarray:
    shape = (n, 5, 4, 3) if rgb else (n, 5, 4)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npz_generic_keys_round_trip(tmp_path):
    path = tmp_path / "site.npz"
    x_train, x_test = images(6, rgb=True), images(3, rgb=True, seed=1)
    y_train, y_test = np.array([0, 1, 2, 0, 1, 2]), np.array([2, 2, 0])
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    out = load_file(FileSpec(format="npz", path=str(path)))
    assert out.x.shape == (6, 3, 5, 4) and out.x.dtype == np.float32
    np.testing.assert_array_equal(out.x, x_train.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(out.x_test, x_test.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(out.y, y_train)
    np.testing.assert_array_equal(out.y_test, y_test)
    assert out.classes == ("0", "1", "2")


def test_npz_medmnist_keys_merge_val_and_resize(tmp_path):
    path = tmp_path / "breast.npz"
    arrays = {
        "train_images": images(4),
        "train_labels": np.array([[0], [1], [1], [0]]),
        "val_images": images(2, seed=2),
        "val_labels": np.array([[1], [1]]),
        "test_images": images(3, seed=3),
        "test_labels": np.array([[0], [1], [0]]),
    }
    np.savez(path, **arrays)
    out = load_file(FileSpec(format="npz", path=str(path)))
    assert out.x.shape == (6, 1, 5, 4) and out.x_test.shape == (3, 1, 5, 4)
    np.testing.assert_array_equal(out.x[4:, 0], arrays["val_images"].astype(np.float32))
    np.testing.assert_array_equal(out.y, [0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(out.y_test, [0, 1, 0])
    resized = load_file(FileSpec(format="npz", path=str(path), image_size=(10, 8), channels=3))
    assert resized.x.shape == (6, 3, 10, 8) and resized.x_test.shape == (3, 3, 10, 8)
    flat = np.full((2, 5, 4), 77, np.uint8)
    np.savez(path, train_images=flat, train_labels=np.array([0, 1]))
    out = load_file(FileSpec(format="npz", path=str(path), image_size=(10, 8)))
    np.testing.assert_allclose(out.x, 77.0, atol=1e-4)
    assert out.x_test is None


def test_npz_mismatched_lengths_name_both_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=images(5), y_train=np.arange(4) % 2)
    with pytest.raises(
        DataFormatError, match="'x_train' has 5 images but key 'y_train' has 4"
    ) as e:
        load_file(FileSpec(format="npz", path=str(path)))
    assert str(path) in str(e.value)


def test_npz_nan_is_reported(tmp_path):
    path = tmp_path / "nan.npz"
    x = images(4).astype(np.float32)
    x[2, 1, 1] = np.nan
    np.savez(path, x_train=x, y_train=np.array([0, 1, 0, 1]))
    with pytest.raises(
        DataFormatError, match="NaN or infinite values in 1 sample at index: 2"
    ) as e:
        load_file(FileSpec(format="npz", path=str(path)))
    assert str(path) in str(e.value) and "'x_train'" in str(e.value)


def test_npz_missing_keys_and_wrong_ndim(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, images=images(2), labels=np.array([0, 1]))
    with pytest.raises(DataFormatError, match="found: images, labels") as err:
        load_file(FileSpec(format="npz", path=str(path)))
    assert "x_train, y_train" in str(err.value) and "train_images, train_labels" in str(err.value)
    np.savez(path, x_train=images(2), y_train=np.array([0, 1]), x_test=images(1))
    with pytest.raises(DataFormatError, match="unpaired"):
        load_file(FileSpec(format="npz", path=str(path)))
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.array([0, 1]))
    with pytest.raises(DataFormatError, match=r"'x_train': images must have shape \(N, H, W\)"):
        load_file(FileSpec(format="npz", path=str(path)))


# --- FileSpec / SiteArrays ---------------------------------------------------------------------


def test_file_spec_normalises_lists_and_validates_fields():
    spec = FileSpec(
        format="csv",
        path="x.csv",
        feature_columns=["a", "b"],
        categorical={"b": ["u", 1]},
        classes=[0, 1],
    )
    assert spec.feature_columns == ("a", "b") and spec.categorical["b"] == ("u", "1")
    assert spec.classes == ("0", "1")
    bad = [
        ({"format": "xls"}, "FileSpec.format must be one of csv, parquet, image_folder"),
        ({"format": "image_folder", "channels": 2}, "FileSpec.channels must be 1, 3"),
        ({"format": "npz", "image_size": (0, 4)}, "FileSpec.image_size"),
        ({"format": "npz", "group_column": "site"}, "group_column applies to formats csv"),
        ({"format": "csv", "channels": 1}, "channels applies to formats image_folder"),
        ({"format": "csv", "classes": ("a", "a")}, "FileSpec.classes must hold unique"),
        ({"format": "csv", "group_column": "label"}, "must differ"),
        ({"format": "csv", "options": {"n": 1}}, "options applies to format 'python'"),
    ]
    for kwargs, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            FileSpec(**{"path": "x", **kwargs})


def test_site_arrays_checks_consistency():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="y values must lie in"):
        SiteArrays(x=x, y=np.array([0, 1, 2]), classes=("a", "b"))
    with pytest.raises(ValueError, match="feature_names"):
        SiteArrays(x=x, y=np.array([0, 1, 0]), classes=("a", "b"), feature_names=("f",))


# --- preprocessing -----------------------------------------------------------------------------


def test_standardizer_per_feature_on_training_data():
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(5, 3, 200), np.full(200, 7.0), rng.normal(-2, 0.1, 200)])
    scaler = Standardizer.fit(train.astype(np.float32))
    out = scaler.apply(train.astype(np.float32))
    assert out.dtype == np.float32 and scaler.mean.shape == (3,)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, [0, 2]].std(axis=0), 1.0, atol=1e-4)
    assert scaler.std[1] == 1.0
    np.testing.assert_allclose(out[:, 1], 0.0)
    other = np.array([[5.0, 9.0, -2.0]], np.float32)  # statistics stay the training ones
    np.testing.assert_allclose(scaler.apply(other)[0, 1], 2.0)


def test_standardizer_images_and_json_round_trip():
    x = (
        np.stack([np.full((4, 4), c + 1.0) for c in range(3)])[None]
        * np.arange(1, 6)[:, None, None, None]
    )
    scaler = Standardizer.fit(x.astype(np.float32), axes=(0, 2, 3))
    assert scaler.mean.shape == (3, 1, 1)
    np.testing.assert_allclose(scaler.mean[:, 0, 0], [3.0, 6.0, 9.0])
    again = Standardizer.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(again.apply(x), scaler.apply(x))
    with pytest.raises(ValueError, match="axes must include 0"):
        Standardizer.fit(x, axes=(1,))


def test_stratified_holdout_keeps_class_shares():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20 + [3])
    train, hold = stratified_holdout(y, 0.2, seed=1)
    assert np.bincount(y[hold], minlength=4).tolist() == [10, 6, 4, 0]
    assert 100 in train  # a single-example class stays in train
    assert sorted(np.concatenate([train, hold]).tolist()) == list(range(len(y)))
    again, _ = stratified_holdout(y, 0.2, seed=1)
    other, _ = stratified_holdout(y, 0.2, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def test_stratified_holdout_edge_cases():
    y = np.array([0, 0, 1, 1, 1])
    train, hold = stratified_holdout(y, 0.0, seed=0)
    assert hold.size == 0 and train.tolist() == [0, 1, 2, 3, 4]
    train, hold = stratified_holdout(y, 0.9, seed=0)
    assert sorted(set(y[train].tolist())) == [0, 1] and len(hold) == 3
    train, hold = stratified_holdout(np.array([4]), 0.5, seed=0)
    assert train.tolist() == [0] and hold.size == 0
    with pytest.raises(ValueError, match="fraction must lie in"):
        stratified_holdout(y, 1.0, seed=0)
