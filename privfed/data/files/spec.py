"""A site's data file (:class:`FileSpec`) and what loading it gives (:class:`SiteArrays`).

Also the label and value helpers shared by the loaders: labels are matched to
the declared classes as strings (a CSV label ``1`` and an array label ``1``
both match class ``"1"``), and errors report row numbers through
:func:`describe_rows`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from privfed.data.errors import DataFormatError

FORMATS = ("csv", "parquet", "image_folder", "npz", "python")
TABULAR_FORMATS = ("csv", "parquet")
IMAGE_FORMATS = ("image_folder", "npz", "python")
CHANNELS = (1, 3)
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_SHOWN = 5


def split_import_path(path: str) -> tuple[str, str]:
    """Split ``"package.module:function"`` into module and attribute path.

    Raises
    ------
    DataFormatError
        If ``path`` is not of the form ``"package.module:function"``.
    """
    if not _IMPORT_PATH.match(path):
        raise DataFormatError(
            f"data.path {path!r} is not an import path; expected 'package.module:function' "
            "(dotted module, one ':', then the callable's name)"
        )
    module, attr = path.split(":")
    return module, attr


def _as_str_tuple(name: str, values: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"FileSpec.{name} must be a list of strings, got {values!r}")
    if any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in values):
        raise ValueError(f"FileSpec.{name} entries must be strings (or integers), got {values!r}")
    out = tuple(str(v) for v in values)
    if (not out and not allow_empty) or "" in out or len(set(out)) != len(out):
        raise ValueError(f"FileSpec.{name} must hold unique non-empty names, got {values!r}")
    return out


@dataclass(frozen=True)
class FileSpec:
    """One site's data file(s) and how to read them.

    Parameters
    ----------
    format : str
        One of :data:`FORMATS`: ``"csv"``, ``"parquet"``, ``"image_folder"``,
        ``"npz"`` or ``"python"``.
    path : str
        File or folder; for ``"python"`` an import path ``"package.module:function"``.
    label_column : str
        Tabular: the column holding the labels.
    feature_columns : tuple of str or None
        Tabular: the feature columns in model order; ``None`` takes every column
        except ``label_column`` and ``group_column``, in file order.
    categorical : Mapping[str, tuple of str]
        Tabular: the declared categories of each categorical column, one-hot
        encoded in the declared order. Every site and the server must agree on
        the input width without seeing each other's data, so categories are
        declared, never inferred.
    classes : tuple of str or None
        Label values in class order (compared as strings: a label ``1`` matches
        class ``"1"``); ``None`` takes the sorted unique labels found (integers
        sorted numerically). For image folders, the class folder names.
    image_size : tuple of int or None
        ``(H, W)`` to resize every image to (Pillow, bilinear); ``None`` keeps
        the size, which must then be the same for all images.
    channels : int or None
        1 (grayscale) or 3 (RGB); ``None`` takes it from the data.
    group_column : str or None
        Tabular: a column whose value names the client a row belongs to (a
        natural partition); it is not a feature.
    options : Mapping[str, Any]
        ``"python"``: keyword arguments for the callable.

    Raises
    ------
    ValueError
        If a field has a value outside its allowed values, or a field is set
        for a format it does not apply to. A malformed ``"python"`` import path
        raises :class:`~privfed.data.DataFormatError` (a ``ValueError``).
    """

    format: str
    path: str
    label_column: str = "label"
    feature_columns: tuple[str, ...] | None = None
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    group_column: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(
                f"FileSpec.format must be one of {', '.join(FORMATS)}; got {self.format!r}"
            )
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"FileSpec.path must be a non-empty string, got {self.path!r}")
        if self.format == "python":
            split_import_path(self.path)
        self._check_tabular_fields()
        self._check_image_fields()
        if self.classes is not None:
            object.__setattr__(self, "classes", _as_str_tuple("classes", self.classes))
        if not isinstance(self.options, Mapping) or not all(
            isinstance(k, str) for k in self.options
        ):
            raise ValueError(
                f"FileSpec.options must be a mapping with string keys, got {self.options!r}"
            )
        if self.options and self.format != "python":
            raise ValueError(
                f"FileSpec.options applies to format 'python' only, not {self.format!r}"
            )
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def _check_tabular_fields(self) -> None:
        if not isinstance(self.label_column, str) or not self.label_column:
            raise ValueError(
                f"FileSpec.label_column must be a non-empty string, got {self.label_column!r}"
            )
        tabular_set = [
            name for name in ("feature_columns", "group_column") if getattr(self, name) is not None
        ] + (["categorical"] if self.categorical else [])
        if tabular_set and self.format not in TABULAR_FORMATS:
            raise ValueError(
                f"FileSpec.{tabular_set[0]} applies to formats {', '.join(TABULAR_FORMATS)} only, "
                f"not {self.format!r}"
            )
        if self.feature_columns is not None:
            features = _as_str_tuple("feature_columns", self.feature_columns)
            object.__setattr__(self, "feature_columns", features)
        if not isinstance(self.categorical, Mapping):
            raise ValueError(f"FileSpec.categorical must be a mapping, got {self.categorical!r}")
        categorical = {
            str(col): _as_str_tuple(f"categorical[{col!r}]", cats)
            for col, cats in self.categorical.items()
        }
        object.__setattr__(self, "categorical", MappingProxyType(categorical))
        group = self.group_column
        if group is not None and (not isinstance(group, str) or not group):
            raise ValueError(
                f"FileSpec.group_column must be a non-empty string or None, got {group!r}"
            )
        special = {self.label_column, group} - {None}
        clash = special & (set(self.feature_columns or ()) | set(categorical))
        if group == self.label_column or clash:
            raise ValueError(
                f"FileSpec: label_column {self.label_column!r} and group_column {group!r} must "
                "differ and cannot be features or categorical columns"
            )
        if self.feature_columns is not None and not set(categorical) <= set(self.feature_columns):
            extra = sorted(set(categorical) - set(self.feature_columns))
            raise ValueError(f"FileSpec.categorical names columns not in feature_columns: {extra}")

    def _check_image_fields(self) -> None:
        if self.channels is not None and self.channels not in CHANNELS:
            raise ValueError(f"FileSpec.channels must be 1, 3 or None, got {self.channels!r}")
        size = self.image_size
        if size is not None:
            ok = isinstance(size, (list, tuple)) and len(size) == 2
            if not ok or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
                raise ValueError(
                    f"FileSpec.image_size must be (H, W) positive integers, got {size!r}"
                )
            object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        image_set = [n for n in ("image_size", "channels") if getattr(self, n) is not None]
        if image_set and self.format not in IMAGE_FORMATS:
            raise ValueError(
                f"FileSpec.{image_set[0]} applies to formats {', '.join(IMAGE_FORMATS)} only, "
                f"not {self.format!r}"
            )


@dataclass(frozen=True, eq=False)
class SiteArrays:
    """The raw (unscaled) arrays loaded from one site's file(s).

    Parameters
    ----------
    x : numpy.ndarray
        ``float32`` inputs, ``(N, F)`` for tabular data or ``(N, C, H, W)`` for
        images (pixels in 0..255 for image files).
    y : numpy.ndarray
        ``int64`` labels ``(N,)`` in ``[0, len(classes))``.
    classes : tuple of str
        Class names in label order.
    feature_names : tuple of str
        Tabular: one name per column of ``x``, one-hot columns as
        ``"col=value"``; empty for images or unnamed features.
    groups : numpy.ndarray or None
        ``str`` array ``(N,)`` of the group column, or ``None``.
    x_test, y_test : numpy.ndarray or None
        The file's official test split (same dtypes and sample shape), or ``None``.

    Raises
    ------
    ValueError
        If dtypes, shapes or label ranges are inconsistent.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    groups: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("SiteArrays.classes must not be empty")
        _check_pair("", self.x, self.y, len(self.classes))
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("SiteArrays: x_test and y_test must both be set or both be None")
        if self.x_test is not None:
            _check_pair("_test", self.x_test, self.y_test, len(self.classes))
            if self.x_test.shape[1:] != self.input_shape:
                raise ValueError(
                    f"SiteArrays: x_test sample shape {self.x_test.shape[1:]} differs from "
                    f"x sample shape {self.input_shape}"
                )
        if self.feature_names and (self.x.ndim != 2 or len(self.feature_names) != self.x.shape[1]):
            raise ValueError(
                f"SiteArrays: {len(self.feature_names)} feature_names for x of shape {self.x.shape}"
            )
        if self.groups is not None and self.groups.shape != self.y.shape:
            raise ValueError(
                f"SiteArrays: groups shape {self.groups.shape} != y shape {self.y.shape}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, ``x.shape[1:]``."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)


