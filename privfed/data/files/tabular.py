"""CSV and Parquet files of one site: one row per example, one column per feature.

Numeric feature columns are used as they are; a non-numeric column must be
declared in :attr:`FileSpec.categorical` and is one-hot encoded in the declared
order (columns ``"col=value"``). Missing values are reported, never dropped or
imputed. Row numbers in messages count data rows from 1 (the row after the
header is row 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from privfed.data.errors import DataFormatError
from privfed.data.files.spec import (
    TABULAR_FORMATS,
    FileSpec,
    SiteArrays,
    codes_in,
    describe_rows,
    encode_labels,
    value_strings,
)

_SHOWN_VALUES = 10


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """Read a CSV or Parquet file into a data frame.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    fmt : str
        ``"csv"`` or ``"parquet"``.

    Returns
    -------
    pandas.DataFrame
        At least one row.

    Raises
    ------
    DataFormatError
        If the file is missing, unreadable, empty or has no data rows.
    """
    if fmt not in TABULAR_FORMATS:
        raise ValueError(f"read_table: format must be one of {TABULAR_FORMATS}, got {fmt!r}")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such {fmt} file")
    try:
        frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path, engine="pyarrow")
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{path}: empty file; expected a header row and data rows") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        msg = " ".join(str(exc).split())
        raise DataFormatError(f"{path}: not a readable {fmt} file ({msg})") from exc
    if len(frame) == 0:
        raise DataFormatError(
            f"{path}: no data rows (columns: {', '.join(map(str, frame.columns))})"
        )
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _feature_columns(frame: pd.DataFrame, spec: FileSpec, path: Path) -> list[str]:
    columns = list(frame.columns)
    found = ", ".join(columns)
    if spec.label_column not in columns:
        raise DataFormatError(
            f"{path}: label column {spec.label_column!r} not found (columns: {found}); "
            "set data.label_column"
        )
    if spec.group_column is not None and spec.group_column not in columns:
        raise DataFormatError(
            f"{path}: group column {spec.group_column!r} not found (columns: {found})"
        )
    if spec.feature_columns is None:
        features = [c for c in columns if c not in (spec.label_column, spec.group_column)]
    else:
        features = list(spec.feature_columns)
    missing = [c for c in [*features, *spec.categorical] if c not in columns]
    if missing:
        raise DataFormatError(
            f"{path}: feature column(s) {', '.join(map(repr, missing))} not found "
            f"(columns: {found})"
        )
    if not features:
        raise DataFormatError(f"{path}: no feature columns besides the label (columns: {found})")
    return features


def _check_missing(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    reports = []
    for col in columns:
        mask = frame[col].isna().to_numpy()
        if mask.any():
            reports.append(f"column {col!r} ({describe_rows(mask, tabular=True)})")
    if reports:
        raise DataFormatError(
            f"{path}: missing values in {'; '.join(reports)}; rows are never dropped or imputed, "
            "fix or remove them in the file"
        )


def _numeric(series: pd.Series, col: str, path: Path) -> np.ndarray:
    values = series.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataFormatError(
            f"{path}: column {col!r} has non-finite values ({describe_rows(bad, tabular=True)})"
        )
    return values[:, None]


def _one_hot(series: pd.Series, col: str, categories: tuple[str, ...], path: Path) -> np.ndarray:
    codes = codes_in(value_strings(series.to_numpy()), categories,
                     where=f"{path}: column {col!r} has",
                     allowed="outside its declared categories", tabular=True)
    return np.eye(len(categories), dtype=np.float64)[codes]


def _undeclared(series: pd.Series, col: str, path: Path) -> DataFormatError:
    found = sorted(set(value_strings(series.to_numpy()).tolist()))
    shown = ", ".join(map(repr, found[:_SHOWN_VALUES]))
    more = f", ... ({len(found)} distinct)" if len(found) > _SHOWN_VALUES else ""
    return DataFormatError(
        f"{path}: feature column {col!r} is not numeric (values found: {shown}{more}); "
        f"declare its categories under data.categorical (e.g. {col} = [...]) or leave it out"
    )


def encode_features(
    frame: pd.DataFrame, features: list[str], spec: FileSpec, path: Path
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Build the ``float32`` feature matrix, one-hot encoding declared categorical columns.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table, without missing values in ``features``.
    features : list of str
        Feature columns in model order.
    spec : FileSpec
        Gives the declared categories.
    path : pathlib.Path
        For messages.

    Returns
    -------
    tuple
        ``x`` float32 ``(N, F)`` and the feature names (``"col=value"`` for one-hot columns).

    Raises
    ------
    DataFormatError
        If a non-numeric column is not declared categorical, a categorical value
        is outside its declared categories, or a numeric value is infinite.
    """
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for col in features:
        series = frame[col]
        if col in spec.categorical:
            categories = spec.categorical[col]
            blocks.append(_one_hot(series, col, categories, path))
            names.extend(f"{col}={cat}" for cat in categories)
        elif pd.api.types.is_numeric_dtype(series.dtype):
            blocks.append(_numeric(series, col, path))
            names.append(col)
        else:
            raise _undeclared(series, col, path)
    return np.hstack(blocks).astype(np.float32), tuple(names)


def load_tabular(spec: FileSpec) -> SiteArrays:
    """Load a CSV or Parquet file described by ``spec``.

    Parameters
    ----------
    spec : FileSpec
        ``format`` ``"csv"`` or ``"parquet"``.

    Returns
    -------
    SiteArrays
        ``x`` float32 ``(N, F)``, ``y`` int64 ``(N,)``, ``feature_names`` and,
        with ``group_column``, ``groups`` (str ``(N,)``); no test split.

    Raises
    ------
    DataFormatError
        If the file is missing, empty or unreadable; the label, group or a
        feature column is absent; a value is missing; a non-numeric feature is
        not declared categorical; a categorical value is not declared; or a
        label is not in ``spec.classes``.
    """
    path = Path(spec.path)
    frame = read_table(path, spec.format)
    features = _feature_columns(frame, spec, path)
    group = [] if spec.group_column is None else [spec.group_column]
    _check_missing(frame, [*features, spec.label_column, *group], path)
    x, names = encode_features(frame, features, spec, path)
    where = f"{path}: label column {spec.label_column!r}"
    y, classes = encode_labels(
        frame[spec.label_column].to_numpy(), spec.classes, where, tabular=True
    )
    groups = None if not group else value_strings(frame[spec.group_column].to_numpy())
    return SiteArrays(x=x, y=y, classes=classes, feature_names=names, groups=groups)
