"""Compressed uploads in the clear: clients encode with a codec, the server decodes and sums.

The parties exchange only bytes, framed like the plain baseline's messages
(:func:`privfed.secure.wire.pack`, kind ``"compressed"``, stage ``"upload"``), so the bytes counted
in the History are exactly what is serialised. Like the plain baseline it offers no
confidentiality: the server decodes each client's (compressed) update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privfed.compression.codec import Codec
from privfed.compression.feedback import ErrorFeedback
from privfed.secure.base import DecodedAggregate
from privfed.secure.errors import MessageRejectedError
from privfed.secure.identity import ClientIdentity
from privfed.secure.oneshot import OneShotAggregator
from privfed.secure.plain import PlainServer, decode_plain
from privfed.secure.validation import prepare_upload
from privfed.secure.wire import pack

__all__ = ["CompressedAggregator", "CompressingClient", "CompressedServer"]

KIND = "compressed"


class CompressingClient:
    """Client side: add the error-feedback residual, encode, frame.

    Parameters
    ----------
    identity : ClientIdentity
    codec : Codec
    feedback : ErrorFeedback or None
        Residual memory of the clients (None: no error feedback).
    seed : int
        Seed of the client's private randomness, combined with the round and client id.
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
    """

    def __init__(
        self,
        identity: ClientIdentity,
        codec: Codec,
        *,
        feedback: ErrorFeedback | None,
        seed: int,
        clip: float | None = None,
        out_of_range: str = "error",
    ) -> None:
        self.identity = identity
        self.codec = codec
        self.feedback = feedback
        self.seed = seed
        self.clip = clip
        self.out_of_range = out_of_range

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """Return the upload message carrying the compressed ``vector``."""
        cid = self.identity.client_id
        x, _ = prepare_upload(round_id, vector, weight, total_weight, clip=self.clip,
                              out_of_range=self.out_of_range, client_id=cid)
        if self.feedback is not None:
            x = self.feedback.compensate(cid, x)
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, round_id, cid)))
        payload = self.codec.encode(x, rng, round_id=round_id)
        if self.feedback is not None:
            self.feedback.remember(cid, x, self.codec.decode(payload, x.size, round_id=round_id))
        return pack(KIND, "upload", round_id, cid, payload)


class CompressedServer(PlainServer):
    """Server side: decode each upload with the codec and add it, weighted, to a float64 sum
    (the plain server's sum and aggregate message)."""

    kind = KIND

    def __init__(self, *args: Any, codec: Codec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.codec = codec

    def _parse(self, sender: int, payload: bytes) -> tuple[int, np.ndarray]:
        x = self.codec.decode(payload, self.dim, round_id=self.round_id)
        if not np.isfinite(x).all():
            raise MessageRejectedError(f"client {sender}: decoded vector has NaN/Inf")
        return sender, x


class CompressedAggregator(OneShotAggregator):
    """Plain aggregation of compressed updates (quantised, top-k or random-k).

    Same interface and result as :class:`privfed.secure.PlainAggregator`; ``bytes_up`` are
    the sizes of the compressed messages. Client time (error feedback, encoding) counts as
    ``"encode"``, server decoding and summation as ``"aggregate"``.

    Parameters
    ----------
    codec : Codec
    error_feedback : bool, default False
        Clients keep what compression dropped and add it to their next update.
    seed : int, default 0
        Seed of the clients' stochastic rounding (with round and client id).
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
    """

    kind = KIND

    def __init__(
        self,
        codec: Codec,
        *,
        error_feedback: bool = False,
        seed: int = 0,
        clip: float | None = None,
        out_of_range: str = "error",
    ) -> None:
        super().__init__(clip=clip, out_of_range=out_of_range)
        self.codec = codec
        self.feedback = ErrorFeedback() if error_feedback else None
        self.seed = seed

    def _client(self, client_id: int) -> CompressingClient:
        return CompressingClient(
            self.identity(client_id), self.codec, feedback=self.feedback, seed=self.seed,
            clip=self.clip, out_of_range=self.out_of_range,
        )

    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> CompressedServer:
        return CompressedServer(round_id, weights, self.registry, dim, codec=self.codec)

    def _decode(self, message: bytes, round_id: int) -> DecodedAggregate:
        return decode_plain(message, round_id, KIND)
