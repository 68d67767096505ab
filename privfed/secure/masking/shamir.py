"""Vectorised Shamir secret sharing over GF(2^128), byte-compatible with pycryptodome.

The field is the one of pycryptodome's ``Crypto.Protocol.SecretSharing`` (``ssss=False``):
GF(2)[x] modulo ``x^128 + x^7 + x^2 + x + 1``; a 16-byte block is the element
``int.from_bytes(block, "big")`` whose least significant bit is the constant coefficient.
The share of Shamir index ``i`` is the evaluation at ``x = i`` of a random polynomial of
degree ``threshold - 1`` whose constant term is the secret block, so shares made here
combine with ``Shamir.combine`` and shares made by ``Shamir.split`` combine here.

Method
------
128-bit elements are held as two ``uint64`` numpy arrays ``(hi, lo)``.  Shamir indices are
below ``2**16``, so every product the scheme needs with an index is a product with a *small*
element: a carry-less shift-xor over at most 16 bits, whose overflow (below ``2**16``) is
folded back with ``x^128 = x^7 + x^2 + x + 1`` in one step (:func:`_mul_small`).

* :func:`split_secret` evaluates the polynomials of every block at every index at once with
  Horner's rule: ``threshold - 1`` vectorised small products.
* :func:`combine_secrets` interpolates at 0.  The Lagrange coefficient of index ``x_i`` in
  the set ``{x_j}`` is ``P / E_i`` with ``P = prod_j x_j`` and
  ``E_i = x_i * prod_{j != i} (x_i + x_j)`` (in characteristic 2, minus is xor).  All ``E_i``
  and ``P`` of all distinct index sets are products of small factors, built together in
  ``threshold`` vectorised small products.  The divisions use Montgomery's batch trick (one
  field inversion per set, about ``3 * threshold`` general products in Python integers).
  Multiplication by a fixed ``lambda`` is GF(2)-linear, i.e. a 128 x 128 bit matrix whose
  row ``b`` holds the bits of ``lambda * x^b``; the secrets of all owners sharing one index
  set (and share length), all their blocks at once, are then one float32 matrix product of
  the unpacked share bits with the stacked matrices, reduced mod 2.  The sums stay below
  ``threshold * 128 < 2**24``, so float32 is exact whatever the summation order; BLAS makes
  this much faster than an integer or table-lookup (four-Russians) GF(2) product in numpy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from privfed.secure.errors import InvalidInputError, MessageRejectedError

BLOCK = 16
MAX_INDEX = 2**16 - 1  # largest Shamir index (indices are small field elements)

_BITS = 128
_MASK128 = (1 << _BITS) - 1
_MASK64 = (1 << 64) - 1
_REDUCTION = 0x87  # x^128 = x^7 + x^2 + x + 1
_POLY = (1 << _BITS) | _REDUCTION
_U64 = np.uint64
_ROW_BUDGET = 1 << 22  # float32 entries per chunk of unpacked share bits (16 MiB)

Pair = tuple[np.ndarray, np.ndarray]


def split_secret(secret: bytes, threshold: int, count: int) -> list[bytes]:
    """Shamir-share ``secret`` (a multiple of 16 bytes) ``threshold``-of-``count``.

    Each 16-byte block gets its own random polynomial (coefficients from ``os.urandom``).

    Parameters
    ----------
    secret : bytes
        The secret; its length is a positive multiple of 16.
    threshold : int
        Number of shares needed to recover the secret, in ``[1, count]``.
    count : int
        Number of shares, at most :data:`MAX_INDEX`.

    Returns
    -------
    list of bytes
        Share ``i`` (for Shamir index ``i + 1``): the concatenated shares of every
        16-byte block of the secret, as ``Shamir.split`` would give them.

    Raises
    ------
    InvalidInputError
        If the secret length, the threshold or the count is out of range.
    """
    if not secret or len(secret) % BLOCK:
        raise InvalidInputError(f"secret length {len(secret)} is not a positive multiple of 16")
    if not 1 <= threshold <= count:
        raise InvalidInputError(f"threshold {threshold} not in [1, {count}]")
    if count > MAX_INDEX:
        raise InvalidInputError(f"share count {count} exceeds {MAX_INDEX}")
    blocks = len(secret) // BLOCK
    # Coefficient k (highest degree first, the secret last) of block b is entry k * blocks + b.
    coeffs = _from_bytes(os.urandom(BLOCK * blocks * (threshold - 1)) + secret)
    xs = np.arange(1, count + 1, dtype=_U64)[:, None]
    hi = np.broadcast_to(coeffs[0][:blocks], (count, blocks))
    lo = np.broadcast_to(coeffs[1][:blocks], (count, blocks))
    for k in range(1, threshold):  # Horner's rule at every index, all blocks at once
        hi, lo = _mul_small(hi, lo, xs)
        hi = hi ^ coeffs[0][k * blocks : (k + 1) * blocks]
        lo = lo ^ coeffs[1][k * blocks : (k + 1) * blocks]
    data = _to_bytes(hi, lo)
    return [row.tobytes() for row in data.reshape(count, blocks * BLOCK)]


def combine_secrets(
    shares: Mapping[int, Mapping[int, bytes]], threshold: int
) -> dict[int, bytes]:
    """Recover the secrets of many owners at once.

    Each owner's secret is interpolated from its ``threshold`` smallest Shamir indices.
    Owners whose chosen index sets (and share lengths) are equal share the Lagrange
    coefficients and are combined in a single matrix product.

    Parameters
    ----------
    shares : Mapping[int, Mapping[int, bytes]]
        ``owner -> {Shamir index: share}``; a share is the concatenation of 16-byte blocks.
    threshold : int
        The sharing threshold (at least 1).

    Returns
    -------
    dict[int, bytes]
        ``owner -> secret``, in the order of ``shares``.

    Raises
    ------
    InvalidInputError
        If ``threshold < 1`` or an owner has fewer than ``threshold`` shares.
    MessageRejectedError
        If an owner's chosen shares have inconsistent lengths, a length that is 0 or not a
        multiple of 16, or an index outside ``[1, MAX_INDEX]``.
    """
    if threshold < 1:
        raise InvalidInputError(f"threshold {threshold} < 1")
    groups: dict[tuple[tuple[int, ...], int], list[tuple[int, list[bytes]]]] = {}
    for owner, owned in shares.items():
        indices, values = _choose(owned, threshold, f"owner {owner!r}: ")
        groups.setdefault((indices, len(values[0])), []).append((owner, values))
    keys = list(groups)
    xs = np.array([key[0] for key in keys], dtype=_U64).reshape(len(keys), threshold)
    maps = _linear_maps(_lagrange_at_zero(xs))
    result: dict[int, bytes] = {}
    for key, linear_map in zip(keys, maps, strict=True):
        members = groups[key]
        secrets = _interpolate(linear_map, [values for _, values in members], key[1])
        result.update(zip([owner for owner, _ in members], secrets, strict=True))
    return {owner: result[owner] for owner in shares}


def combine_secret(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Recover one secret from at least ``threshold`` shares ``{Shamir index: share}``.

    Parameters
    ----------
    shares : Mapping[int, bytes]
        ``{Shamir index: share}``; the ``threshold`` smallest indices are used.
    threshold : int
        The sharing threshold (at least 1).

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    InvalidInputError, MessageRejectedError
        As :func:`combine_secrets`.
    """
    if threshold < 1:
        raise InvalidInputError(f"threshold {threshold} < 1")
    indices, values = _choose(shares, threshold, "")
    linear_map = _linear_maps(_lagrange_at_zero(np.array([indices], dtype=_U64)))[0]
    return _interpolate(linear_map, [values], len(values[0]))[0]


