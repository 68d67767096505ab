"""Unbiased stochastic quantisation to b bits per coordinate (QSGD-style, Alistarh et al. 2017)."""

from __future__ import annotations

import numpy as np

from privfed.compression.codec import Codec, MalformedPayloadError, check_length

__all__ = ["BITS", "StochasticQuantizer", "pack_bits", "unpack_bits"]

BITS = (1, 2, 4, 8)
"""Bits per coordinate that pack whole codes into bytes."""


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack integer codes in ``[0, 2**bits)`` into ``ceil(len(codes) * bits / 8)`` bytes.

    Code ``i`` occupies bits ``(i % per) * bits ...`` of byte ``i // per``, ``per = 8 // bits``.
    """
    per = 8 // bits
    padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
    padded[: codes.size] = codes
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    packed = np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1)
    return packed.astype(np.uint8).tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes, as uint8."""
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    raw = np.frombuffer(data, dtype=np.uint8)
    codes = (raw[:, None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(-1)[:count]


class StochasticQuantizer(Codec):
    """Stochastic rounding onto ``2**bits`` evenly spaced levels in ``[-scale, scale]``.

    Each block of ``block_size`` coordinates (the whole vector if ``None``) is sent as its
    float32 scale ``s = max |x_i|`` and one ``bits``-bit code per coordinate. A coordinate
    ``x`` lies between two neighbouring levels ``l_j <= x <= l_(j+1)`` and is rounded up with
    probability ``(x - l_j) / (l_(j+1) - l_j)``, so the decoded value is unbiased,
    ``E[decode(encode(x))] = x``, with variance at most ``(s / (2**bits - 1))**2`` per
    coordinate. With ``bits=1`` the levels are ``{-s, s}`` (stochastic sign compression).

    Payload: ``4 * ceil(dim / block_size)`` bytes of scales, then ``ceil(dim * bits / 8)``
    bytes of codes, about ``32 / bits`` times smaller than float32.

    Parameters
    ----------
    bits : {1, 2, 4, 8}
        Bits per coordinate.
    block_size : int or None, default None
        Coordinates sharing one scale; smaller blocks cost more scales but quantise
        coordinates of small magnitude more finely.
    """

    name = "quantize"

    def __init__(self, bits: int, block_size: int | None = None) -> None:
        if bits not in BITS:
            raise ValueError(f"compression.bits must be one of {list(BITS)}, got {bits!r}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"compression.block_size must be >= 1 or None, got {block_size!r}")
        self.bits = bits
        self.block_size = block_size
        self.levels = (1 << bits) - 1  # intervals between the 2**bits levels

    def _blocks(self, dim: int) -> tuple[int, int]:
        size = min(self.block_size or dim, dim) or 1  # a block beyond the vector is all of it
        return size, -(-dim // size)

    def payload_size(self, dim: int) -> int:
        """Bytes of scales plus packed codes for ``dim`` coordinates."""
        return 4 * self._blocks(dim)[1] + -(-dim * self.bits // 8)

    def encode(
        self, vector: np.ndarray, rng: np.random.Generator, *, round_id: int = 0
    ) -> bytes:
        """Return the scales and packed stochastic codes of ``vector``."""
        x = np.asarray(vector, dtype=np.float32).ravel()
        dim = x.size
        size, count = self._blocks(dim)
        padded = np.zeros(size * count, dtype=np.float64)
        padded[:dim] = x
        blocks = padded.reshape(count, size)
        scales = np.abs(blocks).max(axis=1).astype(np.float32)
        safe = np.where(scales > 0, scales, 1.0).astype(np.float64)[:, None]
        # Position in units of level spacing, in [0, levels]; zero blocks map to level 0.
        u = np.where(scales[:, None] > 0, (blocks / safe + 1.0) * (self.levels / 2), 0.0)
        u = u.ravel()[:dim]
        low = np.floor(u)
        codes = low + (rng.random(dim) < u - low)
        codes = np.clip(codes, 0, self.levels).astype(np.uint8)
        return scales.astype("<f4").tobytes() + pack_bits(codes, self.bits)

    def decode(self, data: bytes, dim: int, *, round_id: int = 0) -> np.ndarray:
        """Return the level values ``scale * (2 * code / levels - 1)``."""
        check_length(data, self.payload_size(dim), f"{self.bits}-bit quantised")
        size, count = self._blocks(dim)
        scales = np.frombuffer(data[: 4 * count], dtype="<f4").astype(np.float64)
        if not np.isfinite(scales).all() or (scales < 0).any():
            raise MalformedPayloadError("quantised payload has a negative or non-finite scale")
        codes = unpack_bits(data[4 * count :], dim, self.bits).astype(np.float64)
        per_coord = np.repeat(scales, size)[:dim]
        return per_coord * (2.0 * codes / self.levels - 1.0)
