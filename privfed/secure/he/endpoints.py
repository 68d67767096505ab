"""Client endpoints of the HE key set-up and of the key holder's decryption.

Stages (answered by the endpoint named):

* ``"he_keygen"`` (:class:`HEKeygenEndpoint`): the key holder receives the CKKS parameters
  (:meth:`HEParams.to_bytes`), generates the keys and answers its signed public context;
* ``"he_public"`` (:class:`HEPublicEndpoint`): every client receives
  ``pack_fields([signed public context, key holder id (<u4), packed registry])``, checks the
  signature and answers the context's fingerprint;
* ``"decrypt"`` (:class:`KeyHolderEndpoint`): the key holder receives the decrypt request
  (:func:`pack_decrypt_request`: the aggregate and, under the malicious server model, the
  accepted signed uploads) and answers the decoded mean (:func:`~privfed.secure.pack_decoded`).
"""

from __future__ import annotations

from collections.abc import Sequence

from privfed.secure.errors import InvalidInputError, MessageRejectedError
from privfed.secure.identity import (
    ClientIdentity,
    IdentityRegistry,
    pack_registry,
    unpack_registry,
)
from privfed.secure.payloads import pack_decoded
from privfed.secure.validation import check_clip
from privfed.secure.wire import (
    SERVER_ID,
    SERVER_MODELS,
    pack,
    pack_fields,
    unpack,
    unpack_fields,
)

from .key_holder import HEKeyHolder
from .material import _U32, KIND, HEParams, HEPublicContext

KEYGEN_STAGE = "he_keygen"
PUBLIC_STAGE = "he_public"
DECRYPT_STAGE = "decrypt"


def _check_stage(stage: str, expected: str, who: str) -> None:
    if stage != expected:
        raise MessageRejectedError(f"{who}: no stage {stage!r} (it answers {expected!r})")


def pack_decrypt_request(round_id: int, aggregate: bytes, uploads: Sequence[bytes]) -> bytes:
    """The key holder's request: the aggregate message and the signed uploads it claims to
    sum (none under the honest-but-curious server model)."""
    return pack(KIND, "decrypt", round_id, SERVER_ID, pack_fields([aggregate, *uploads]))


def open_decrypt_request(message: bytes) -> tuple[int, bytes, list[bytes]]:
    """Inverse of :func:`pack_decrypt_request`: ``(round_id, aggregate, uploads)``.

    Raises
    ------
    MessageRejectedError
        Not an HE decrypt request from the server, or no aggregate in it.
    """
    env = unpack(message)
    if env.kind != KIND or env.stage != "decrypt" or env.sender != SERVER_ID:
        raise MessageRejectedError(
            f"expected an HE decrypt request from the server, got a {env.kind!r} "
            f"{env.stage!r} message"
        )
    fields = unpack_fields(env.payload)
    if not fields:
        raise MessageRejectedError("decrypt request without an aggregate")
    return env.round_id, fields[0], fields[1:]


def pack_public(signed: bytes, key_holder: int, registry: IdentityRegistry) -> bytes:
    """The ``"he_public"`` message: the signed public context, its signer, the registry."""
    return pack_fields([signed, _U32.pack(key_holder), pack_registry(registry)])


