"""A codec as the wire payload of the plain protocol: quantised or top-k uploads.

Quantisation and top-k change what a client's upload looks like on the wire, not the vector
the pipeline hands on, so they are not update stages: :class:`CodecPayload` is a payload
codec for ``privfed.secure``'s plain protocol (``PlainClientParty(codec=...)``,
``PlainServerParty(codec=...)``), which then sends ``encode``'s bytes instead of float32
values and sums ``decode``'s vectors. It fits the duck-typed ``privfed.secure.PayloadCodec``
protocol::

    encode(vector, round_id, client_id) -> bytes
    decode(payload, dim, round_id) -> numpy.ndarray   # float64, length dim

Only the plain protocol can carry it (``check_compatible`` rejects quantisation and top-k
with masking or HE). :class:`~privfed.compression.feedback.ErrorFeedbackStage` uses the same
object to learn what the server will reconstruct (:meth:`CodecPayload.reconstruct`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privfed.compression.codec import Codec, MalformedPayloadError
from privfed.compression.control import (
    check_control_length,
    pack_control,
    split_control,
    unpack_control,
)

__all__ = ["CodecPayload"]


class CodecPayload:
    """Encode a client's vector with a codec; its control values follow as float32.

    Payload: the codec's payload of the model part (the first ``dim - control_length``
    coordinates) followed by the ``control_length`` control values as little-endian float32
    (:mod:`privfed.compression.control`), so the server's mean has them exactly.

    Parameters
    ----------
    codec : Codec
        Compresses the model part.
    seed : int
        Seed of the clients' private randomness (stochastic rounding): client ``c`` encodes
        round ``r`` with ``numpy.random.SeedSequence((seed, r, c))``.
    control_length : int, default 0
        Number of control values at the end of every vector.

    Raises
    ------
    ValueError
        If ``control_length`` is not an int >= 0.
    """

    def __init__(self, codec: Codec, *, seed: int, control_length: int = 0) -> None:
        self.codec = codec
        self.seed = seed
        self.control_length = check_control_length(control_length)

    def _encode_model(self, model: np.ndarray, round_id: int, client_id: int) -> bytes:
        """The codec's payload of ``model`` with client ``client_id``'s randomness."""
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, round_id, client_id)))
        return self.codec.encode(model, rng, round_id=round_id)

    def encode(self, vector: Any, round_id: int, client_id: int) -> bytes:
        """Return client ``client_id``'s payload carrying ``vector`` (on the client).

        Parameters
        ----------
        vector : array_like
            Flat finite vector: model part, then the control values.
        round_id, client_id : int
            Select the client's randomness; ``round_id`` also random-k's index set.

        Raises
        ------
        ValueError
            If ``control_length`` leaves no model coordinate.
        """
        x = np.asarray(vector, dtype=np.float64).ravel()
        check_control_length(self.control_length, x.size)
        model, control = split_control(x, self.control_length)
        return self._encode_model(model, round_id, client_id) + pack_control(control)

    def decode(self, payload: bytes, dim: int, round_id: int) -> np.ndarray:
        """Return the float64 vector of length ``dim`` that ``payload`` carries (on the server).

        Raises
        ------
        MalformedPayloadError
            (a ``ValueError``) if ``payload`` is not a well-formed payload for ``dim``
            coordinates or carries a NaN/Inf.
        ValueError
            If ``control_length`` leaves no model coordinate of ``dim``.
        """
        check_control_length(self.control_length, dim)
        model_payload, control = unpack_control(payload, self.control_length)
        model = self.codec.decode(model_payload, dim - self.control_length, round_id=round_id)
        x = np.concatenate([model, control])
        if not np.isfinite(x).all():
            raise MalformedPayloadError("decoded vector has NaN/Inf")
        return x

    def sent(self, round_id: int, client_id: int, model: np.ndarray) -> np.ndarray:
        """What the server decodes of client ``client_id``'s model part ``model`` (float64).

        Encodes with the client's randomness of ``round_id``, the same that :meth:`encode`
        uses, so the result equals the model part of ``decode(encode(...))`` exactly.
        """
        payload = self._encode_model(model, round_id, client_id)
        return self.codec.decode(payload, model.size, round_id=round_id)
