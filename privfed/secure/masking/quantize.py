"""Fixed-point encoding into the ring Z_{2^bits} with stochastic rounding."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from privfed.secure.errors import InvalidInputError

MIN_BITS, MAX_BITS = 8, 62


@dataclass(frozen=True)
class Ring:
    """The ring ``Z_{2^bits}`` and the fixed-point step for ``clients`` clients.

    Each client encodes ``z = (w_k / W) * x`` with ``|x| <= clip``; the included clients'
    ``z`` sum to at most ``clip`` in absolute value, and stochastic rounding adds at most
    one step per client, so ``step = clip / (2**(bits-1) - 1 - clients)`` keeps the signed
    sum inside ``(-2**(bits-1), 2**(bits-1))``: no overflow.

    Parameters
    ----------
    bits : int
        Ring size exponent, 8..62.
    clip : float
        Max |value| per coordinate.
    clients : int
        Number of participants (head-room of one step each).
    """

    bits: int
    clip: float
    clients: int

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise InvalidInputError(f"ring_bits={self.bits}; allowed range {MIN_BITS}..{MAX_BITS}")
        if 2 ** (self.bits - 1) - 1 - self.clients <= self.clients:
            raise InvalidInputError(
                f"ring_bits={self.bits} too small for {self.clients} clients"
            )

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype holding ``bits`` bits (little-endian on the wire)."""
        for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
            if np.dtype(dt).itemsize * 8 >= self.bits:
                return np.dtype(dt)
        raise AssertionError("unreachable: bits <= 62")

    @property
    def mask(self) -> int:
        """``2**bits - 1``."""
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """Quantisation step (value of one ring unit)."""
        return self.clip / (2 ** (self.bits - 1) - 1 - self.clients)

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Reduce ring elements (any wrap-around of ``dtype``) modulo ``2**bits``."""
        if self.bits == self.dtype.itemsize * 8:
            return values
        return values & self.dtype.type(self.mask)

    def quantize(self, z: np.ndarray) -> np.ndarray:
        """Encode ``z`` (``|z| <= clip``) with unbiased stochastic rounding.

        Each coordinate becomes ``floor(z/step)`` or that plus one, with the probability
        that makes the expectation exact; the error is below one step. The rounding coins
        need not be secret-keyed (they are not masks) and come from an OS-seeded generator.
        """
        scaled = z / self.step
        low = np.floor(scaled)
        coins = np.random.default_rng(secrets.randbits(128)).random(z.shape)
        q = (low + (coins < scaled - low)).astype(np.int64)
        return self.reduce(q.view(np.uint64).astype(self.dtype))

    def dequantize(self, total: np.ndarray) -> np.ndarray:
        """Map a ring sum back to floats (signed, times ``step``)."""
        s = self.reduce(total.astype(self.dtype)).astype(np.uint64)
        half = np.uint64(1 << (self.bits - 1))
        signed = s.astype(np.int64) - (s >= half).astype(np.int64) * (1 << self.bits)
        return signed.astype(np.float64) * self.step

    def to_bytes(self, values: np.ndarray) -> bytes:
        """Serialize ring elements (little-endian)."""
        return self.reduce(values).astype(self.dtype.newbyteorder("<")).tobytes()

    def from_bytes(self, data: bytes, dim: int) -> np.ndarray | None:
        """Parse ``dim`` ring elements, or return None if the size or range is wrong."""
        if len(data) != dim * self.dtype.itemsize:
            return None
        values = np.frombuffer(data, dtype=self.dtype.newbyteorder("<")).astype(self.dtype)
        if self.bits < self.dtype.itemsize * 8 and (values > self.mask).any():
            return None
        return values
