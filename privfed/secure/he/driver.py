"""Drivers of the HE protocol over a transport: the key set-up and one round."""

from __future__ import annotations

import logging
from collections.abc import Collection

from privfed.secure.base import DecodedAggregate, RoundMeter
from privfed.secure.errors import InvalidInputError, MessageRejectedError, ThresholdError
from privfed.secure.identity import IdentityRegistry
from privfed.secure.oneshot import collect_uploads
from privfed.secure.payloads import unpack_decoded
from privfed.secure.transport import Transport
from privfed.secure.wire import SERVER_MODELS

from .endpoints import DECRYPT_STAGE, KEYGEN_STAGE, PUBLIC_STAGE, pack_decrypt_request, pack_public
from .material import HEParams, HEPublicContext
from .parties import HEServerParty

logger = logging.getLogger(__name__)


def set_up_he(
    transport: Transport,
    params: HEParams,
    registry: IdentityRegistry,
    clients: Collection[int],
    *,
    key_holder: int,
) -> HEPublicContext:
    """Have ``key_holder`` make the CKKS keys and give every client its signed public context.

    Stage ``"he_keygen"`` asks the key holder (e.g. a :class:`HEKeygenEndpoint`) for keys of
    ``params``; its signed public context is checked against ``registry``, then relayed to
    ``clients`` in stage ``"he_public"`` (e.g. :class:`HEPublicEndpoint`), each answering the
    fingerprint of the context it accepted. Clients that do not are logged (they cannot
    upload until set up again).

    Parameters
    ----------
    transport : Transport
        Reaches the clients.
    params : HEParams
        The CKKS parameters to generate keys for.
    registry : IdentityRegistry
        The clients' verification keys, as the server holds them (relayed to the clients).
    clients : Collection[int]
        The clients to set up.
    key_holder : int
        The client that generates and keeps the secret key.

    Returns
    -------
    HEPublicContext
        The key holder's public context (what the server builds each :class:`HEServerParty` with).

    Raises
    ------
    ThresholdError
        The key holder did not answer.
    AuthenticationError, MessageRejectedError
        Its answer is not a context signed by it, or is for other parameters.
    """
    reply = transport.exchange(KEYGEN_STAGE, {key_holder: params.to_bytes()})
    if key_holder not in reply:
        raise ThresholdError(f"the CKKS key holder (client {key_holder}) did not answer")
    signed = reply[key_holder]
    public = HEPublicContext.from_signed(signed, registry, key_holder)
    if public.params != params:
        raise MessageRejectedError(
            f"the key holder made keys for {public.params}, not the requested {params}"
        )
    message = pack_public(signed, key_holder, registry)
    answers = transport.exchange(PUBLIC_STAGE, dict.fromkeys(clients, message))
    refused = sorted(c for c in clients if answers.get(c) != public.fingerprint)
    if refused:
        logger.warning("clients %s did not store the CKKS public context", refused)
    return public


def run_he(
    transport: Transport,
    server: HEServerParty,
    meter: RoundMeter,
    *,
    key_holder: int | None = None,
    server_model: str = "malicious",
) -> DecodedAggregate:
    """Driver of one HE round: request the uploads, add them, have the key holder decrypt.

    The key holder gets stage ``"decrypt"`` (:func:`pack_decrypt_request`: the aggregate
    and, under the malicious server model, the accepted signed uploads; counted in its
    ``bytes_down`` when it is a client of the round) over the same transport and answers the
    decoded mean (:func:`~privfed.secure.pack_decoded`); its time counts as ``"decode"``.

    Parameters
    ----------
    transport : Transport
        Reaches the clients; each answers stage ``"upload"`` (a
        :class:`~privfed.secure.RoundRequest`), e.g. through a
        :class:`~privfed.secure.OneShotEndpoint` over an :class:`HEClientParty`; the key holder
        answers ``"decrypt"`` (e.g. :class:`KeyHolderEndpoint`).
    server : HEServerParty
        The round's server party; its ``weights`` name the participants.
    meter : RoundMeter
        Counts the bytes and times.
    key_holder : int, optional
        The client holding the secret key (default: the included client with the smallest
        id, all clients being key holders).
    server_model : {"malicious", "honest-but-curious"}
        Send the key holder the signed uploads, or the aggregate alone.

    Returns
    -------
    DecodedAggregate

    Raises
    ------
    ThresholdError
        No upload accepted, or the key holder did not answer with the decryption of this
        aggregate.
    """
    if server_model not in SERVER_MODELS:
        raise InvalidInputError(f"server_model={server_model!r}; allowed: {SERVER_MODELS}")
    aggregate = collect_uploads(transport, server, meter)
    holder = server.included[0] if key_holder is None else key_holder
    uploads = server.accepted_uploads() if server_model == "malicious" else []
    request = pack_decrypt_request(server.round_id, aggregate, uploads)
    if holder in meter.bytes_down:
        meter.down(holder, request)
    with meter.timed("decode"):
        reply = transport.exchange(DECRYPT_STAGE, {holder: request}).get(holder)
        return _decrypted(reply, server, holder)


def _decrypted(reply: bytes | None, server: HEServerParty, holder: int) -> DecodedAggregate:
    """The key holder's decoded mean, if it is the one of ``server``'s aggregate."""
    why = "no reply"
    if reply is not None:
        try:
            decoded = unpack_decoded(reply)
        except MessageRejectedError as err:
            why = str(err)
        else:
            if decoded.included == server.included and decoded.mean.size == server.dim:
                return decoded
            why = f"it decoded {decoded.mean.size} values of clients {list(decoded.included)}"
    raise ThresholdError(
        f"round {server.round_id}: the CKKS key holder (client {holder}) did not decrypt the "
        f"aggregate of clients {list(server.included)}: {why}"
    )
