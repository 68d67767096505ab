"""Long-term Ed25519 identities that authenticate every client message.

Each client holds a :class:`ClientIdentity`; the parties hold the others' verification keys
as an :class:`IdentityRegistry`. Two ways to get the registry:

* **relayed by the server** (the default in simulations and Flower): each client registers
  its key with the server, which relays the registry. A server that substitutes keys at
  registration is then not detected: this trusts the server at registration.
* **pinned**: the sites exchange their keys out of band (as a hospital network exchanges
  certificates) in a file of ``client id -> Ed25519 public key``
  (:meth:`IdentityRegistry.from_file`); a party that holds pinned keys verifies every signed
  message against them, and :meth:`IdentityRegistry.check_relayed` detects a server that
  relays other keys.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from .errors import AuthenticationError, InvalidInputError, MessageRejectedError

SIGNATURE_SIZE = 64
PRIVATE_KEY_SIZE = 32
_ENTRY = struct.Struct("<I32s")  # client id | raw Ed25519 public key


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

    @classmethod
    def from_file(cls, client_id: int, path: str | os.PathLike) -> ClientIdentity:
        """Load an identity written by :meth:`to_file` (PEM, PKCS#8, unencrypted).

        Raises
        ------
        InvalidInputError
            Naming ``path`` when the file is missing or is not an Ed25519 private key.
        """
        try:
            key = load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"identity key file {str(path)!r}: expected an unencrypted PEM Ed25519 "
                f"private key ({exc})"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInputError(
                f"identity key file {str(path)!r} holds a {type(key).__name__}, expected an "
                "Ed25519 private key"
            )
        return cls.from_private_bytes(client_id, key.private_bytes_raw())

    def to_file(self, path: str | os.PathLike) -> None:
        """Write the private key as PEM (PKCS#8), readable by the owner only (mode 0600)."""
        pem = self._key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)

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

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> IdentityRegistry:
        """Load pinned keys: a JSON object ``{"<client id>": "<key>"}``.

        Each key is the raw 32-byte Ed25519 public key in hex (64 characters), or a PEM
        ``PUBLIC KEY`` block (SubjectPublicKeyInfo, as in an X.509 certificate).

        Raises
        ------
        InvalidInputError
            Naming the file and the entry that is not a client id or an Ed25519 key.
        """
        from .wire import MAX_CLIENT_ID  # wire imports this module

        where = f"pinned key file {str(path)!r}"
        try:
            entries = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{where}: expected a JSON object ({exc})") from None
        if not isinstance(entries, dict) or not entries:
            raise InvalidInputError(f"{where}: expected a non-empty JSON object "
                                    '{"<client id>": "<Ed25519 public key>"}')
        keys = {}
        for name, value in entries.items():
            if not (isinstance(name, str) and name.isdigit()) or int(name) > MAX_CLIENT_ID:
                raise InvalidInputError(
                    f"{where}: key {name!r} is not a client id (an int in 0..{MAX_CLIENT_ID})"
                )
            keys[int(name)] = _public_key_bytes(value, f"{where}, client {name}")
        return cls(keys)

    def to_file(self, path: str | os.PathLike) -> None:
        """Write the registry in the format :meth:`from_file` reads (hex keys)."""
        entries = {str(c): self.keys[c].hex() for c in sorted(self.keys)}
        Path(path).write_text(json.dumps(entries, indent=2) + "\n")

    def check_relayed(self, relayed: IdentityRegistry) -> None:
        """Check keys relayed by the server against these pinned keys.

        Raises
        ------
        AuthenticationError
            When the server relays, for a pinned client, another key (key substitution),
            or relays a key for a client that is not pinned.
        """
        for client_id, key in sorted(relayed.keys.items()):
            pinned = self.keys.get(client_id)
            if pinned is None:
                raise AuthenticationError(
                    f"the server relayed a key for client {client_id}, which is not among the "
                    "pinned keys"
                )
            if key != pinned:
                raise AuthenticationError(
                    f"key substitution: the server relayed for client {client_id} a key that "
                    "differs from its pinned key; aborting"
                )

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


def pack_registry(registry: IdentityRegistry) -> bytes:
    """``client id (uint32) + raw Ed25519 key (32 bytes)`` per client, by id."""
    return b"".join(_ENTRY.pack(client_id, registry.keys[client_id])
                    for client_id in sorted(registry.keys))


def unpack_registry(data: bytes) -> IdentityRegistry:
    """Inverse of :func:`pack_registry`.

    Raises
    ------
    MessageRejectedError
        When ``data`` is not a whole number of entries.
    """
    if len(data) % _ENTRY.size:
        raise MessageRejectedError(
            f"key registry of {len(data)} bytes is not a multiple of {_ENTRY.size}"
        )
    return IdentityRegistry.from_mapping(dict(_ENTRY.iter_unpack(data)))


def _public_key_bytes(value: object, where: str) -> bytes:
    """Raw 32-byte Ed25519 key from hex or a PEM public key; InvalidInputError naming ``where``."""
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(value.encode())
        except ValueError as exc:
            raise InvalidInputError(f"{where}: invalid PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidInputError(f"{where}: a {type(key).__name__}, expected Ed25519")
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInputError(
            f"{where}: expected 64 hex characters (a raw Ed25519 public key) or a PEM "
            f"PUBLIC KEY block, got {str(value)[:40]!r}"
        )
    return raw
