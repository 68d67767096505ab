"""The plain protocol's in-process round without its messages.

Where nothing is protected, no observer reads the server's inbox and no payload codec
changes what is sent, an in-process plain round need not build the messages to add them
up: :func:`sum_plain` adds each client's vector, as the float32 values its upload would
carry, straight into the server's float64 weighted sum, and counts the bytes the uploads
would take (header and 4 bytes per value) without making them. Its result, errors and
rejections are those of the plain protocol run over the
:class:`~privfed.secure.LocalTransport` (:class:`~privfed.secure.PlainAggregator` with
``wire=True``): the same checks and clipping of each vector, the same float64 sum in the
same client order, the same bytes counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import AggregationResult
from .errors import ThresholdError
from .validation import check_round_id, check_round_inputs, prepare_float32
from .wire import HEADER_SIZE

logger = logging.getLogger(__name__)


def upload_size(dim: int) -> int:
    """Bytes of a plain upload of ``dim`` float32 values: the header and the values."""
    return HEADER_SIZE + 4 * dim


def sum_plain(
    round_id: int,
    vectors: Mapping[int, Any],
    weights: Mapping[int, float],
    *,
    clip: float | None,
    out_of_range: str,
) -> AggregationResult:
    """One plain round in this process, without building its messages.

    Parameters
    ----------
    round_id : int
    vectors : Mapping[int, array_like]
        Client id -> flat vector; all of the same length (float32 ones are not copied
        unless clipped).
    weights : Mapping[int, float]
        Client id -> public weight > 0.
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector.

    Returns
    -------
    AggregationResult
        The weighted mean (float64) of the accepted vectors; ``bytes_up`` the size of each
        client's upload, ``bytes_down`` zero (the round request rides with the broadcast);
        ``seconds`` the checks as ``"encode"``, the sum as ``"aggregate"``, the division as
        ``"decode"``.

    Raises
    ------
    InvalidInputError
        Bad ids, weights or vectors (NaN/Inf; beyond ``clip`` with
        ``out_of_range="error"``), as the plain protocol raises them.
    ThresholdError
        No vector was accepted.
    """
    round_id = check_round_id(round_id)
    started = time.perf_counter()
    ids, arrays, wts = check_round_inputs(vectors, weights, clip=clip,
                                          out_of_range=out_of_range, prepare=prepare_float32)
    checked = time.perf_counter()
    dim = arrays[ids[0]].size
    total, term = np.zeros(dim), np.empty(dim)
    included = []
    for client in ids:
        values = arrays[client]
        if not _finite_upload(vectors[client], values):
            logger.warning("round %d, stage upload: client %d's message rejected: client %d: "
                           "vector has NaN/Inf", round_id, client, client)
            continue
        np.multiply(values, wts[client], out=term, dtype=np.float64)
        total += term
        included.append(client)
    if not included:
        raise ThresholdError(f"round {round_id}: no client message to aggregate")
    summed = time.perf_counter()
    included_weight = sum(wts[c] for c in included)
    mean = total / included_weight
    kept = set(included)
    return AggregationResult(
        mean=mean,
        total_weight=included_weight,
        included=tuple(included),
        dropped=tuple(c for c in ids if c not in kept),
        bytes_up=dict.fromkeys(ids, upload_size(dim)),
        bytes_down=dict.fromkeys(ids, 0),
        seconds={"encode": checked - started, "aggregate": summed - checked,
                 "decode": time.perf_counter() - summed},
    )


def _finite_upload(vector: Any, values: np.ndarray) -> bool:
    """Whether the server accepts ``values`` as finite: a float32 input is finite once
    checked; a wider one may exceed float32's range (the server rejects the upload)."""
    return np.asarray(vector).dtype == np.float32 or bool(np.isfinite(values).all())
