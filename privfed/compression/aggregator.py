"""Compressed uploads in the clear: clients encode with a codec, the server decodes and sums.

The parties exchange only bytes, framed like the plain baseline's messages
(:func:`privfed.secure.wire.pack`, kind ``"compressed"``, stage ``"upload"``), so the bytes counted
in the History are exactly what is serialised. An upload's payload is the codec's payload of
the model part followed by the ``control_length`` control values as float32
(:mod:`privfed.compression.control`). Like the plain baseline it offers no confidentiality:
the server decodes each client's (compressed) update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privfed.compression.codec import Codec
from privfed.compression.control import (
    check_control_length,
    pack_control,
    split_control,
    unpack_control,
)
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

    The codec and error feedback see only the model part of the vector; its last
    ``control_length`` values are appended to the codec's payload as float32.

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
    control_length : int, default 0
        Number of control values at the end of the vector, sent exactly.
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
        control_length: int = 0,
    ) -> None:
        self.identity = identity
        self.codec = codec
        self.feedback = feedback
        self.seed = seed
        self.clip = clip
        self.out_of_range = out_of_range
        self.control_length = check_control_length(control_length)

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """Return the upload message carrying the compressed ``vector``."""
        cid = self.identity.client_id
        x, _ = prepare_upload(round_id, vector, weight, total_weight, clip=self.clip,
                              out_of_range=self.out_of_range, client_id=cid)
        check_control_length(self.control_length, x.size)
        model, control = split_control(x, self.control_length)
        payload = self._encode_model(round_id, cid, model) + pack_control(control)
        return pack(KIND, "upload", round_id, cid, payload)

    def _encode_model(self, round_id: int, cid: int, model: np.ndarray) -> bytes:
        """The codec's payload of the model part, with error feedback when enabled."""
        if self.feedback is not None:
            model = self.feedback.compensate(cid, model)
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, round_id, cid)))
        payload = self.codec.encode(model, rng, round_id=round_id)
        if self.feedback is not None:
            sent = self.codec.decode(payload, model.size, round_id=round_id)
            self.feedback.remember(cid, model, sent)
        return payload


class CompressedServer(PlainServer):
    """Server side: decode each upload with the codec and add it, weighted, to a float64 sum
    (the plain server's sum and aggregate message).

    The codec decodes the model part; the last ``control_length`` coordinates are the
    float32 control values that follow its payload.
    """

    kind = KIND

    def __init__(self, *args: Any, codec: Codec, control_length: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.codec = codec
        self.control_length = check_control_length(control_length, self.dim)

    def _parse(self, sender: int, payload: bytes) -> tuple[int, np.ndarray]:
        model_payload, control = unpack_control(payload, self.control_length)
        model = self.codec.decode(model_payload, self.dim - self.control_length,
                                  round_id=self.round_id)
        x = np.concatenate([model, control])
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
    control_length : int, default 0
        The last ``control_length`` coordinates of every vector are a mechanism's control
        values: sent as float32, never compressed nor touched by error feedback, so the mean
        has them exactly. The codec compresses the other coordinates.

    Raises
    ------
    privfed.secure.InvalidInputError
        (a ``ValueError``) if ``control_length`` is not an int >= 0; :meth:`aggregate` raises
        it if ``control_length`` is not less than the vectors' length.
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
        control_length: int = 0,
    ) -> None:
        super().__init__(clip=clip, out_of_range=out_of_range)
        self.codec = codec
        self.feedback = ErrorFeedback() if error_feedback else None
        self.seed = seed
        self.control_length = check_control_length(control_length)

    def _client(self, client_id: int) -> CompressingClient:
        return CompressingClient(
            self.identity(client_id), self.codec, feedback=self.feedback, seed=self.seed,
            clip=self.clip, out_of_range=self.out_of_range, control_length=self.control_length,
        )

    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> CompressedServer:
        return CompressedServer(round_id, weights, self.registry, dim, codec=self.codec,
                                control_length=self.control_length)

    def _decode(self, message: bytes, round_id: int) -> DecodedAggregate:
        return decode_plain(message, round_id, KIND)