def _choose(shares: Mapping[int, bytes], threshold: int,
            who: str) -> tuple[tuple[int, ...], list[bytes]]:
    """Validate one owner's shares; return its ``threshold`` smallest indices and shares."""
    if len(shares) < threshold:
        raise InvalidInputError(f"{who}{len(shares)} shares < threshold {threshold}")
    chosen = sorted(shares.items())[:threshold]
    size = len(chosen[0][1])
    if size == 0 or size % BLOCK or any(len(share) != size for _, share in chosen):
        raise MessageRejectedError(f"{who}shares of inconsistent or invalid length")
    bad = [index for index, _ in chosen if not 1 <= index <= MAX_INDEX]
    if bad:
        raise MessageRejectedError(f"{who}Shamir index {bad[0]} not in [1, {MAX_INDEX}]")
    return tuple(index for index, _ in chosen), [share for _, share in chosen]


def _lagrange_at_zero(xs: np.ndarray) -> list[list[int]]:
    """Lagrange coefficients at 0 of each row of distinct small indices ``xs`` (sets, t)."""
    sets, t = xs.shape
    # Columns 0..t-1 accumulate E_i = x_i * prod_{j != i} (x_i + x_j); column t gets P.
    hi = np.zeros((sets, t + 1), dtype=_U64)
    lo = np.ones((sets, t + 1), dtype=_U64)
    factor = np.empty((sets, t + 1), dtype=_U64)
    for j in range(t):
        factor[:, :t] = xs ^ xs[:, j : j + 1]
        factor[:, j] = xs[:, j]
        factor[:, t] = xs[:, j]
        hi, lo = _mul_small(hi, lo, factor)
    values = [[(h << 64) | low for h, low in zip(row_hi, row_lo, strict=True)]
              for row_hi, row_lo in zip(hi.tolist(), lo.tolist(), strict=True)]
    return [_batch_divide(row[t], row[:t]) for row in values]


