"""Unprotected baseline: clients send their vectors in the clear, the server averages them.

No confidentiality and no integrity (messages are framed, not signed): the cost and accuracy
reference for the protecting aggregators. In a deployment, run it over an authenticated
transport such as TLS. A vector travels as float32, or as the payload of a
:class:`PayloadCodec` (e.g. a compressing one), which the server decodes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

import numpy as np

from .base import AggregationResult, DecodedAggregate, RoundMeter, ServerHook
from .errors import MessageRejectedError
from .identity import ClientIdentity, IdentityRegistry
from .oneshot import OneShotAggregator, OneShotServerParty, collect_uploads, open_aggregate
from .plain_sum import sum_plain
from .transport import Transport
from .validation import check_clip, prepare_upload
from .wire import pack

KIND = "none"
RANGE_SLACK = 2.0**-20
"""Relative head-room of the server's range check over the clip: a client's float32 rounding
(2**-24) and a codec's float64 reconstruction stay within it."""


class PayloadCodec(Protocol):
    """Encoding of a plain upload's vector into its payload (e.g. a lossy compression).

    One object serves every client and the server.
    """

    def encode(self, vector: np.ndarray, round_id: int, client_id: int) -> bytes:
        """The payload carrying ``vector`` (a finite float64 vector) of ``client_id``."""
        ...

    def decode(self, payload: bytes, dim: int, round_id: int) -> np.ndarray:
        """The float64 vector of length ``dim`` that ``payload`` carries.

        Raises
        ------
        MessageRejectedError
            ``payload`` is not a valid payload of ``dim`` values.
        """
        ...


class PlainClientParty:
    """Client of the plain protocol: sends its vector in the clear, unsigned.

    Parameters
    ----------
    identity : ClientIdentity
        Identity of the client (only its id is used: plain messages are not signed).
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates or raise.
    codec : PayloadCodec or None
        Encodes the vector (``None``: float32).
    """

    kind = KIND

    def __init__(
        self,
        identity: ClientIdentity,
        *,
        clip: float | None = None,
        out_of_range: str = "error",
        codec: PayloadCodec | None = None,
    ) -> None:
        self.identity = identity
        self.clip = clip
        self.out_of_range = out_of_range
        self.codec = codec

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """Return the upload message carrying ``vector`` (float32, or the codec's payload).

        ``weight`` and ``total_weight`` are public and applied by the server.
        """
        client_id = self.identity.client_id
        x, _ = prepare_upload(round_id, vector, weight, total_weight, clip=self.clip,
                              out_of_range=self.out_of_range, client_id=client_id)
        if self.codec is None:
            payload = x.astype("<f4").tobytes()
        else:
            payload = self.codec.encode(x, round_id, client_id)
        return pack(KIND, "upload", round_id, client_id, payload)


class PlainServerParty(OneShotServerParty):
    """Server of the plain protocol: computes the weighted sum in float64.

    Parameters
    ----------
    round_id, weights, registry, dim
        See :class:`~privfed.secure.oneshot.OneShotServerParty`.
    codec : PayloadCodec or None
        Decodes the uploads' payloads (``None``: float32).
    clip : float or None
        The clients' clip (maximum absolute value per coordinate): an upload carrying a
        value beyond ``clip * (1 + RANGE_SLACK)`` is rejected (``None``: finite values only).
    """

    kind = KIND
    signed = False

    def __init__(
        self,
        round_id: int,
        weights: Mapping[int, float],
        registry: IdentityRegistry,
        dim: int,
        *,
        codec: PayloadCodec | None = None,
        clip: float | None = None,
    ) -> None:
        super().__init__(round_id, weights, registry, dim)
        self.codec = codec
        self.clip = check_clip(clip)
        self._sum = np.zeros(self.dim, dtype=np.float64)

    def _parse(self, sender: int, payload: bytes) -> tuple[int, np.ndarray]:
        if self.codec is not None:
            try:
                x = np.asarray(self.codec.decode(payload, self.dim, self.round_id), np.float64)
            except MessageRejectedError:
                raise
            except ValueError as err:  # the codec's own error for a malformed payload
                raise MessageRejectedError(f"client {sender}: {err}") from None
            if x.shape != (self.dim,):
                raise MessageRejectedError(
                    f"client {sender}: the codec decoded shape {x.shape}, expected ({self.dim},)"
                )
        elif len(payload) != 4 * self.dim:
            raise MessageRejectedError(
                f"client {sender}: vector of {len(payload) // 4} float32, expected {self.dim}"
            )
        else:
            x = np.frombuffer(payload, dtype="<f4")
        if not np.isfinite(x).all():
            raise MessageRejectedError(f"client {sender}: vector has NaN/Inf")
        if self.clip is not None:
            peak = int(np.argmax(np.abs(x)))
            if abs(x[peak]) > self.clip * (1 + RANGE_SLACK):
                raise MessageRejectedError(
                    f"client {sender}: value {x[peak]:.6g} at coordinate {peak} is beyond the "
                    f"clip {self.clip:g}"
                )
        return sender, x

    def _add(self, parsed: tuple[int, np.ndarray]) -> None:
        sender, x = parsed
        self._sum += self.weights[sender] * x.astype(np.float64)

    def _aggregate_fields(self) -> list[bytes]:
        return [self._sum.astype("<f8").tobytes()]


