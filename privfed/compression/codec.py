"""The interface of an update codec: a lossy, compact byte encoding of a flat vector."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from privfed.secure.errors import MessageRejectedError

__all__ = ["Codec", "check_length"]


class Codec(ABC):
    """Encodes a client's flat update into bytes and decodes it on the server.

    A codec is stateless: the same object serves every client and the server. Error
    feedback (memory of what was not sent) is kept outside, per client, by
    :class:`~privfed.compression.feedback.ErrorFeedback`.
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
        privfed.secure.MessageRejectedError
            If ``data`` is not a well-formed payload for ``dim`` coordinates.
        """

    @abstractmethod
    def payload_size(self, dim: int) -> int:
        """Bytes of the payload for a vector of ``dim`` coordinates (the message adds a header)."""


def check_length(data: bytes, expected: int, what: str) -> None:
    """Raise :class:`MessageRejectedError` unless ``len(data) == expected``."""
    if len(data) != expected:
        raise MessageRejectedError(f"{what} payload of {len(data)} bytes, expected {expected}")
