"""Data produced by a site's own Python function, named ``"package.module:function"``.

The function is called with :attr:`FileSpec.options` as keyword arguments and
may return ``(x, y)``, ``(x_train, y_train, x_test, y_test)``, a
:class:`privfed.data.Dataset` or a ``torch.utils.data.Dataset`` of ``(x, y)``
pairs. Inputs are ``(N, F)`` tabular rows, ``(N, H, W)`` grayscale images or
``(N, C, H, W)`` channel-first images (the torch layout); labels are
integer-valued ``(N,)`` or ``(N, 1)``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from privfed.data.dataset import Dataset
from privfed.data.errors import DataFormatError
from privfed.data.files.images import (
    check_finite,
    integer_labels,
    match_channels,
    resize_images,
)
from privfed.data.files.spec import FileSpec, SiteArrays, encode_labels, split_import_path

Split = tuple[np.ndarray, np.ndarray]


def resolve_callable(path: str) -> Callable[..., Any]:
    """Import the callable named by ``"package.module:function"``.

    Raises
    ------
    DataFormatError
        If ``path`` is malformed, the module cannot be imported, the attribute
        does not exist or is not callable.
    """
    module_name, attr = split_import_path(path)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataFormatError(
            f"data.path {path!r}: cannot import module {module_name!r} ({exc}); "
            "is it installed or on PYTHONPATH?"
        ) from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise DataFormatError(
                f"data.path {path!r}: module {module_name!r} has no attribute {attr!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise DataFormatError(
            f"data.path {path!r}: {attr!r} is a {type(target).__name__}, not callable"
        )
    return target


def _torch_pairs(result: Any, where: str) -> Split | None:
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(result, torch.utils.data.Dataset):
        return None
    items = [result[i] for i in range(len(result))] if hasattr(result, "__len__") else list(result)
    if not items:
        raise DataFormatError(f"{where}: the torch Dataset is empty")
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataFormatError(f"{where}: torch Dataset item {i} is not an (x, y) pair")
    x = np.stack([np.asarray(item[0]) for item in items])
    y = np.asarray([np.asarray(item[1]).reshape(-1)[0] for item in items])
    return x, y


def _splits(result: Any, where: str) -> tuple[Split, Split | None]:
    if isinstance(result, Dataset):
        return (result.x_train, result.y_train), (result.x_test, result.y_test)
    pairs = _torch_pairs(result, where)
    if pairs is not None:
        return pairs, None
    if isinstance(result, (tuple, list)) and len(result) in (2, 4):
        arrays = [np.asarray(a) for a in result]
        test = (arrays[2], arrays[3]) if len(arrays) == 4 else None
        return (arrays[0], arrays[1]), test
    raise DataFormatError(
        f"{where}: returned {type(result).__name__}; expected (x, y), "
        "(x_train, y_train, x_test, y_test), a privfed.data.Dataset or a torch Dataset of (x, y)"
    )


def _inputs(x: np.ndarray, spec: FileSpec, where: str) -> np.ndarray:
    if x.dtype.kind not in "biuf" or x.ndim not in (2, 3, 4):
        raise DataFormatError(
            f"{where}: must be numeric (N, F), (N, H, W) or (N, C, H, W), got {x.dtype} {x.shape}"
        )
    x = np.ascontiguousarray(x[:, None] if x.ndim == 3 else x, dtype=np.float32)
    check_finite(x, where)
    if x.ndim == 2:
        if spec.image_size is not None or spec.channels is not None:
            raise DataFormatError(f"{where}: image_size/channels set but x is tabular {x.shape}")
        return x
    return resize_images(match_channels(x, spec.channels, where), spec.image_size)


def _check_split(split: Split, spec: FileSpec, names: tuple[str, str], where: str) -> Split:
    x = _inputs(split[0], spec, f"{where}: {names[0]}")
    y = integer_labels(split[1], f"{where}: {names[1]}")
    if len(x) != len(y):
        raise DataFormatError(
            f"{where}: {names[0]} has {len(x)} samples but {names[1]} has {len(y)} labels"
        )
    return x, y


def _dataset_classes(result: Dataset, spec: FileSpec, where: str) -> tuple[str, ...]:
    if spec.classes is None:
        return tuple(str(i) for i in range(result.num_classes))
    if len(spec.classes) != result.num_classes:
        raise DataFormatError(
            f"{where}: the Dataset has {result.num_classes} classes but data.classes "
            f"declares {len(spec.classes)}"
        )
    return spec.classes


def load_python(spec: FileSpec) -> SiteArrays:
    """Call ``spec.path`` (``"module:function"``) with ``**spec.options``; check the result.

    Labels are matched to ``spec.classes`` by value (label ``1`` is class
    ``"1"``), except for a :class:`privfed.data.Dataset`, whose labels already
    are class indices (``spec.classes``, if given, names them).

    Parameters
    ----------
    spec : FileSpec
        ``format`` ``"python"``.

    Returns
    -------
    SiteArrays
        ``x`` float32 ``(N, F)`` or ``(N, C, H, W)``, ``y`` int64 and, for a
        four-tuple or a Dataset, ``x_test``/``y_test``.

    Raises
    ------
    DataFormatError
        If the import path is malformed or does not resolve to a callable, the
        result has another form, inputs are not numeric or hold NaN, labels are
        not integer-valued, lengths of inputs and labels differ, the splits
        differ in sample shape, or a label is not in ``spec.classes``.
    """
    where = f"data.path {spec.path!r}"
    result = resolve_callable(spec.path)(**spec.options)
    train, test = _splits(result, where)
    x, y_raw = _check_split(train, spec, ("x_train", "y_train"), where)
    if test is not None:
        test = _check_split(test, spec, ("x_test", "y_test"), where)
        if test[0].shape[1:] != x.shape[1:]:
            raise DataFormatError(
                f"{where}: x_test sample shape {test[0].shape[1:]} differs from "
                f"x_train {x.shape[1:]}"
            )
    y_all = y_raw if test is None else np.concatenate([y_raw, test[1]])
    if isinstance(result, Dataset):
        classes = _dataset_classes(result, spec, where)
    else:
        y_all, classes = encode_labels(y_all, spec.classes, f"{where}: labels", tabular=False)
    if test is None:
        return SiteArrays(x=x, y=y_all, classes=classes)
    return SiteArrays(
        x=x, y=y_all[: len(y_raw)], classes=classes, x_test=test[0], y_test=y_all[len(y_raw) :]
    )
