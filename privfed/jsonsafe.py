"""Strict JSON for the files privfed writes (run directories, leakage reports, sweeps).

Python's :mod:`json` writes NaN and infinities as the tokens ``NaN`` and ``Infinity``, which
are not JSON: strict readers (JavaScript's ``JSON.parse``, jq, most other languages) reject
the whole file. Every JSON file of the project is therefore written through :func:`dumps`:

* NaN (a figure that does not exist, e.g. the loss of a round without data) becomes ``null``;
* ``+inf`` and ``-inf`` (e.g. the epsilon of a mechanism without noise) become the strings
  ``"inf"`` and ``"-inf"``;
* numpy scalars and arrays become plain numbers and lists, at any depth;

and ``allow_nan=False`` makes a value that escaped the conversion fail loudly. Readers use
:func:`loads` (or :func:`from_json_safe` on parsed data), which turns ``"inf"`` and ``"-inf"``
back into floats, so code that compares numbers keeps working. NaN does not come back: it is
read as None, the project's "missing" value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

import numpy as np

__all__ = ["INF", "NEG_INF", "to_json_safe", "from_json_safe", "dumps", "loads"]

INF = "inf"
"""How ``+inf`` is written."""
NEG_INF = "-inf"
"""How ``-inf`` is written."""


def to_json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON can represent (see the module docstring).

    Parameters
    ----------
    obj : Any
        Nested dicts, lists and tuples of numbers, strings, booleans, None, numpy scalars
        and numpy arrays. Other objects are returned unchanged (``json.dumps`` then raises,
        or uses its ``default``).

    Returns
    -------
    Any
        The same structure with NaN as None, infinities as ``"inf"``/``"-inf"``, numpy
        values as Python values and tuples as lists.
    """
    if isinstance(obj, np.ndarray):
        return to_json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return to_json_safe(obj.item())
    if isinstance(obj, float):
        return _safe_float(obj)
    if isinstance(obj, dict):
        return {_safe_key(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json_safe(v) for v in obj]
    return obj


def _safe_float(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return INF if value > 0 else NEG_INF
    return value


def _safe_key(key: Any) -> Any:
    return key.item() if isinstance(key, np.generic) else key


def from_json_safe(obj: Any, *, keep: Collection[str] = ()) -> Any:
    """Undo :func:`to_json_safe`'s infinities: ``"inf"``/``"-inf"`` strings become floats.

    Parameters
    ----------
    obj : Any
        Parsed JSON (dicts, lists, scalars).
    keep : collection of str
        Dict keys, at any depth, whose values are free text and stay as read (e.g. a run's
        ``"name"``, which may legitimately be ``"inf"``).

    Returns
    -------
    Any
        The same structure with the infinities restored (NaN, written as null, stays None).
    """
    if isinstance(obj, dict):
        return {k: v if k in keep else from_json_safe(v, keep=keep) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json_safe(v, keep=keep) for v in obj]
    if isinstance(obj, str) and obj in (INF, NEG_INF):
        return math.inf if obj == INF else -math.inf
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`to_json_safe` ``(obj)``, always with ``allow_nan=False``.

    Parameters
    ----------
    obj : Any
        What to write.
    **kwargs
        Passed to :func:`json.dumps` (``indent``, ``default``...); ``allow_nan`` is not
        accepted.

    Returns
    -------
    str
        Strict JSON text.

    Raises
    ------
    ValueError
        If a non-finite float survives the conversion (e.g. one returned by ``default``).
    """
    return json.dumps(to_json_safe(obj), allow_nan=False, **kwargs)


def loads(text: str, *, keep: Collection[str] = ()) -> Any:
    """Parse JSON written by :func:`dumps` and restore its infinities (:func:`from_json_safe`).

    Files written before this convention (with ``NaN``/``Infinity`` tokens) still parse:
    their NaN reads as a float NaN, their infinities as floats.

    Parameters
    ----------
    text : str
        JSON text.
    keep : collection of str
        Keys whose values stay as read (see :func:`from_json_safe`).

    Returns
    -------
    Any
    """
    return from_json_safe(json.loads(text), keep=keep)