class KeyHolderEndpoint:
    """The key holder's endpoint: checks the aggregate, decrypts the mean (stage ``"decrypt"``).

    Parameters
    ----------
    key_holder : HEKeyHolder
        The secret key; it decrypts at most one cohort per round.
    registry : IdentityRegistry
        The clients' verification keys, to check the uploads (pinned ones where possible).
    server_model : {"malicious", "honest-but-curious"}
        ``"malicious"``: the request must carry the signed uploads the aggregate sums, and is
        decrypted only if it is their sum. ``"honest-but-curious"``: it must carry the
        aggregate alone (see :meth:`HEKeyHolder.decode`). The key holder's own choice: never
        taken from the server's message.
    min_clients : int
        Decrypt only sums of at least this many clients.
    clip : float or None
        The clients' clip (``None``: the CKKS range limit).
    """

    def __init__(
        self,
        key_holder: HEKeyHolder,
        registry: IdentityRegistry,
        *,
        server_model: str = "malicious",
        min_clients: int = 2,
        clip: float | None = None,
    ) -> None:
        if server_model not in SERVER_MODELS:
            raise InvalidInputError(f"server_model={server_model!r}; allowed: {SERVER_MODELS}")
        self.key_holder = key_holder
        self.registry = registry
        self.server_model = server_model
        self.min_clients = min_clients
        self.clip = check_clip(clip)

    def respond(self, stage: str, message: bytes) -> bytes:
        """Answer a decrypt request with the decoded mean (:func:`~privfed.secure.pack_decoded`).

        Raises
        ------
        ThresholdError, ConsistencyError, AuthenticationError, MessageRejectedError
            As :meth:`HEKeyHolder.decode`; also uploads sent to an honest-but-curious key
            holder. Nothing is decrypted.
        """
        _check_stage(stage, DECRYPT_STAGE, "HE key holder")
        round_id, aggregate, uploads = open_decrypt_request(message)
        if self.server_model == "honest-but-curious" and uploads:
            raise MessageRejectedError(
                "decrypt request with uploads for an honest-but-curious key holder, which "
                "never holds an individual upload"
            )
        decoded = self.key_holder.decode(
            aggregate, round_id,
            uploads=uploads if self.server_model == "malicious" else None,
            registry=self.registry, min_clients=self.min_clients, clip=self.clip,
        )
        return pack_decoded(decoded)


class HEKeygenEndpoint:
    """The future key holder's endpoint of stage ``"he_keygen"``: makes the CKKS keys.

    Parameters
    ----------
    identity : ClientIdentity
        The key holder's long-term identity, which signs the public context.

    Attributes
    ----------
    key_holder : HEKeyHolder or None
        The keys made by :meth:`respond` (persist its ``secret_material()``).
    """

    def __init__(self, identity: ClientIdentity) -> None:
        self.identity = identity
        self.key_holder: HEKeyHolder | None = None

    def respond(self, stage: str, message: bytes) -> bytes:
        """Generate keys for the requested :class:`HEParams`; answer the signed public context.

        Raises
        ------
        MessageRejectedError
            Malformed or insecure parameters.
        """
        _check_stage(stage, KEYGEN_STAGE, "HE key generation")
        self.key_holder = HEKeyHolder(HEParams.from_bytes(message))
        return self.key_holder.signed_public_material(self.identity)


class HEPublicEndpoint:
    """Every client's endpoint of stage ``"he_public"``: keeps the key holder's context.

    Parameters
    ----------
    pinned : IdentityRegistry, optional
        Keys exchanged out of band. With them the relayed registry must agree
        (:meth:`IdentityRegistry.check_relayed`) and the signature is checked against them;
        without, against the relayed registry (trusting the server).

    Attributes
    ----------
    public : HEPublicContext or None
        The authenticated context, once :meth:`respond` accepted it.
    registry : IdentityRegistry or None
        The keys it was checked with (what a key holder checks uploads with later).
    """

    def __init__(self, pinned: IdentityRegistry | None = None) -> None:
        self.pinned = pinned
        self.public: HEPublicContext | None = None
        self.registry: IdentityRegistry | None = None

    def respond(self, stage: str, message: bytes) -> bytes:
        """Check the relayed context's signature by the key holder; answer its fingerprint.

        Raises
        ------
        AuthenticationError
            A bad signature, or a relayed registry that differs from the pinned keys.
        MessageRejectedError
            Malformed, or signed by another identity than the named key holder.
        """
        _check_stage(stage, PUBLIC_STAGE, "HE public context")
        signed, holder, relayed = unpack_fields(message, 3)
        if len(holder) != _U32.size:
            raise MessageRejectedError("malformed key holder id")
        registry = unpack_registry(relayed)
        if self.pinned is not None:
            self.pinned.check_relayed(registry)
            registry = self.pinned
        (key_holder,) = _U32.unpack(holder)
        self.public = HEPublicContext.from_signed(signed, registry, key_holder)
        self.registry = registry
        return self.public.fingerprint
