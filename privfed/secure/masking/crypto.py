"""Cryptographic building blocks of the masking protocol.

X25519 key agreement, HKDF-SHA256 key derivation bound to the round and the parties,
a ChaCha20 keystream as the mask PRG, and ChaCha20-Poly1305 for shares in transit (Shamir
sharing is in :mod:`.shamir`).
"""

from __future__ import annotations

import os
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from privfed.secure.errors import AuthenticationError, MessageRejectedError

SEED_SIZE = 16  # 128-bit seeds: one Shamir block each
KEY_SIZE = 32
NONCE_SIZE = 12
BLOCK = 16
_CONTEXT = b"privfed.secure.masking v1|"


def hkdf(secret: bytes, label: bytes, *parts: int, length: int = KEY_SIZE) -> bytes:
    """Derive ``length`` bytes from ``secret`` with HKDF-SHA256, bound to ``label`` and ints."""
    info = _CONTEXT + label + b"|" + struct.pack(f"<{len(parts)}Q", *parts)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_from_seed(seed: bytes, round_id: int, client_id: int) -> X25519PrivateKey:
    """Deterministic X25519 key from a 16-byte seed (so the seed is what gets secret-shared)."""
    return X25519PrivateKey.from_private_bytes(hkdf(seed, b"x25519", round_id, client_id))


def agree(private: X25519PrivateKey, peer_public: bytes, label: bytes, round_id: int,
          a: int, b: int) -> bytes:
    """X25519 shared secret with ``peer_public`` -> 32-byte key bound to round and pair."""
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        shared = private.exchange(peer)
    except ValueError as exc:
        raise MessageRejectedError(f"invalid X25519 public key: {exc}") from None
    return hkdf(shared, label, round_id, min(a, b), max(a, b))


def prg(key: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` uniform elements of unsigned ``dtype`` from the ChaCha20 keystream of ``key``.

    Each key is used for a single stream (keys are per round and per pair), so a fixed
    nonce is safe.
    """
    dtype = np.dtype(dtype)
    nbytes = count * dtype.itemsize
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(nbytes))
    return np.frombuffer(stream, dtype=dtype.newbyteorder("<"), count=count)


class MaskSum:
    """Adds and subtracts :func:`prg` streams into one vector in place, in one pass.

    Every stream is written into the same keystream buffer (ChaCha20 ``update_into``) and
    folded into the vector at once, so no per-stream array is allocated: adding ``m`` masks of
    ``count`` elements costs ``m`` keystream passes and ``m`` in-place additions. The result
    equals ``acc + sum(sign * prg(key, count, dtype))`` in the ring.

    Parameters
    ----------
    acc : np.ndarray
        The vector to mask or unmask (unsigned ring dtype); modified in place.
    """

    def __init__(self, acc: np.ndarray) -> None:
        self.acc = acc
        nbytes = acc.size * acc.dtype.itemsize
        self._zeros = bytes(nbytes)
        self._buffer = bytearray(nbytes)
        self._stream = np.frombuffer(self._buffer, dtype=acc.dtype.newbyteorder("<"),
                                     count=acc.size)

    def add(self, key: bytes, sign: int = 1) -> None:
        """``acc += sign * prg(key)`` (``sign`` is +1 or -1), modulo the ring."""
        encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        if sign > 0:
            self.acc += self._stream
        else:
            self.acc -= self._stream


def seal_share(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt with ChaCha20-Poly1305 under a fresh random nonce; returns ``nonce | ct``."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_share(key: bytes, data: bytes, aad: bytes, who: str) -> bytes:
    """Decrypt :func:`seal_share` output; raise AuthenticationError naming ``who`` if tampered."""
    if len(data) < NONCE_SIZE + 16:
        raise MessageRejectedError(f"encrypted share from {who} too short ({len(data)} bytes)")
    try:
        return ChaCha20Poly1305(key).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], aad)
    except InvalidTag:
        raise AuthenticationError(
            f"encrypted share from {who} failed authentication (tampered or wrong key)"
        ) from None
