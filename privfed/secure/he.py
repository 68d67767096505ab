"""Additively homomorphic aggregation with TenSEAL CKKS.

Trust model
-----------
All key holders share ONE CKKS secret key. By default the key holders are the clients
themselves (a key authority can play the role instead, see :class:`HEKeyHolder`). The server
receives only a public context (public key, no secret key) and adds ciphertexts; it cannot
decrypt. But a single key holder colluding with the server can decrypt every client's
ciphertext: HE protects against an honest-but-curious server, not against server-client
collusion (use :mod:`privfed.secure.masking` for that).

Each client pre-weights its vector by ``w_k / W`` (``W`` the announced total of the public
weights) so the server only adds ciphertexts; long vectors are packed into as many
ciphertexts of ``poly_modulus_degree / 2`` slots as needed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from .base import DecodedAggregate
from .errors import InvalidInputError, MessageRejectedError, ThresholdError
from .identity import ClientIdentity
from .oneshot import OneShotAggregator, OneShotServer, open_aggregate
from .validation import prepare_upload, prepare_vector
from .wire import pack_fields, seal, unpack_fields

KIND = "he"
FINGERPRINT_SIZE = 16
# Largest total coefficient modulus (bits) for 128-bit security (HomomorphicEncryption.org).
_MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
_U32 = struct.Struct("<I")


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

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def max_abs(self) -> float:
        """Largest |value| a client may encrypt so that the sum does not wrap around."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 2))


def _pack_material(params: HEParams, context: bytes) -> bytes:
    head = struct.pack("<II", params.poly_modulus_degree, params.scale_bits)
    bits = bytes(params.coeff_mod_bit_sizes)
    return pack_fields([head, bits, context])


def _unpack_material(data: bytes) -> tuple[HEParams, ts.Context]:
    head, bits, context = unpack_fields(data, 3)
    degree, scale_bits = struct.unpack("<II", head)
    params = HEParams(degree, tuple(bits), scale_bits)
    try:
        ctx = ts.context_from(context)
    except Exception as exc:
        raise MessageRejectedError(f"invalid TenSEAL context: {exc}") from None
    return params, ctx


class HEPublicContext:
    """Public CKKS key material: enough to encrypt and add, not to decrypt.

    Parameters
    ----------
    data : bytes
        Serialized public material from :meth:`HEKeyHolder.public_material`.
    """

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.params, self.context = _unpack_material(self.data)
        if self.context.has_secret_key():
            raise InvalidInputError("public material must not contain the secret key")
        self.fingerprint = hashlib.sha256(self.data).digest()[:FINGERPRINT_SIZE]


class HEKeyHolder:
    """Holder of the CKKS secret key: generates keys and decodes the aggregate.

    Parameters
    ----------
    params : HEParams, optional
        CKKS parameters (ignored with ``secret_material``).
    secret_material : bytes, optional
        Output of :meth:`secret_material` of another key holder, to share its key.
    """

    def __init__(self, params: HEParams | None = None, *, secret_material: bytes | None = None):
        if secret_material is not None:
            self.params, self._context = _unpack_material(secret_material)
            if not self._context.has_secret_key():
                raise InvalidInputError("secret_material holds no secret key")
        else:
            self.params = params or HEParams()
            self._context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                self.params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(self.params.coeff_mod_bit_sizes),
            )
        self._context.global_scale = 2.0**self.params.scale_bits
        public = self._context.serialize(
            save_public_key=True, save_secret_key=False,
            save_galois_keys=False, save_relin_keys=False,
        )
        self.public = HEPublicContext(_pack_material(self.params, public))

    def public_material(self) -> bytes:
        """Serialized public context (no secret key) for clients and the server."""
        return self.public.data

    def secret_material(self) -> bytes:
        """Serialized context WITH the secret key, to share with other key holders only."""
        secret = self._context.serialize(
            save_public_key=True, save_secret_key=True,
            save_galois_keys=False, save_relin_keys=False,
        )
        return _pack_material(self.params, secret)

    def decode(self, message: bytes, round_id: int, *, min_clients: int = 1) -> DecodedAggregate:
        """Decrypt an aggregate message into the weighted mean.

        Parameters
        ----------
        message : bytes
        round_id : int
        min_clients : int
            Refuse to decrypt an aggregate that claims fewer included clients (e.g.
            distributed DP's K_min). The count is the server's claim: this holds against a
            server that follows the protocol (HE's threat model), not one that frames a
            single upload as an aggregate.

        Raises
        ------
        MessageRejectedError
            Wrong round/kind, malformed, or encrypted under another context.
        ThresholdError
            Fewer than ``min_clients`` clients in the aggregate.
        """
        included, w_incl, total, fields = open_aggregate(message, KIND, round_id)
        if len(included) < min_clients:
            raise ThresholdError(
                f"round {round_id}: the aggregate holds {len(included)} clients, fewer than "
                f"min_clients = {min_clients}; not decrypting it"
            )
        if not fields or fields[0] != self.public.fingerprint:
            raise MessageRejectedError("aggregate is not under this key holder's context")
        parts = []
        for ct in fields[1:]:
            try:
                parts.append(ts.ckks_vector_from(self._context, ct).decrypt())
            except Exception as exc:
                raise MessageRejectedError(f"aggregate ciphertext invalid: {exc}") from None
        weighted = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
        return DecodedAggregate(weighted * (total / w_incl), w_incl, included)


