"""The interface of an update codec: a lossy, compact byte encoding of a flat vector."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Codec", "MalformedPayloadError", "check_length"]


class MalformedPayloadError(ValueError):
    """A payload is not a well-formed encoding (wrong length, bad index, non-finite value).

    Raised on the server side by :meth:`Codec.decode` and by
    :meth:`~privfed.compression.payload.CodecPayload.decode`. It is a ``ValueError`` so that
    :mod:`privfed.compression` does not import :mod:`privfed.secure`; the plain server treats
    it as a rejected message (``privfed.secure.MessageRejectedError``): the sender's upload
    is dropped, the round goes on.
    """


class Codec(ABC):
    """Encodes a client's flat update into bytes and decodes it on the server.

    A codec is stateless: the same object serves every client and the server. Error
    feedback (memory of what was not sent) is kept outside, per client, by
    :class:`~privfed.compression.feedback.ErrorFeedbackStage`.
    """

    name: str
    """Short name of the method, as in ``compression.method``."""

    @abstractmethod
    def encode(
        self, vector: np.ndarray, rng: np.random.Generator, *, round_id: int = 0
    ) -> bytes:
        """Return the payload that carries ``vector``.

        Parameters
        ----------
        vector : np.ndarray
            Flat finite vector (cast to float32).
        rng : np.random.Generator
            The client's private randomness (stochastic rounding).
        round_id : int, default 0
            Round number; codecs with randomness shared by all parties (random-k) derive it
            from the round so the server can regenerate it.

        Returns
        -------
        bytes
        """

    @abstractmethod
    def decode(self, data: bytes, dim: int, *, round_id: int = 0) -> np.ndarray:
        """Return the float64 vector of length ``dim`` that ``data`` carries.

        Raises
        ------
        MalformedPayloadError
            If ``data`` is not a well-formed payload for ``dim`` coordinates.
        """

    @abstractmethod
    def payload_size(self, dim: int) -> int:
        """Bytes of the payload for a vector of ``dim`` coordinates (the message adds a header)."""


def check_length(data: bytes, expected: int, what: str) -> None:
    """Raise :class:`MalformedPayloadError` unless ``len(data) == expected``."""
    if len(data) != expected:
        raise MalformedPayloadError(f"{what} payload of {len(data)} bytes, expected {expected}")
