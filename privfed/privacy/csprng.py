"""Cryptographically secure random numbers for differential-privacy noise.

:class:`ChaChaRandom` turns one ChaCha20 keystream (Bernstein 2008; RFC 8439), produced by
the ``cryptography`` package (OpenSSL), into vectorised numpy samples: uniforms, Gaussians,
Bernoulli, exact Poisson and Skellam variates. It replaces ``numpy.random`` (PCG64 /
Mersenne Twister, predictable from its output) wherever noise protects privacy, and needs no
``torchcsprng``.

Keystream
---------
The key is 32 bytes from :func:`os.urandom`, fresh for every object, so the ChaCha20 nonce
is fixed to 12 zero bytes and the 32-bit block counter starts at 0: the ``cryptography``
16-byte "nonce" argument is ``counter (4 bytes, little endian) || nonce (12 bytes)`` and is
``bytes(16)`` here. Every request reads the next bytes of the same stream (encrypting zero
bytes), so no (key, counter) pair is ever used twice. Before the counter could reach 2**32
blocks (2**38 bytes = 256 GiB under one key) the object *rekeys deterministically from the
stream*: the last 32 bytes allowed under the old key become the new key and the counter
restarts at 0 (a fast-key-erasure step; the old key is dropped). A process fork is
detected by a pid check: an object keyed from ``os.urandom`` takes a fresh ``os.urandom``
key in the child so parent and child never share noise.

Samplers
--------
* uniform: 53-bit ``k * 2**-53`` from the top bits of little-endian 64-bit words;
* normal: Box and Muller (1958), vectorised;
* Poisson: exact, by inversion below 10 and Hörmann's PTRS above
  (:mod:`privfed.privacy.poisson`);
* Skellam: difference of two independent Poisson variates.

References
----------
D. J. Bernstein, "ChaCha, a variant of Salsa20", 2008; RFC 8439 (2018).
G. E. P. Box and M. E. Muller, "A note on the generation of random normal deviates",
Ann. Math. Statist. 29(2):610-611, 1958.
"""

from __future__ import annotations

import math
import operator
import os
import threading

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from privfed.privacy.poisson import PTRS_MIN_LAM, poisson_inversion, poisson_ptrs

__all__ = ["ChaChaRandom"]

_KEY_LEN = 32
_NONCE = bytes(16)  # 4-byte little-endian block counter 0 || 12-byte zero nonce
_BLOCK = 64
_KEY_BYTES = _BLOCK * 2**32  # bytes before the 32-bit ChaCha20 block counter would wrap
_MAX_LAM = 1e15  # lam + 100 sqrt(lam) stays far below 2**53: integer k exact in float64
_ZEROS = memoryview(bytes(1 << 20))  # plaintext encrypted into the keystream, per chunk
_TWO_PI = 2.0 * math.pi


def _check_size(size: int) -> int:
    try:
        n = operator.index(size)
    except TypeError:
        raise TypeError(f"size must be a non-negative integer, got {size!r}") from None
    if n < 0:
        raise ValueError(f"size must be a non-negative integer, got {n}")
    return n


def _check_rate(value: float, name: str) -> float:
    x = float(value)
    if not (math.isfinite(x) and 0.0 <= x <= _MAX_LAM):
        raise ValueError(f"{name} must be finite and in [0, {_MAX_LAM:g}], got {value!r}")
    return x