class HEClient:
    """Client of the HE protocol: encrypts ``(w_k / W) * x`` with the public key.

    Parameters
    ----------
    identity : ClientIdentity
        Signing identity of the client.
    public : HEPublicContext
        Public key material of the key holders.
    clip : float or None
        Maximum absolute value per coordinate (``None``: only the CKKS range limit).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates or raise.
    """

    def __init__(
        self,
        identity: ClientIdentity,
        public: HEPublicContext,
        *,
        clip: float | None = None,
        out_of_range: str = "error",
    ) -> None:
        self.identity = identity
        self.public = public
        limit = public.params.max_abs
        if clip is not None and clip > limit:
            raise InvalidInputError(f"clip={clip:g} exceeds the CKKS range limit {limit:g}")
        self.clip = clip
        self.out_of_range = out_of_range

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """Return the signed upload: fingerprint and ciphertexts of ``weight/total * vector``."""
        x, share = prepare_upload(round_id, vector, weight, total_weight, clip=self.clip,
                                  out_of_range=self.out_of_range,
                                  client_id=self.identity.client_id)
        if self.clip is None:
            prepare_vector(x, None, clip=self.public.params.max_abs, out_of_range="error",
                           client_id=self.identity.client_id)
        x *= share
        slots = self.public.params.slots
        cts = [
            ts.ckks_vector(self.public.context, x[i : i + slots].tolist()).serialize()
            for i in range(0, x.size, slots)
        ]
        payload = pack_fields([self.public.fingerprint, *cts])
        return seal(self.identity, KIND, "upload", round_id, payload)


class HEServer(OneShotServer):
    """Server of the HE protocol: adds ciphertexts under a public context (cannot decrypt).

    Parameters
    ----------
    round_id, weights, registry, dim
        See :class:`~privfed.secure.oneshot.OneShotServer`.
    public : HEPublicContext
        Public key material; it holds no secret key.
    """

    kind = KIND

    def __init__(self, *args: Any, public: HEPublicContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.public = public
        slots = public.params.slots
        self._sizes = [min(slots, self.dim - i) for i in range(0, self.dim, slots)]
        self._sum: list[ts.CKKSVector] | None = None

    def _parse(self, sender: int, payload: bytes) -> list[ts.CKKSVector]:
        fields = unpack_fields(payload)
        if not fields or fields[0] != self.public.fingerprint:
            raise MessageRejectedError(
                f"client {sender}: ciphertexts under a different context (fingerprint "
                f"{fields[0].hex() if fields else None}, expected {self.public.fingerprint.hex()})"
            )
        if len(fields) - 1 != len(self._sizes):
            raise MessageRejectedError(
                f"client {sender}: {len(fields) - 1} ciphertexts, expected {len(self._sizes)} "
                f"for a vector of length {self.dim}"
            )
        vecs = []
        for i, (ct, size) in enumerate(zip(fields[1:], self._sizes, strict=True)):
            try:
                vec = ts.ckks_vector_from(self.public.context, ct)
            except Exception as exc:
                raise MessageRejectedError(
                    f"client {sender}: ciphertext {i} invalid: {exc}"
                ) from None
            if vec.size() != size:
                raise MessageRejectedError(
                    f"client {sender}: ciphertext {i} holds {vec.size()} values, expected {size}"
                )
            vecs.append(vec)
        return vecs

    def _add(self, parsed: list[ts.CKKSVector]) -> None:
        if self._sum is None:
            self._sum = parsed
        else:
            for acc, vec in zip(self._sum, parsed, strict=True):
                acc.add_(vec)

    def _aggregate_fields(self) -> list[bytes]:
        assert self._sum is not None
        return [self.public.fingerprint, *(v.serialize() for v in self._sum)]


class HEAggregator(OneShotAggregator):
    """CKKS secure aggregation; the server only adds ciphertexts.

    Key material is generated once (at construction) and reused across rounds. The clients
    are the key holders: the aggregate ciphertext is sent back to each included client
    (counted in ``bytes_down``), who decrypts it.

    Parameters
    ----------
    poly_modulus_degree, coeff_mod_bit_sizes, scale_bits
        See :class:`HEParams`.
    clip : float or None
        Maximum absolute value per coordinate.
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector.
    key_holder : HEKeyHolder, optional
        Existing key material to use instead of generating a new key.
    min_clients : int
        The key holders decrypt only aggregates of at least this many clients.
    """

    kind = KIND
    broadcast_aggregate = True

    def __init__(
        self,
        *,
        poly_modulus_degree: int = 8192,
        coeff_mod_bit_sizes: tuple[int, ...] = (60, 40),
        scale_bits: int = 40,
        clip: float | None = None,
        out_of_range: str = "error",
        key_holder: HEKeyHolder | None = None,
        min_clients: int = 1,
    ) -> None:
        super().__init__(clip=clip, out_of_range=out_of_range)
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 1:
            raise InvalidInputError(f"min_clients={min_clients!r}; allowed: an int >= 1")
        self.min_clients = min_clients
        params = HEParams(poly_modulus_degree, tuple(coeff_mod_bit_sizes), scale_bits)
        self.key_holder = key_holder or HEKeyHolder(params)
        self.public = HEPublicContext(self.key_holder.public_material())
        if self.clip is not None and self.clip > self.public.params.max_abs:
            raise InvalidInputError(
                f"clip={self.clip:g} exceeds the CKKS range limit {self.public.params.max_abs:g}"
            )

    def _client(self, client_id: int) -> HEClient:
        return HEClient(
            self.identity(client_id), self.public, clip=self.clip, out_of_range=self.out_of_range
        )

    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> HEServer:
        return HEServer(round_id, weights, self.registry, dim, public=self.public)

    def _decode(self, message: bytes, round_id: int) -> DecodedAggregate:
        return self.key_holder.decode(message, round_id, min_clients=self.min_clients)
