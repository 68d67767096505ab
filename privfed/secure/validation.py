"""Checks of local inputs: client ids, round ids, weights and update vectors."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
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
    arr = np.asarray(vector)
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"vector{who} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInputError(f"vector{who} must be flat and non-empty, got shape {arr.shape}")
    if dim is not None and arr.size != dim:
        raise InvalidInputError(f"vector{who} has length {arr.size}, expected {dim}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise InvalidInputError(f"vector{who} has NaN/Inf (first at index {bad}: {out[bad]})")
    if clip is not None:
        peak = float(np.max(np.abs(out)))
        if peak > clip:
            if out_of_range == "error":
                raise InvalidInputError(
                    f"vector{who} has |value| {peak:g} > clip={clip:g} "
                    "(out_of_range='error'; use out_of_range='clip' to clip instead)"
                )
            np.clip(out, -clip, clip, out=out)
    return out


def check_round_inputs(
    vectors: Mapping[int, Any],
    weights: Mapping[int, Any],
    *,
    clip: float | None,
    out_of_range: str,
) -> tuple[list[int], dict[int, np.ndarray], dict[int, float]]:
    """Validate the inputs of one in-process round.

    Returns
    -------
    ids : list of int
        Sorted client ids.
    arrays : dict
        Validated float64 vectors.
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
        c: prepare_vector(vectors[c], dim, clip=clip, out_of_range=out_of_range, client_id=c)
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