def _check_pair(suffix: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    if x.dtype != np.float32 or x.ndim not in (2, 4):
        raise ValueError(
            f"SiteArrays.x{suffix} must be float32 (N, F) or (N, C, H, W), got {x.dtype} {x.shape}"
        )
    if y.dtype != np.int64 or y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"SiteArrays.y{suffix} must be int64 (N,) matching x{suffix} ({len(x)}), "
            f"got {y.dtype} {y.shape}"
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"SiteArrays.y{suffix} values must lie in [0, {num_classes})")


def describe_rows(mask: np.ndarray, *, tabular: bool) -> str:
    """Count and first positions of the ``True`` entries of ``mask``, for messages.

    Tabular rows are numbered from 1 (the first data row after the header);
    array samples by their 0-based index.
    """
    where = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1 if tabular else i) for i in where[:_SHOWN])
    more = ", ..." if len(where) > _SHOWN else ""
    unit = "row" if tabular else "sample"
    plural = "" if len(where) == 1 else "s"
    kind = "" if tabular else " at index"
    return f"{len(where)} {unit}{plural}{kind}: {shown}{more}"


def value_strings(values: np.ndarray) -> np.ndarray:
    """Values as strings the way declared classes and categories are written.

    Integer-valued floats become integers first (``1.0`` -> ``"1"``).
    """
    values = np.asarray(values)
    if (
        values.dtype.kind == "f"
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    ):
        values = values.astype(np.int64)
    return values.astype(str)


