"""Payload layouts of the masking protocol (shared by client and server)."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from privfed.secure.errors import MessageRejectedError
from privfed.secure.wire import pack_fields, unpack_fields

from .crypto import BLOCK, SEED_SIZE

KIND = "masking"
SELF_MASK, KEY_SEED = 0, 1
_ADVERT = struct.Struct("<dQ")
_SHARE_HEAD = struct.Struct("<IIH")
_REVEAL_HEAD = struct.Struct("<IBH")
_U32 = struct.Struct("<I")


def commit(seed: bytes, round_id: int, client_id: int) -> bytes:
    """SHA-256 commitment to a self-mask seed, checked after reconstruction."""
    head = b"privfed-commit" + struct.pack("<QI", round_id, client_id)
    return hashlib.sha256(head + seed).digest()


def survivors_digest(round_id: int, survivors: Collection[int]) -> bytes:
    """SHA-256 of a round's survivor set: what a client signs in the consistency round (32
    bytes, so that the unmask request carrying ``t`` signatures grows linearly with ``n``)."""
    ids = np.asarray(sorted(survivors), dtype="<u4").tobytes()
    return hashlib.sha256(b"privfed-survivors" + struct.pack("<Q", round_id) + ids).digest()


@dataclass(frozen=True)
class Advert:
    """Public keys and public metadata a client advertises."""

    enc_pk: bytes
    mask_pk: bytes
    commitment: bytes
    weight: float
    dim: int

    def to_bytes(self) -> bytes:
        """Serialize."""
        meta = _ADVERT.pack(self.weight, self.dim)
        return pack_fields([self.enc_pk, self.mask_pk, self.commitment, meta])

    @classmethod
    def from_bytes(cls, data: bytes, sender: int) -> Advert:
        """Parse and check sizes and weight; raise MessageRejectedError naming ``sender``."""
        enc_pk, mask_pk, commitment, meta = unpack_fields(data, 4)
        if len(enc_pk) != 32 or len(mask_pk) != 32 or len(commitment) != 32:
            raise MessageRejectedError(f"client {sender}: advertised keys must be 32 bytes each")
        if len(meta) != _ADVERT.size:
            raise MessageRejectedError(f"client {sender}: malformed advertised metadata")
        weight, dim = _ADVERT.unpack(meta)
        if not math.isfinite(weight) or weight <= 0:
            raise MessageRejectedError(f"client {sender}: advertised weight {weight} not > 0")
        return cls(enc_pk, mask_pk, commitment, weight, dim)


def share_plaintext(sender: int, recipient: int, index: int, b: bytes, m: bytes) -> bytes:
    """Plaintext of an encrypted share: who, to whom, Shamir index, both seed shares."""
    return _SHARE_HEAD.pack(sender, recipient, index) + b + m


def parse_share_plaintext(data: bytes, sender: int, recipient: int) -> tuple[int, bytes, bytes]:
    """Inverse of :func:`share_plaintext`; checks the addressing."""
    if len(data) != _SHARE_HEAD.size + 2 * SEED_SIZE:
        raise MessageRejectedError(f"share from client {sender} has a wrong length")
    s, r, index = _SHARE_HEAD.unpack_from(data)
    if (s, r) != (sender, recipient):
        raise MessageRejectedError(f"share from client {sender} is addressed {s}->{r}")
    body = data[_SHARE_HEAD.size :]
    return index, body[:SEED_SIZE], body[SEED_SIZE:]


def share_aad(round_id: int, sender: int, recipient: int) -> bytes:
    """Associated data binding an encrypted share to its round, sender and recipient."""
    return b"privfed-share" + struct.pack("<QII", round_id, sender, recipient)


def pack_addressed(items: dict[int, bytes]) -> bytes:
    """``{peer id: blob}`` -> bytes (peer id as a 4-byte prefix of each field)."""
    return pack_fields([_U32.pack(peer) + blob for peer, blob in sorted(items.items())])


def unpack_addressed(data: bytes, who: str) -> dict[int, bytes]:
    """Inverse of :func:`pack_addressed`; rejects duplicates."""
    out: dict[int, bytes] = {}
    for field in unpack_fields(data):
        if len(field) < _U32.size:
            raise MessageRejectedError(f"{who}: truncated addressed field")
        (peer,) = _U32.unpack_from(field)
        if peer in out:
            raise MessageRejectedError(f"{who}: two entries for client {peer}")
        out[peer] = field[_U32.size :]
    return out


def pack_reveals(reveals: dict[int, tuple[int, int, bytes]]) -> bytes:
    """``{owner: (SELF_MASK|KEY_SEED, index, share)}`` -> bytes."""
    return pack_fields(
        [_REVEAL_HEAD.pack(owner, kind, index) + share
         for owner, (kind, index, share) in sorted(reveals.items())]
    )


def unpack_reveals(data: bytes, sender: int) -> dict[int, tuple[int, int, bytes]]:
    """Inverse of :func:`pack_reveals`."""
    out = {}
    for field in unpack_fields(data):
        if len(field) != _REVEAL_HEAD.size + BLOCK:
            raise MessageRejectedError(f"client {sender}: malformed revealed share")
        owner, kind, index = _REVEAL_HEAD.unpack_from(field)
        if owner in out or kind not in (SELF_MASK, KEY_SEED):
            raise MessageRejectedError(f"client {sender}: duplicate or invalid share of {owner}")
        out[owner] = (kind, index, field[_REVEAL_HEAD.size :])
    return out