def decode_plain(message: bytes, round_id: int) -> DecodedAggregate:
    """Decode a plain aggregate message (a float64 weighted sum) into the weighted mean."""
    included, w_incl, _, fields = open_aggregate(message, KIND, round_id)
    if len(fields) != 1:
        raise MessageRejectedError("plain aggregate must carry exactly one vector")
    mean = np.frombuffer(fields[0], dtype="<f8") / w_incl
    return DecodedAggregate(mean, w_incl, included)


def run_plain(
    transport: Transport, server: PlainServerParty, meter: RoundMeter
) -> DecodedAggregate:
    """Driver of the plain protocol: request the uploads, sum them, decode the sum here.

    Parameters
    ----------
    transport : Transport
        Reaches the clients; each answers stage ``"upload"`` (a
        :class:`~privfed.secure.RoundRequest`) with its upload, e.g. through a
        :class:`~privfed.secure.OneShotEndpoint`.
    server : PlainServerParty
        The round's server party; its ``weights`` name the participants.
    meter : RoundMeter
        Counts the bytes and the server's time.

    Returns
    -------
    DecodedAggregate
        The weighted mean of the accepted uploads.

    Raises
    ------
    ThresholdError
        No upload was accepted.
    """
    aggregate = collect_uploads(transport, server, meter)
    with meter.timed("decode"):
        return decode_plain(aggregate, server.round_id)


class PlainAggregator(OneShotAggregator[PlainServerParty]):
    """No protection: the server sees every client's vector (cost and accuracy baseline).

    A round whose messages nobody needs (no codec, no ``on_server_message``, no dropouts,
    ``wire`` off) is summed without building them (:func:`~privfed.secure.plain_sum.sum_plain`:
    the same mean, rejections, errors and byte counts); otherwise the client and server
    parties exchange their messages over a :class:`~privfed.secure.LocalTransport`, so that
    an observer of the server receives every upload byte for byte.

    Parameters
    ----------
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector.
    codec : PayloadCodec or None
        Encodes the uploads (``None``: float32); ``bytes_up`` counts its payloads.
    wire : bool, default False
        Always build and exchange the messages (e.g. to check the byte counts).
    """

    kind = KIND

    def __init__(
        self,
        *,
        clip: float | None = None,
        out_of_range: str = "error",
        codec: PayloadCodec | None = None,
        wire: bool = False,
    ) -> None:
        super().__init__(clip=clip, out_of_range=out_of_range)
        self.codec = codec
        self.wire = wire

    def aggregate(
        self,
        round_id: int,
        vectors: Mapping[int, Any],
        weights: Mapping[int, float],
        *,
        on_server_message: ServerHook | None = None,
        dropouts: Mapping[str, Collection[int]] | None = None,
    ) -> AggregationResult:
        """See :meth:`~privfed.secure.SecureAggregator.aggregate`; without messages where none
        is needed."""
        if self.wire or self.codec is not None or on_server_message is not None or dropouts:
            return super().aggregate(round_id, vectors, weights,
                                     on_server_message=on_server_message, dropouts=dropouts)
        return sum_plain(round_id, vectors, weights, clip=self.clip,
                         out_of_range=self.out_of_range)

    def _client(self, client_id: int) -> PlainClientParty:
        return PlainClientParty(self.identity(client_id), clip=self.clip,
                           out_of_range=self.out_of_range, codec=self.codec)

    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> PlainServerParty:
        return PlainServerParty(round_id, weights, self.registry, dim, codec=self.codec,
                                clip=self.clip)

    def _drive(
        self, transport: Transport, server: PlainServerParty, meter: RoundMeter
    ) -> DecodedAggregate:
        return run_plain(transport, server, meter)