def _batch_divide(numerator: int, denominators: list[int]) -> list[int]:
    """``numerator / d`` for every nonzero ``d``, with one inversion (Montgomery's trick)."""
    prefix = [denominators[0]]
    for d in denominators[1:]:
        prefix.append(_gf_mul(prefix[-1], d))
    acc = _gf_mul(numerator, _gf_inv(prefix[-1]))  # numerator / prod of all
    out = [0] * len(denominators)
    for i in range(len(denominators) - 1, 0, -1):
        out[i] = _gf_mul(acc, prefix[i - 1])
        acc = _gf_mul(acc, denominators[i])
    out[0] = acc
    return out


def _interpolate(linear_map: np.ndarray, owners: list[list[bytes]], size: int) -> list[bytes]:
    """``sum_i lambda_i * share_i`` for each owner's ``t`` shares (all of ``size`` bytes).

    ``linear_map`` is one set's ``(t, 128, 16)`` array from :func:`_linear_maps`.
    """
    t, blocks = len(linear_map), size // BLOCK
    matrix = np.unpackbits(linear_map, axis=-1).reshape(t * _BITS, _BITS).astype(np.float32)
    shares = np.frombuffer(b"".join(b"".join(values) for values in owners), dtype=np.uint8)
    # (owner, share, block, byte) -> rows (owner, block), columns (share, byte).
    shares = shares.reshape(len(owners), t, blocks, BLOCK).transpose(0, 2, 1, 3)
    shares = shares.reshape(len(owners) * blocks, t * BLOCK)
    out = np.empty((len(shares), BLOCK), dtype=np.uint8)
    step = max(1, _ROW_BUDGET // (t * _BITS))
    for start in range(0, len(shares), step):
        bits = np.unpackbits(shares[start : start + step], axis=1).astype(np.float32)
        sums = bits @ matrix
        out[start : start + step] = np.packbits(sums.astype(np.int32) & 1, axis=1)
    return [row.tobytes() for row in out.reshape(len(owners), size)]


def _linear_maps(lambdas: list[list[int]]) -> np.ndarray:
    """Bit matrices of ``y -> lambda * y`` for every coefficient of every set, as bytes.

    Entry ``[s, i, p]`` (input bit ``p`` of the unpacked big-endian share, i.e. coefficient
    ``127 - p``) holds ``lambdas[s][i] * x^(127 - p)`` as 16 big-endian bytes; the result
    has shape ``(sets, t, 128, 16)``.
    """
    flat = [value for row in lambdas for value in row]
    hi = np.array([value >> 64 for value in flat], dtype=_U64)
    lo = np.array([value & _MASK64 for value in flat], dtype=_U64)
    rows_hi = np.empty((len(flat), _BITS), dtype=_U64)
    rows_lo = np.empty((len(flat), _BITS), dtype=_U64)
    one, top = _U64(1), _U64(63)
    for degree in range(_BITS):
        rows_hi[:, _BITS - 1 - degree] = hi
        rows_lo[:, _BITS - 1 - degree] = lo
        carry = hi >> top
        hi = (hi << one) | (lo >> top)
        lo = (lo << one) ^ (carry * _U64(_REDUCTION))
    t = len(lambdas[0]) if lambdas else 0
    return _to_bytes(rows_hi, rows_lo).reshape(len(lambdas), t, _BITS, BLOCK)


def _mul_small(hi: np.ndarray, lo: np.ndarray, factor: np.ndarray) -> Pair:
    """Elementwise ``(hi, lo) * factor`` in GF(2^128) for ``factor < 2**16`` (broadcast)."""
    nbits = int(factor.max(initial=0)).bit_length()
    shift = np.arange(nbits, dtype=_U64).reshape((nbits,) + (1,) * factor.ndim)
    select = ((factor >> shift) & _U64(1)) * _U64(_MASK64)
    spill = _U64(63) - shift  # x >> (64 - s) as x >> (63 - s) >> 1, also right for s = 0
    new_lo = np.bitwise_xor.reduce(select & (lo << shift), axis=0)
    new_hi = np.bitwise_xor.reduce(select & ((hi << shift) | (lo >> spill >> _U64(1))),
                                   axis=0)
    over = np.bitwise_xor.reduce(select & (hi >> spill >> _U64(1)), axis=0)
    # over < 2**15, so over * (x^7 + x^2 + x + 1) < 2**22 stays in the low word.
    new_lo ^= over ^ (over << _U64(1)) ^ (over << _U64(2)) ^ (over << _U64(7))
    return new_hi, new_lo


def _from_bytes(data: bytes) -> Pair:
    """Big-endian 16-byte blocks -> ``(hi, lo)`` uint64 arrays."""
    words = np.frombuffer(data, dtype=">u8").reshape(-1, 2).astype(_U64)
    return words[:, 0], words[:, 1]


def _to_bytes(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``(hi, lo)`` arrays of shape ``s`` -> uint8 array of shape ``s + (16,)``, big-endian."""
    words = np.stack([hi, lo], axis=-1).astype(">u8")
    return words.view(np.uint8).reshape(hi.shape + (BLOCK,))


def _gf_mul(a: int, b: int) -> int:
    """Product in GF(2^128) of two elements given as Python ints."""
    table = [0, a]  # a times every polynomial of degree < 4
    for shift in (1, 2, 3):
        table += [value ^ (a << shift) for value in table]
    z = 0
    for shift in range(_BITS - 4, -4, -4):
        z = (z << 4) ^ table[(b >> shift) & 15]
    while z >> _BITS:
        over = z >> _BITS
        z = (z & _MASK128) ^ over ^ (over << 1) ^ (over << 2) ^ (over << 7)
    return z


def _gf_inv(a: int) -> int:
    """Inverse in GF(2^128) of a nonzero element, by the extended Euclidean algorithm."""
    u, v, g1, g2 = a, _POLY, 1, 0
    while u != 1:
        j = u.bit_length() - v.bit_length()
        if j < 0:
            u, v, g1, g2, j = v, u, g2, g1, -j
        u ^= v << j
        g1 ^= g2 << j
    return g1
