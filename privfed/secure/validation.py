"""Checks of local inputs: client ids, round ids, weights and update vectors."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .wire import MAX_CLIENT_ID

OUT_OF_RANGE_MODES = ("clip", "error")


def check_client_id(client_id: Any) -> int:
    """Return ``client_id`` if it is an int in ``[0, 2**32 - 2]``, else raise InvalidInputError."""
    if isinstance(client_id, bool) or not isinstance(client_id, int | np.integer):
        raise InvalidInputError(f"client id must be an int, got {client_id!r}")
    if not 0 <= int(client_id) <= MAX_CLIENT_ID:
        raise InvalidInputError(f"client id {client_id} outside [0, {MAX_CLIENT_ID}]")
    return int(client_id)


def check_round_id(round_id: Any) -> int:
    """Return ``round_id`` if it is an int in ``[0, 2**64)``, else raise InvalidInputError."""
    if isinstance(round_id, bool) or not isinstance(round_id, int | np.integer):
        raise InvalidInputError(f"round_id must be an int, got {round_id!r}")
    if not 0 <= int(round_id) < 2**64:
        raise InvalidInputError(f"round_id {round_id} outside [0, 2**64)")
    return int(round_id)


def check_weight(weight: Any, client_id: int | None = None) -> float:
    """Return ``weight`` as a float if it is finite and > 0, else raise InvalidInputError."""
    who = "" if client_id is None else f" of client {client_id}"
    return _positive_finite(weight, f"weight{who}")


def check_out_of_range(mode: str) -> str:
    """Validate the ``out_of_range`` option."""
    if mode not in OUT_OF_RANGE_MODES:
        raise InvalidInputError(f"out_of_range={mode!r}; allowed values: {OUT_OF_RANGE_MODES}")
    return mode


def check_clip(clip: float | None, *, required: bool = False) -> float | None:
    """Validate the ``clip`` option (max absolute value per coordinate)."""
    if clip is None:
        if required:
            raise InvalidInputError("clip is required: a finite float > 0")
        return None
    return _positive_finite(clip, "clip")


def _positive_finite(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number > 0, else InvalidInputError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidInputError(f"{name} must be finite and > 0, got {value!r}")
    return number


def prepare_upload(
    round_id: int,
    vector: Any,
    weight: float,
    total_weight: float,
    *,
    clip: float | None,
    out_of_range: str,
    client_id: int,
) -> tuple[np.ndarray, float]:
    """The checks every client's ``encode`` starts with.

    Returns
    -------
    (vector, share) : (numpy.ndarray, float)
        The validated float64 copy of ``vector`` (see :func:`prepare_vector`) and the
        client's share ``weight / total_weight`` of the weighted sum.
    """
    check_round_id(round_id)
    share = check_weight(weight) / check_weight(total_weight)
    x = prepare_vector(vector, None, clip=clip, out_of_range=out_of_range, client_id=client_id)
    return x, share


def prepare_vector(
    vector: Any,
    dim: int | None,
    *,
    clip: float | None = None,
    out_of_range: str = "error",
    client_id: int | None = None,
) -> np.ndarray:
    """Validate an update vector and return it as a float64 copy.

    Parameters
    ----------
    vector : array_like
        Flat numeric vector (numpy array, torch CPU tensor, list).
    dim : int or None
        Required length; ``None`` accepts any length >= 1.
    clip : float or None
        Maximum absolute value per coordinate; ``None`` disables the range check.
    out_of_range : {"clip", "error"}
        What to do with coordinates outside ``[-clip, clip]``: clip them, or raise.
    client_id : int or None
        Used in error messages.

    Raises
    ------
    InvalidInputError
        Naming the field: not 1-D, wrong length, non-numeric, NaN/Inf, or out of range
        with ``out_of_range="error"``.
    """
    who = "" if client_id is None else f" of client {client_id}"
    out = _flat_numeric(vector, dim, who).astype(np.float64)
    if _needs_clipping(out, clip, out_of_range, who):
        np.clip(out, -clip, clip, out=out)
    return out


def prepare_float32(
    vector: Any,
    dim: int | None,
    *,
    clip: float | None = None,
    out_of_range: str = "error",
    client_id: int | None = None,
) -> np.ndarray:
    """The float32 values a plain client's upload carries for ``vector``:
    ``prepare_vector(...).astype(np.float32)``, with the same checks and errors, without a
    float64 copy; a float32 vector that needs no clipping is returned as it is.

    Parameters and raised errors are :func:`prepare_vector`'s. The result may hold
    infinities where a finite float64 input exceeds float32's range (as the upload would).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(dim,)``.
    """
    who = "" if client_id is None else f" of client {client_id}"
    arr = _flat_numeric(vector, dim, who)
    if arr.dtype != np.float32:
        return prepare_vector(arr, dim, clip=clip, out_of_range=out_of_range,
                              client_id=client_id).astype(np.float32)
    if _needs_clipping(arr, clip, out_of_range, who):
        # float32(clip) is what clipping in float64 and rounding to float32 gives
        bound = np.float32(clip)
        arr = np.clip(arr, -bound, bound)
    return arr


def _flat_numeric(vector: Any, dim: int | None, who: str) -> np.ndarray:
    """``vector`` as a flat numeric array of length ``dim`` (not copied where it is one)."""
    arr = np.asarray(vector)
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"vector{who} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInputError(f"vector{who} must be flat and non-empty, got shape {arr.shape}")
    if dim is not None and arr.size != dim:
        raise InvalidInputError(f"vector{who} has length {arr.size}, expected {dim}")
    return arr


def _needs_clipping(arr: np.ndarray, clip: float | None, out_of_range: str, who: str) -> bool:
    """Whether the float array ``arr`` has values beyond ``clip`` to clip.

    Raises
    ------
    InvalidInputError
        NaN/Inf, or values beyond ``clip`` with ``out_of_range="error"``.
    """
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InvalidInputError(
            f"vector{who} has NaN/Inf (first at index {bad}: {float(arr[bad])})")
    if clip is None:
        return False
    peak = float(np.max(np.abs(arr)))
    if peak > clip and out_of_range == "error":
        raise InvalidInputError(
            f"vector{who} has |value| {peak:g} > clip={clip:g} "
            "(out_of_range='error'; use out_of_range='clip' to clip instead)"
        )
    return peak > clip


def check_round_inputs(
    vectors: Mapping[int, Any],
    weights: Mapping[int, Any],
    *,
    clip: float | None,
    out_of_range: str,
    prepare: Callable[..., np.ndarray] = prepare_vector,
) -> tuple[list[int], dict[int, np.ndarray], dict[int, float]]:
    """Validate the inputs of one in-process round.

    ``prepare`` validates each vector (:func:`prepare_vector`, or :func:`prepare_float32`
    where the float32 values are wanted), in client order, before any weight is checked.

    Returns
    -------
    ids : list of int
        Sorted client ids.
    arrays : dict
        Validated vectors (float64 from :func:`prepare_vector`).
    weights : dict
        Validated weights.

    Raises
    ------
    InvalidInputError
        If ids differ between ``vectors`` and ``weights``, or any vector/weight is invalid.
    """
    if set(vectors) != set(weights):
        raise InvalidInputError(
            f"vectors and weights must have the same client ids; only in vectors: "
            f"{sorted(set(vectors) - set(weights))}, only in weights: "
            f"{sorted(set(weights) - set(vectors))}"
        )
    if not vectors:
        raise InvalidInputError("vectors is empty: need at least one client")
    ids = sorted(check_client_id(c) for c in vectors)
    first = np.asarray(vectors[ids[0]])
    dim = int(first.size) if first.ndim == 1 else None
    arrays = {
        c: prepare(vectors[c], dim, clip=clip, out_of_range=out_of_range, client_id=c)
        for c in ids
    }
    return ids, arrays, {c: check_weight(weights[c], c) for c in ids}


def check_dropouts(
    dropouts: Mapping[str, Collection[int]] | None,
    stages: tuple[str, ...],
    ids: Collection[int],
) -> dict[str, frozenset[int]]:
    """Validate a ``stage -> dropped client ids`` mapping against the allowed stages."""
    if dropouts is None:
        return {}
    out = {}
    for stage, dropped in dropouts.items():
        if stage not in stages:
            raise InvalidInputError(f"dropouts stage {stage!r}; allowed stages: {stages}")
        unknown = set(dropped) - set(ids)
        if unknown:
            raise InvalidInputError(f"dropouts[{stage!r}] names unknown clients {sorted(unknown)}")
        out[stage] = frozenset(dropped)
    return out