def encode_labels(
    values: np.ndarray, classes: tuple[str, ...] | None, where: str, *, tabular: bool
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map label values to class indices.

    Parameters
    ----------
    values : numpy.ndarray
        Labels ``(N,)``: integers, integer-valued floats or strings.
    classes : tuple of str or None
        Declared classes; ``None`` takes the sorted unique values (integers
        sorted numerically).
    where : str
        File and column or key, for messages.
    tabular : bool
        Report 1-based rows (True) or 0-based sample indices (False).

    Returns
    -------
    tuple
        ``int64`` labels ``(N,)`` and the classes.

    Raises
    ------
    DataFormatError
        If float labels are not integer-valued or a label is not in ``classes``.
    """
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise DataFormatError(
            f"{where}: labels must be integers or strings, got non-integer floats"
        )
    if classes is None:
        found = np.unique(
            values.astype(np.int64) if values.dtype.kind in "iuf" else values.astype(str)
        )
        classes = tuple(str(v) for v in found)
    y = codes_in(value_strings(values), classes, where=f"{where}: label",
                 allowed="not in classes", tabular=tabular)
    return y, classes


def codes_in(
    strings: np.ndarray, names: Sequence[str], *, where: str, allowed: str, tabular: bool
) -> np.ndarray:
    """Each of ``strings``' index in ``names`` (int64).

    Raises
    ------
    DataFormatError
        ``"{where} value(s) ... {allowed} [names] (rows)"`` when a string is none of
        ``names``.
    """
    index = {name: i for i, name in enumerate(names)}
    codes = np.array([index.get(s, -1) for s in strings], dtype=np.int64)
    outside = codes < 0
    if outside.any():
        bad = sorted(set(strings[outside].tolist()))
        raise DataFormatError(
            f"{where} value(s) {', '.join(map(repr, bad[:10]))} {allowed} {list(names)} "
            f"({describe_rows(outside, tabular=tabular)})"
        )
    return codes
