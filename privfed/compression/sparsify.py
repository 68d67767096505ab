"""Sparsification: send k of d coordinates (top-k by magnitude, or a shared random k)."""

from __future__ import annotations

import math

import numpy as np

from privfed.compression.codec import Codec, MalformedPayloadError, check_length

__all__ = ["TopK", "RandomK", "kept_count"]

_BITMAP, _U16, _U32 = 0, 1, 2
_INDEX_BYTES = {_U16: 2, _U32: 4}


def kept_count(density: float, dim: int) -> int:
    """``k = ceil(density * dim)``, at least 1 and at most ``dim``."""
    return min(dim, max(1, math.ceil(density * dim - 1e-9)))


def _check_density(density: float) -> float:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"compression.density must be in (0, 1], got {density!r}")
    return float(density)


def _index_format(k: int, dim: int) -> int:
    width = _U16 if dim <= 1 << 16 else _U32
    return _BITMAP if -(-dim // 8) < k * _INDEX_BYTES[width] else width


class TopK(Codec):
    """Keep the ``k = ceil(density * d)`` coordinates of largest magnitude.

    Biased (the small coordinates are dropped every time); combine it with error feedback so
    that what is not sent now is sent later. Payload: one format byte, the index set (a
    ``ceil(d / 8)``-byte bitmap, or uint16/uint32 indices, whichever is smaller) and ``k``
    float32 values, i.e. about ``density * (4 + index bytes)`` bytes per coordinate.

    Parameters
    ----------
    density : float
        Fraction of coordinates kept, in (0, 1].
    """

    name = "topk"

    def __init__(self, density: float) -> None:
        self.density = _check_density(density)

    def payload_size(self, dim: int) -> int:
        """Format byte, index set and float32 values of the ``k`` kept coordinates."""
        k = kept_count(self.density, dim)
        fmt = _index_format(k, dim)
        index_bytes = -(-dim // 8) if fmt == _BITMAP else k * _INDEX_BYTES[fmt]
        return 1 + index_bytes + 4 * k

    def encode(
        self, vector: np.ndarray, rng: np.random.Generator, *, round_id: int = 0
    ) -> bytes:
        """Return the index set and values of the ``k`` largest-magnitude coordinates."""
        x = np.asarray(vector, dtype=np.float32).ravel()
        dim = x.size
        k = kept_count(self.density, dim)
        index = np.sort(np.argpartition(-np.abs(x), k - 1)[:k])
        fmt = _index_format(k, dim)
        if fmt == _BITMAP:
            mask = np.zeros(dim, dtype=bool)
            mask[index] = True
            index_bytes = np.packbits(mask, bitorder="little").tobytes()
        else:
            index_bytes = index.astype("<u2" if fmt == _U16 else "<u4").tobytes()
        return bytes([fmt]) + index_bytes + x[index].astype("<f4").tobytes()

    def decode(self, data: bytes, dim: int, *, round_id: int = 0) -> np.ndarray:
        """Scatter the sent values into a zero vector."""
        check_length(data, self.payload_size(dim), "top-k")
        k = kept_count(self.density, dim)
        fmt = data[0]
        if fmt != _index_format(k, dim):
            raise MalformedPayloadError(f"top-k payload has index format {fmt}, expected "
                                        f"{_index_format(k, dim)}")
        values_at = len(data) - 4 * k
        if fmt == _BITMAP:
            bitmap = np.frombuffer(data[1:values_at], dtype=np.uint8)
            index = np.flatnonzero(np.unpackbits(bitmap, count=dim, bitorder="little"))
        else:
            index = np.frombuffer(data[1:values_at], dtype="<u2" if fmt == _U16 else "<u4")
        if index.size != k or (index.size and (index.max() >= dim or np.any(np.diff(
                index.astype(np.int64)) <= 0))):
            raise MalformedPayloadError(
                f"top-k payload does not carry {k} distinct indices < {dim}")
        out = np.zeros(dim, dtype=np.float64)
        out[index] = np.frombuffer(data[values_at:], dtype="<f4")
        return out


class RandomK(Codec):
    """Keep ``k = ceil(density * d)`` coordinates chosen at random, the same for all clients.

    The index set of a round is drawn from ``(seed, round_id)``, so every client of the round
    sends the same coordinates and the server regenerates them: only the ``k`` float32 values
    travel (``4 * k`` bytes). Because all clients share the index set, the sum of their
    vectors restricted to it is the restriction of their sum, which is what lets random-k
    compose with masking secure aggregation
    (:class:`~privfed.compression.randomk.RandomKStage`).

    Parameters
    ----------
    density : float
        Fraction of coordinates kept, in (0, 1].
    seed : int
        Seed shared by the clients and the server (derive it from the experiment seed).
    rescale : bool, default True
        Multiply the kept values by ``d / k`` so that the decoded vector is unbiased over the
        random index set (variance ``(d / k - 1) * ||x||^2``). Without rescaling the decoded
        vector is a projection (never longer than the input), the right choice with error
        feedback and with central DP, whose sensitivity must not grow.
    """

    name = "randomk"

    def __init__(self, density: float, seed: int, *, rescale: bool = True) -> None:
        self.density = _check_density(density)
        self.seed = seed
        self.rescale = rescale

    def indices(self, dim: int, round_id: int) -> np.ndarray:
        """The sorted index set of round ``round_id`` for vectors of ``dim`` coordinates."""
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, round_id)))
        return np.sort(rng.choice(dim, size=kept_count(self.density, dim), replace=False))

    def gain(self, dim: int) -> float:
        """Factor applied to the kept values on decoding (``d / k`` or 1)."""
        return dim / kept_count(self.density, dim) if self.rescale else 1.0

    def payload_size(self, dim: int) -> int:
        """``4 * k`` bytes of float32 values."""
        return 4 * kept_count(self.density, dim)

    def encode(
        self, vector: np.ndarray, rng: np.random.Generator, *, round_id: int = 0
    ) -> bytes:
        """Return the float32 values of the round's shared coordinates."""
        x = np.asarray(vector, dtype=np.float32).ravel()
        return x[self.indices(x.size, round_id)].astype("<f4").tobytes()

    def decode(self, data: bytes, dim: int, *, round_id: int = 0) -> np.ndarray:
        """Scatter the (rescaled) values onto the round's index set."""
        check_length(data, self.payload_size(dim), "random-k")
        out = np.zeros(dim, dtype=np.float64)
        out[self.indices(dim, round_id)] = np.frombuffer(data, dtype="<f4") * self.gain(dim)
        return out
