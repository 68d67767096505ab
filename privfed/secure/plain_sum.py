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

:class:`PlainSum` is that sum fed one client at a time, so that a caller who produces the
vectors one after another (the in-process engine, as its clients train) never holds more
than the one it adds: the same result and errors as :func:`sum_plain` on all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import AggregationResult
from .errors import InvalidInputError, ThresholdError
from .validation import (
    check_client_id,
    check_round_id,
    check_round_inputs,
    check_weight,
    prepare_float32,
)
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
    running = PlainSum(round_id, clip=clip, out_of_range=out_of_range)
    started = time.perf_counter()
    ids, arrays, wts = check_round_inputs(vectors, weights, clip=clip,
                                          out_of_range=out_of_range, prepare=prepare_float32)
    running.seconds["encode"] += time.perf_counter() - started
    for client in ids:
        running.fold(client, arrays[client], wts[client],
                     finite=_finite_upload(vectors[client], arrays[client]))
    return running.result()


class PlainSum:
    """One plain round's float64 weighted sum, fed a few clients at a time.

    Adding the clients' vectors with :meth:`add` (in increasing client id order: all at
    once, or in groups of ever larger ids), then calling :meth:`result` gives
    :func:`sum_plain`'s result on all of them, bit for bit (the same float64 products added
    in the same order), and raises its errors: an invalid vector (checked as its upload
    is: length, NaN/Inf, beyond ``clip`` with ``out_of_range="error"``) before an invalid
    weight, the first in client order. As :func:`sum_plain` checks every vector before it
    adds any, an error is kept until :meth:`result`, and nothing is added after it. The
    sum holds two vectors of the round's length, however many clients it adds.

    Parameters
    ----------
    round_id : int
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector.

    Attributes
    ----------
    seconds : dict of str to float
        The time spent so far checking (``"encode"``), adding (``"aggregate"``) and
        dividing (``"decode"``).

    Raises
    ------
    InvalidInputError
        ``round_id`` is not an int in ``[0, 2**64)``.
    """

    def __init__(self, round_id: int, *, clip: float | None, out_of_range: str) -> None:
        self.round_id = check_round_id(round_id)
        self.clip = clip
        self.out_of_range = out_of_range
        self.seconds = dict.fromkeys(("encode", "aggregate", "decode"), 0.0)
        self._ids: list[int] = []
        self._included: list[tuple[int, float]] = []
        self._total: np.ndarray | None = None
        self._term: np.ndarray | None = None
        self._dim: int | None = None
        self._last = -1
        self._error: InvalidInputError | None = None
        self._weight_error: InvalidInputError | None = None

    def add(self, vectors: Mapping[int, Any], weights: Mapping[int, float]) -> None:
        """Check each client's flat vector and public weight as the server checks its
        upload, and add ``weight * vector`` (as float32 values) to the sum, in client order.

        The vectors are not kept (nor copied, if float32 and within ``clip``). An invalid
        input is remembered and raised by :meth:`result`.

        Raises
        ------
        InvalidInputError
            ``vectors`` and ``weights`` name different clients.
        """
        if set(vectors) != set(weights):
            raise InvalidInputError(f"vectors of clients {sorted(vectors)} but weights of "
                                    f"{sorted(weights)}")
        for client_id in sorted(vectors):
            self._add(client_id, vectors[client_id], weights[client_id])

    def _add(self, client_id: int, vector: Any, weight: float) -> None:
        """:meth:`add` of one client."""
        if self._error is not None:
            return
        started = time.perf_counter()
        try:
            first = self._last < 0
            client = self._next_client(client_id)
            if first:  # the round's length is the first vector's, as in sum_plain
                self._dim = _flat_length(vector)
            values = prepare_float32(vector, self._dim, clip=self.clip,
                                     out_of_range=self.out_of_range, client_id=client)
        except InvalidInputError as err:
            self._error = err
            return
        checked = self._checked_weight(weight, client)
        self.seconds["encode"] += time.perf_counter() - started
        if checked is not None:
            self.fold(client, values, checked, finite=_finite_upload(vector, values))

    def fold(self, client_id: int, values: np.ndarray, weight: float, *, finite: bool) -> None:
        """Add checked float32 ``values`` times the checked ``weight`` in float64, or, if the
        upload would not be ``finite`` (a wider input beyond float32's range), count
        ``client_id`` as dropped."""
        started = time.perf_counter()
        if self._total is None:
            self._total, self._term = np.zeros(values.size), np.empty(values.size)
        self._ids.append(client_id)
        if finite:
            np.multiply(values, weight, out=self._term, dtype=np.float64)
            self._total += self._term
            self._included.append((client_id, weight))
        self.seconds["aggregate"] += time.perf_counter() - started

    def result(self) -> AggregationResult:
        """The weighted mean of the accepted vectors; see :func:`sum_plain`.

        Raises
        ------
        InvalidInputError
            The first invalid vector, else the first invalid weight, in client order; no
            client added.
        ThresholdError
            No vector was accepted.
        """
        if self._error is not None or self._weight_error is not None:
            raise self._error or self._weight_error
        if not self._ids:
            raise InvalidInputError("vectors is empty: need at least one client")
        included = tuple(c for c, _ in self._included)
        kept = set(included)
        dropped = tuple(c for c in self._ids if c not in kept)
        for client in dropped:
            logger.warning("round %d, stage upload: client %d's message rejected: client %d: "
                           "vector has NaN/Inf", self.round_id, client, client)
        if not included:
            raise ThresholdError(f"round {self.round_id}: no client message to aggregate")
        started = time.perf_counter()
        included_weight = sum(w for _, w in self._included)
        mean = self._total / included_weight
        dim = self._total.size
        self.seconds["decode"] += time.perf_counter() - started
        return AggregationResult(
            mean=mean,
            total_weight=included_weight,
            included=included,
            dropped=dropped,
            bytes_up=dict.fromkeys(self._ids, upload_size(dim)),
            bytes_down=dict.fromkeys(self._ids, 0),
            seconds=dict(self.seconds),
        )

    def _next_client(self, client_id: Any) -> int:
        """``client_id`` checked, and after every client added before."""
        client = check_client_id(client_id)
        if client <= self._last:
            raise InvalidInputError(f"client {client} added after client {self._last}: "
                                    "add the clients in increasing id order, each once")
        self._last = client
        return client

    def _checked_weight(self, weight: Any, client: int) -> float | None:
        """``weight`` checked; None (the first error kept) if invalid or after one."""
        try:
            checked = check_weight(weight, client)
        except InvalidInputError as err:
            self._weight_error = self._weight_error or err
            return None
        return None if self._weight_error is not None else checked


def _flat_length(vector: Any) -> int | None:
    """The length of a flat ``vector``; None if it is not flat (then rejected)."""
    array = np.asarray(vector)
    return int(array.size) if array.ndim == 1 else None


def _finite_upload(vector: Any, values: np.ndarray) -> bool:
    """Whether the server accepts ``values`` as finite: a float32 input is finite once
    checked; a wider one may exceed float32's range (the server rejects the upload)."""
    return np.asarray(vector).dtype == np.float32 or bool(np.isfinite(values).all())
