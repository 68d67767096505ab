"""Unprotected baseline: clients send float32 vectors in the clear, the server averages them.

No confidentiality and no integrity (messages are framed, not signed): the cost and accuracy
reference for the protecting aggregators. In a deployment, run it over an authenticated
transport such as TLS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DecodedAggregate
from .errors import MessageRejectedError
from .identity import ClientIdentity
from .oneshot import OneShotAggregator, OneShotServer, open_aggregate
from .validation import prepare_upload
from .wire import pack

KIND = "none"


class PlainClient:
    """Client of the plain protocol: sends its float32 vector in the clear, unsigned.

    Parameters
    ----------
    identity : ClientIdentity
        Identity of the client (only its id is used: plain messages are not signed).
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates or raise.
    """

    def __init__(
        self, identity: ClientIdentity, *, clip: float | None = None, out_of_range: str = "error"
    ) -> None:
        self.identity = identity
        self.clip = clip
        self.out_of_range = out_of_range

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """Return the upload message carrying ``vector`` as float32.

        ``weight`` and ``total_weight`` are public and applied by the server.
        """
        x, _ = prepare_upload(round_id, vector, weight, total_weight, clip=self.clip,
                              out_of_range=self.out_of_range, client_id=self.identity.client_id)
        payload = x.astype("<f4").tobytes()
        return pack(KIND, "upload", round_id, self.identity.client_id, payload)


class PlainServer(OneShotServer):
    """Server of the plain protocol: computes the weighted sum in float64."""

    kind = KIND
    signed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sum = np.zeros(self.dim, dtype=np.float64)

    def _parse(self, sender: int, payload: bytes) -> tuple[int, np.ndarray]:
        if len(payload) != 4 * self.dim:
            raise MessageRejectedError(
                f"client {sender}: vector of {len(payload) // 4} float32, expected {self.dim}"
            )
        x = np.frombuffer(payload, dtype="<f4")
        if not np.isfinite(x).all():
            raise MessageRejectedError(f"client {sender}: vector has NaN/Inf")
        return sender, x

    def _add(self, parsed: tuple[int, np.ndarray]) -> None:
        sender, x = parsed
        self._sum += self.weights[sender] * x.astype(np.float64)

    def _aggregate_fields(self) -> list[bytes]:
        return [self._sum.astype("<f8").tobytes()]


def decode_plain(message: bytes, round_id: int, kind: str = KIND) -> DecodedAggregate:
    """Decode a plain aggregate message (a float64 weighted sum) into the weighted mean.

    ``kind`` is the aggregator kind in the message header (plain-text sums also come from
    the compressed uploads of :mod:`privfed.compression`).
    """
    included, w_incl, _, fields = open_aggregate(message, kind, round_id)
    if len(fields) != 1:
        raise MessageRejectedError("plain aggregate must carry exactly one vector")
    mean = np.frombuffer(fields[0], dtype="<f8") / w_incl
    return DecodedAggregate(mean, w_incl, included)


class PlainAggregator(OneShotAggregator):
    """No protection: the server sees every client's vector (cost and accuracy baseline).

    Parameters
    ----------
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector.
    """

    kind = KIND

    def _client(self, client_id: int) -> PlainClient:
        return PlainClient(self.identity(client_id), clip=self.clip, out_of_range=self.out_of_range)

    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> PlainServer:
        return PlainServer(round_id, weights, self.registry, dim)

    def _decode(self, message: bytes, round_id: int) -> DecodedAggregate:
        return decode_plain(message, round_id)