class ChaChaRandom:
    """Cryptographically secure random numbers from a ChaCha20 keystream.

    All samples of one object come from one continuous keystream (see the module
    docstring for the nonce, counter and rekeying conventions). Methods are thread-safe
    (a lock serialises keystream reads). Objects cannot be pickled.

    Parameters
    ----------
    key : bytes or None, optional
        ``None`` (the only production use): a fresh 32-byte key from :func:`os.urandom`.
        A given 32-byte key makes the stream deterministic -- **for tests only**; noise
        from a known key gives no privacy.

    Raises
    ------
    ValueError
        If ``key`` is not ``None`` and not exactly 32 bytes.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._from_urandom = key is None
        if key is None:
            key = os.urandom(_KEY_LEN)
        elif not isinstance(key, bytes | bytearray | memoryview) or len(key) != _KEY_LEN:
            raise ValueError(f"key must be None or exactly {_KEY_LEN} bytes")
        self._lock = threading.Lock()
        self._key_bytes = _KEY_BYTES  # per object so tests can exercise rekeying
        self._pid = os.getpid()
        self._set_key(bytes(key))

    def __reduce__(self) -> tuple:
        """Refuse to copy the secret stream state (pickle, copy, multiprocessing)."""
        raise TypeError("ChaChaRandom objects cannot be pickled (their stream is secret)")

    def _set_key(self, key: bytes) -> None:
        self._enc = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
        self._used = 0

    def random_bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the keystream.

        Parameters
        ----------
        n : int
            Number of bytes, ``n >= 0``.

        Returns
        -------
        bytes
            ``n`` bytes: the ChaCha20 keystream (encryption of zero bytes) continuing where
            the previous request stopped.

        Raises
        ------
        ValueError
            If ``n`` is negative.
        """
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"n must be a non-negative integer, got {n!r}") from None
        if n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n}")
        return self._keystream(n).tobytes()

    def _keystream(self, n: int) -> npt.NDArray[np.uint8]:
        """The next ``n`` keystream bytes as a fresh writable uint8 array."""
        out = np.empty(n, dtype=np.uint8)
        view = memoryview(out)
        pos = 0
        with self._lock:
            pid = os.getpid()
            if pid != self._pid:  # forked child: never replay the parent's noise
                self._pid = pid
                if self._from_urandom:
                    self._set_key(os.urandom(_KEY_LEN))
            while pos < n:
                room = self._key_bytes - _KEY_LEN - self._used
                if room <= 0:  # rekey from the stream before the block counter wraps
                    self._set_key(self._enc.update(bytes(_KEY_LEN)))
                    continue
                take = min(n - pos, room, len(_ZEROS))
                self._enc.update_into(_ZEROS[:take], view[pos : pos + take])
                self._used += take
                pos += take
        return out

    def random(self, size: int) -> npt.NDArray[np.float64]:
        """Uniform variates on ``[0, 1)`` with 53-bit resolution.

        Each value is ``(w >> 11) * 2**-53`` for the next little-endian 64-bit keystream
        word ``w``: every multiple of ``2**-53`` in ``[0, 1)`` has probability ``2**-53``.

        Parameters
        ----------
        size : int
            Number of variates, ``size >= 0``.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(size,)``, values in ``[0, 1)``.

        Raises
        ------
        ValueError
            If ``size`` is negative.
        """
        n = _check_size(size)
        words = self._keystream(8 * n).view("<u8")
        np.right_shift(words, 11, out=words)
        out = np.empty(n, dtype=np.float64)
        np.multiply(words, 2.0**-53, out=out)  # exact: words < 2**53
        return out

    def standard_normal(self, size: int) -> npt.NDArray[np.float64]:
        """Standard normal variates by the Box-Muller transform.

        For pairs of uniforms ``u1, u2``: ``r = sqrt(-2 log(1 - u1))`` and the outputs are
        ``r cos(2 pi u2)``, ``r sin(2 pi u2)`` (Box and Muller 1958). ``1 - u1`` lies in
        ``(0, 1]``, so ``log(0)`` never occurs; ``|z| <= sqrt(106 log 2) ~ 8.57``.

        Parameters
        ----------
        size : int
            Number of variates, ``size >= 0``.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(size,)``, distributed N(0, 1).

        Raises
        ------
        ValueError
            If ``size`` is negative.
        """
        n = _check_size(size)
        m = (n + 1) // 2
        u = self.random(2 * m)
        r = np.log1p(np.negative(u[:m]))  # log(1 - u1), 1 - u1 in (0, 1]
        r *= -2.0
        np.sqrt(r, out=r)
        theta = u[m:]
        theta *= _TWO_PI
        out = np.empty(2 * m)
        np.cos(theta, out=out[:m])
        np.sin(theta, out=out[m:])
        out[:m] *= r
        out[m:] *= r
        return out[:n]

    def normal(self, size: int, std: float | npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Centred normal variates ``N(0, std**2)`` (Box-Muller, see :meth:`standard_normal`).

        Parameters
        ----------
        size : int
            Number of variates, ``size >= 0``.
        std : float or array_like
            Standard deviation (same units as the output), finite and ``>= 0``: a scalar,
            or an array of shape ``(size,)`` giving one standard deviation per coordinate.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(size,)``.

        Raises
        ------
        ValueError
            If ``size`` is negative, ``std`` is negative or not finite, or an array ``std``
            does not have shape ``(size,)``.
        """
        n = _check_size(size)
        s = np.asarray(std, dtype=np.float64)
        if s.ndim != 0 and s.shape != (n,):
            raise ValueError(f"std must be a scalar or have shape ({n},), got {s.shape}")
        if not (np.all(np.isfinite(s)) and np.all(s >= 0)):
            raise ValueError("std must be finite and >= 0")
        out = self.standard_normal(n)
        out *= s
        return out

    def bernoulli(self, size: int, p: float) -> npt.NDArray[np.bool_]:
        """Bernoulli variates: ``u < p`` for 53-bit uniforms ``u``.

        Each value is True with probability ``ceil(p 2**53) / 2**53`` (``p`` exactly when
        ``p`` is a multiple of ``2**-53``; ``p = 0`` gives all False, ``p = 1`` all True).

        Parameters
        ----------
        size : int
            Number of variates, ``size >= 0``.
        p : float
            Probability of True, in ``[0, 1]``.

        Returns
        -------
        numpy.ndarray
            bool, shape ``(size,)``.

        Raises
        ------
        ValueError
            If ``size`` is negative or ``p`` is not in ``[0, 1]``.
        """
        n = _check_size(size)
        q = float(p)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        return self.random(n) < q

    def poisson(self, lam: float, size: int) -> npt.NDArray[np.int64]:
        """Exact Poisson variates.

        ``lam < 10``: inversion, ``k = #{j : F(j) <= u}`` for a uniform ``u`` and the CDF
        ``F`` tabulated to ``lam + 20 sqrt(lam) + 40`` (a ``u`` beyond the table, i.e. in
        the ~1e-16 rounding gap, is redrawn). ``lam >= 10``: Hörmann's (1993) PTRS
        transformed rejection with squeeze, the algorithm of ``numpy.random``; candidates
        for all pending outputs are drawn at once and only rejected ones are redrawn. The
        candidate is computed relative to ``floor(lam)`` and its log-probability by
        Loader's (2000) saddle-point form, so rounding stays at the 1e-16 relative level
        (no normal approximation) for all ``lam <= 1e15``.

        Parameters
        ----------
        lam : float
            Mean (and variance), finite, ``0 <= lam <= 1e15`` (checked statistically up to
            1e12). ``lam = 0`` gives zeros.
        size : int
            Number of variates, ``size >= 0``.

        Returns
        -------
        numpy.ndarray
            int64, shape ``(size,)``, values ``>= 0``.

        Raises
        ------
        ValueError
            If ``size`` is negative or ``lam`` is negative, not finite or above 1e15.
        """
        lam = _check_rate(lam, "lam")
        n = _check_size(size)
        if lam == 0.0 or n == 0:
            return np.zeros(n, dtype=np.int64)
        if lam < PTRS_MIN_LAM:
            return poisson_inversion(lam, n, self.random)
        return poisson_ptrs(lam, n, self.random)

    def skellam(self, mu: float, size: int) -> npt.NDArray[np.int64]:
        """Symmetric Skellam variates ``Poisson(mu) - Poisson(mu)`` (mean 0, variance 2 mu).

        Parameters
        ----------
        mu : float
            Poisson mean of each term, finite, ``0 <= mu <= 1e15``.
        size : int
            Number of variates, ``size >= 0``.

        Returns
        -------
        numpy.ndarray
            int64, shape ``(size,)``.

        Raises
        ------
        ValueError
            If ``size`` is negative or ``mu`` is negative, not finite or above 1e15.
        """
        mu = _check_rate(mu, "mu")
        n = _check_size(size)
        return self.poisson(mu, n) - self.poisson(mu, n)
