"""CKKS parameters, the public key material and the upload header."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import tenseal as ts

from privfed.secure.errors import InvalidInputError, MessageRejectedError
from privfed.secure.identity import SIGNATURE_SIZE, IdentityRegistry
from privfed.secure.wire import pack_fields, unpack_fields

KIND = "he"
FINGERPRINT_SIZE = 16
# Largest total coefficient modulus (bits) for 128-bit security (HomomorphicEncryption.org).
_MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
_U32 = struct.Struct("<I")
_PARAMS_HEAD = struct.Struct("<II")  # poly_modulus_degree | scale_bits
_UPLOAD_HEAD = struct.Struct(f"<{FINGERPRINT_SIZE}sdd")  # fingerprint | w_k | W
# Domain tag of the signed public context: its bytes start with pack_fields' count (3), never
# with a wire message's magic, so the signature cannot be passed off as any other message.
_PUBLIC_TAG = b"privfed.secure.he/public-context/v1"

@dataclass(frozen=True)
class HEParams:
    """CKKS parameters.

    The default is the cheapest 128-bit-secure choice for addition only: degree 8192 with
    moduli (60, 40), i.e. one 60-bit data prime (~32 bytes per parameter on the wire).

    Parameters
    ----------
    poly_modulus_degree : int
        Ring degree; one ciphertext holds ``poly_modulus_degree / 2`` values.
    coeff_mod_bit_sizes : tuple of int
        Prime sizes; the last is the special (key-switching) prime, at least two primes.
    scale_bits : int
        Fixed-point precision: values are encoded times ``2**scale_bits`` (absolute error
        ~ ``poly_modulus_degree / 2**scale_bits`` per coordinate).
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        n, bits = self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes)
        if n not in _MAX_COEFF_BITS:
            raise InvalidInputError(
                f"poly_modulus_degree={n}; allowed values: {tuple(_MAX_COEFF_BITS)}"
            )
        if len(bits) < 2 or sum(bits) > _MAX_COEFF_BITS[n] or not all(20 <= b <= 60 for b in bits):
            raise InvalidInputError(
                f"coeff_mod_bit_sizes={bits}: need >= 2 primes of 20..60 bits totalling "
                f"<= {_MAX_COEFF_BITS[n]} bits for 128-bit security at degree {n}"
            )
        if not 20 <= self.scale_bits <= bits[0] - 10:
            raise InvalidInputError(
                f"scale_bits={self.scale_bits}; allowed range 20..{bits[0] - 10} "
                f"(first prime {bits[0]} bits minus 10 bits of integer head-room)"
            )

    def to_bytes(self) -> bytes:
        """Serialize (e.g. the key holder's key-generation request)."""
        return pack_fields(self._fields())

    @classmethod
    def from_bytes(cls, data: bytes) -> HEParams:
        """Inverse of :meth:`to_bytes`.

        Raises
        ------
        MessageRejectedError
            Malformed, or parameters that :class:`HEParams` refuses (e.g. below 128-bit
            security).
        """
        try:
            return _params_from(*unpack_fields(data, 2))
        except InvalidInputError as exc:
            raise MessageRejectedError(f"CKKS parameters refused: {exc}") from None

    def _fields(self) -> list[bytes]:
        head = _PARAMS_HEAD.pack(self.poly_modulus_degree, self.scale_bits)
        return [head, bytes(self.coeff_mod_bit_sizes)]

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def max_abs(self) -> float:
        """Largest |value| a client may encrypt so that the sum does not wrap around."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 2))


def _params_from(head: bytes, bits: bytes) -> HEParams:
    """The :class:`HEParams` of :meth:`HEParams._fields`.

    Raises
    ------
    MessageRejectedError
        A head of the wrong size.
    InvalidInputError
        Parameters :class:`HEParams` refuses.
    """
    if len(head) != _PARAMS_HEAD.size:
        raise MessageRejectedError(f"CKKS parameters head of {len(head)} bytes")
    degree, scale_bits = _PARAMS_HEAD.unpack(head)
    return HEParams(degree, tuple(bits), scale_bits)


def _pack_material(params: HEParams, context: bytes) -> bytes:
    return pack_fields([*params._fields(), context])


def _unpack_material(data: bytes) -> tuple[HEParams, ts.Context]:
    head, bits, context = unpack_fields(data, 3)
    params = _params_from(head, bits)
    try:
        ctx = ts.context_from(context)
    except Exception as exc:
        raise MessageRejectedError(f"invalid TenSEAL context: {exc}") from None
    return params, ctx


def _pack_upload_head(fingerprint: bytes, weight: float, total: float) -> bytes:
    return _UPLOAD_HEAD.pack(fingerprint, weight, total)


def _unpack_upload_head(field: bytes, sender: int) -> tuple[bytes, float, float]:
    """``(fingerprint, w_k, W)`` of an upload's first field; finite weights ``0 < w_k <= W``."""
    if len(field) != _UPLOAD_HEAD.size:
        raise MessageRejectedError(
            f"client {sender}: upload head of {len(field)} bytes, expected {_UPLOAD_HEAD.size}"
        )
    fingerprint, weight, total = _UPLOAD_HEAD.unpack(field)
    if not (math.isfinite(weight) and math.isfinite(total) and 0 < weight <= total):
        raise MessageRejectedError(
            f"client {sender}: signed weight {weight!r} and total {total!r}; need 0 < w <= W"
        )
    return fingerprint, weight, total


class HEPublicContext:
    """Public CKKS key material: enough to encrypt and add, not to decrypt.

    Parameters
    ----------
    data : bytes
        Serialized public material from :meth:`HEKeyHolder.public_material`. Nothing proves
        whose it is: over a relay that could substitute it, use :meth:`from_signed`.
    """

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.params, self.context = _unpack_material(self.data)
        if self.context.has_secret_key():
            raise InvalidInputError("public material must not contain the secret key")
        self.fingerprint = hashlib.sha256(self.data).digest()[:FINGERPRINT_SIZE]

    @classmethod
    def from_signed(
        cls, data: bytes, registry: IdentityRegistry, key_holder: int
    ) -> HEPublicContext:
        """The public context from :meth:`HEKeyHolder.signed_public_material`, authenticated.

        Parameters
        ----------
        data : bytes
            Signed material as relayed (e.g. by the server).
        registry : IdentityRegistry
            Long-term verification keys; must hold the key holder's, authentic (pinned: a
            registry relayed by the server could carry a key of the server's own).
        key_holder : int
            Id of the identity that must have signed it.

        Raises
        ------
        MessageRejectedError
            Malformed, signed by another identity than ``key_holder``, key holder not
            registered, or the material holds a secret key.
        AuthenticationError
            The signature does not verify (e.g. a server-made key pair, or a genuine
            signature over substituted material).
        """
        data = bytes(data)
        if len(data) <= SIGNATURE_SIZE:
            raise MessageRejectedError(f"signed public context too short: {len(data)} bytes")
        body, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
        tag, signer, material = unpack_fields(body, 3)
        if tag != _PUBLIC_TAG or len(signer) != _U32.size:
            raise MessageRejectedError("not a signed CKKS public context")
        (signer_id,) = _U32.unpack(signer)
        if signer_id != key_holder:
            raise MessageRejectedError(
                f"public context signed by client {signer_id}, not by the key holder "
                f"{key_holder}"
            )
        registry.verify(key_holder, signature, body)
        try:
            return cls(material)
        except InvalidInputError as exc:  # e.g. the key holder published its secret key
            raise MessageRejectedError(f"signed public context refused: {exc}") from None
