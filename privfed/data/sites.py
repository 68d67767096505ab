"""A site's own files as a :class:`~privfed.data.Dataset`, with its natural partition.

One file split by a partitioner, one file whose group column names each row's client, or
one file per client: :func:`load_site_dataset` reads them with the loaders of
:mod:`privfed.data.files` and returns the pooled arrays (what the simulation partitions) and,
for a natural partition, each client's indices into them. Scaling statistics never come from
pooled data: under "site" scaling the training arrays stay raw and each client standardises
its own part (:func:`standardize_client`); a central test set is standardised with its own
statistics, as a further site would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from privfed.data.dataset import Dataset
from privfed.data.errors import DataFormatError
from privfed.data.files import FileSpec, SiteArrays, Standardizer, load_file, stratified_holdout
from privfed.data.scaling import PIXEL_MAX, apply_scaling

__all__ = ["PIXEL_SCALINGS", "load_site_dataset", "standardize_client"]

PIXEL_SCALINGS = ("unit", "centered")
"""Scalings by the public pixel range: "unit" to [0, 1], "centered" to [-1, 1]."""


def load_site_dataset(
    spec: FileSpec,
    paths: Sequence[str],
    *,
    test_path: str | None,
    natural: bool,
    test_fraction: float,
    split_seed: int,
    scaling: str,
) -> tuple[Dataset, list[np.ndarray] | None]:
    """Read a site's files into one :class:`Dataset` (and its natural partition).

    Parameters
    ----------
    spec : FileSpec
        How to read each file (format, label column, declared categories and classes...);
        its ``path`` is replaced by each of ``paths``.
    paths : sequence of str
        The files: one (split by a partitioner, or by ``spec.group_column``), or one per
        client.
    test_path : str or None
        A central test set in the same format.
    natural : bool
        Whether each file (or each group of ``spec.group_column``, if set) is one client.
    test_fraction, split_seed : float, int
        Without ``test_path``, a file that is split by a partitioner holds out this share
        (stratified, seeded) as the central test set; a natural partition has none.
    scaling : {"site", "unit", "centered", "none"}
        "site" leaves the training arrays raw (each client standardises its own part with
        :func:`standardize_client`) and standardises the test set with its own statistics.

    Returns
    -------
    dataset : Dataset
        ``x_train`` float32 ``(N, F)`` or ``(N, C, H, W)``; the test part may be empty.
    partitions : list of numpy.ndarray or None
        For a natural partition, client ``i``'s int64 indices into ``x_train``.

    Raises
    ------
    DataFormatError
        A file is malformed, or two files disagree on the features.
    """
    sites = [load_file(dataclasses.replace(spec, path=path)) for path in paths]
    classes = spec.classes or _union_classes(sites)
    sites = [_relabel(site, classes, path) for site, path in zip(sites, paths, strict=True)]
    _check_same_features(sites, paths)
    x = np.concatenate([s.x for s in sites])
    y = np.concatenate([s.y for s in sites])
    partitions = _natural_partitions(sites, spec) if natural else None
    x_test, y_test = _test_part(spec, sites, classes, test_path)
    if x_test is None:
        if natural:
            x_test, y_test = x[:0], y[:0]
        else:
            keep, held = stratified_holdout(y, test_fraction, split_seed)
            x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    x, x_test = _scale(scaling, x, x_test, images=x.ndim == 4)
    name = f"{spec.format}:{paths[0]}" if len(paths) == 1 else f"{spec.format}:{len(paths)} files"
    return Dataset(name, x, y, x_test, y_test, num_classes=len(classes)), partitions


def standardize_client(x: np.ndarray, validation: np.ndarray | None) -> tuple[
        np.ndarray, np.ndarray | None]:
    """Standardise one client's training data with its own statistics (per feature, or per
    channel for images), and its validation data with the same statistics."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    scaler = Standardizer.fit(x, axes)
    return scaler.apply(x), None if validation is None else scaler.apply(validation)


def _scale(scaling: str, x: np.ndarray, x_test: np.ndarray, *, images: bool) -> tuple[
        np.ndarray, np.ndarray]:
    if scaling in PIXEL_SCALINGS:
        if not images:
            raise DataFormatError(f"data.scaling = {scaling!r} scales pixels (0..255) and "
                                  "applies to images only; use 'site' or 'none' for a table")
        return apply_scaling(scaling, x, x_test, axes=(0, 2, 3), max_value=PIXEL_MAX)
    if scaling == "site" and len(x_test):
        return x, standardize_client(x_test, None)[0]
    return x, x_test


def _union_classes(sites: Sequence[SiteArrays]) -> tuple[str, ...]:
    """The sorted union of the classes found (integer labels sort numerically)."""
    found = {c for site in sites for c in site.classes}

    def key(label: str) -> tuple[int, float, str]:
        try:
            return 0, float(label), label
        except ValueError:
            return 1, 0.0, label

    return tuple(sorted(found, key=key))


def _relabel(site: SiteArrays, classes: Sequence[str], path: str) -> SiteArrays:
    """``site`` with labels indexing ``classes`` (each file indexes its own classes)."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(site.classes) - set(index))
    if unknown:
        raise DataFormatError(f"{path}: labels {unknown} are not among data.classes "
                              f"{list(classes)}")
    mapping = np.array([index[c] for c in site.classes], dtype=np.int64)
    y_test = None if site.y_test is None else mapping[site.y_test]
    return dataclasses.replace(site, y=mapping[site.y], y_test=y_test, classes=tuple(classes))


def _check_same_features(sites: Sequence[SiteArrays], paths: Sequence[str]) -> None:
    first = sites[0]
    for site, path in zip(sites[1:], paths[1:], strict=True):
        if site.feature_names != first.feature_names or site.input_shape != first.input_shape:
            raise DataFormatError(
                f"{path}: its features {list(site.feature_names) or site.input_shape} differ "
                f"from those of {paths[0]} ({list(first.feature_names) or first.input_shape}); "
                "every client's file must have the same columns (or image size)")


def _natural_partitions(sites: Sequence[SiteArrays], spec: FileSpec) -> list[np.ndarray]:
    """Client per file, or (one file) client per value of the group column, sorted."""
    if len(sites) > 1:
        bounds = np.cumsum([0, *(len(s.y) for s in sites)])
        return [np.arange(lo, hi, dtype=np.int64) for lo, hi in zip(bounds, bounds[1:],
                                                                     strict=False)]
    groups = sites[0].groups
    if groups is None:  # one site's own file
        return [np.arange(len(sites[0].y), dtype=np.int64)]
    return [np.flatnonzero(groups == g).astype(np.int64) for g in sorted(set(groups.tolist()))]


def _test_part(
    spec: FileSpec, sites: Sequence[SiteArrays], classes: Sequence[str], test_path: str | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The central test set: ``test_path``'s file, else the one file's own test split."""
    if test_path is not None:
        test = _relabel(load_file(dataclasses.replace(spec, path=test_path)), classes, test_path)
        _check_same_features([sites[0], test], [spec.path, test_path])
        return test.x, test.y
    if len(sites) == 1 and sites[0].x_test is not None:
        return sites[0].x_test, sites[0].y_test
    return None, None
