"""Long-term Ed25519 identities that authenticate every client-to-server message.

A deployment runs a registration step (a PKI) in which each client generates an
:class:`ClientIdentity` and publishes its verification key; the server and the other clients
hold only the public :class:`IdentityRegistry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import AuthenticationError, InvalidInputError, MessageRejectedError

SIGNATURE_SIZE = 64
PRIVATE_KEY_SIZE = 32


class ClientIdentity:
    """A client's long-term signing key.

    A fresh key is generated on construction; :meth:`private_bytes` and
    :meth:`from_private_bytes` persist and restore it (e.g. between the processes that
    handle the stages of one round in a Flower deployment).

    Parameters
    ----------
    client_id : int
        The client's identifier, ``0 <= client_id < 2**32 - 1``.
    """

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self._key = Ed25519PrivateKey.generate()

    @classmethod
    def from_private_bytes(cls, client_id: int, raw: bytes) -> ClientIdentity:
        """Restore an identity from the key returned by :meth:`private_bytes`.

        Parameters
        ----------
        client_id : int
            The client's identifier.
        raw : bytes
            Raw 32-byte Ed25519 private key.

        Returns
        -------
        ClientIdentity
            An identity whose signatures verify under the original's :attr:`public_bytes`.

        Raises
        ------
        InvalidInputError
            If ``raw`` is not a 32-byte string.
        """
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise InvalidInputError(
                f"private key of client {client_id} must be bytes, got {type(raw).__name__}"
            )
        raw = bytes(raw)
        if len(raw) != PRIVATE_KEY_SIZE:
            raise InvalidInputError(
                f"private key of client {client_id} has {len(raw)} bytes, expected a raw "
                f"{PRIVATE_KEY_SIZE}-byte Ed25519 key"
            )
        identity = cls.__new__(cls)
        identity.client_id = client_id
        identity._key = Ed25519PrivateKey.from_private_bytes(raw)
        return identity

    def private_bytes(self) -> bytes:
        """Raw 32-byte Ed25519 private key (secret: store it confidentially).

        Returns
        -------
        bytes
            The key, restorable with :meth:`from_private_bytes`.
        """
        return self._key.private_bytes_raw()

    @property
    def public_bytes(self) -> bytes:
        """Raw 32-byte Ed25519 verification key."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``data``."""
        return self._key.sign(data)


@dataclass
class IdentityRegistry:
    """Public verification keys of the registered clients (client id -> raw Ed25519 key)."""

    keys: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def from_identities(cls, identities: Iterable[ClientIdentity]) -> IdentityRegistry:
        """Build the registry holding the public keys of ``identities``."""
        return cls({ident.client_id: ident.public_bytes for ident in identities})

    @classmethod
    def from_mapping(cls, keys: Mapping[int, bytes]) -> IdentityRegistry:
        """Build a registry from ``client id -> raw public key``."""
        return cls(dict(keys))

    def verify(self, client_id: int, signature: bytes, data: bytes) -> None:
        """Check ``signature`` of ``data`` by ``client_id``.

        Raises
        ------
        MessageRejectedError
            If ``client_id`` is not registered.
        AuthenticationError
            If the signature does not verify.
        """
        raw = self.keys.get(client_id)
        if raw is None:
            raise MessageRejectedError(f"message from unknown client {client_id}: not registered")
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
        except InvalidSignature:
            raise AuthenticationError(
                f"signature of client {client_id} does not verify: message tampered or forged"
            ) from None
