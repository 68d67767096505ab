"""The stage every driver runs: send a stage's messages, hand the replies to the server party.

The protocol drivers (:func:`~privfed.secure.run_plain`, :func:`~privfed.secure.run_he`,
:func:`~privfed.secure.run_masking`) are sequences of :func:`run_stage` calls and server-party
steps. A client whose reply is missing or rejected is dropped for the rest of the round,
with a warning; the protocol then finishes without it or raises
:class:`~privfed.secure.ThresholdError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .base import RoundMeter
from .errors import InvalidInputError, MessageRejectedError
from .transport import Transport
from .wire import sender_of

logger = logging.getLogger(__name__)

REJECTED = (MessageRejectedError, InvalidInputError)
"""Errors of a party refusing one client's message (authentication and consistency errors
included): the client is dropped, the round goes on."""


class ServerParty(Protocol):
    """A server party as a stage sees it: it checks and stores one client message at a time."""

    round_id: int

    def receive(self, message: bytes) -> int:
        """Check and store ``message``; return its sender (state unchanged if it raises)."""
        ...


def run_stage(
    transport: Transport,
    stage: str,
    outbox: Mapping[int, bytes],
    server: ServerParty,
    meter: RoundMeter,
    *,
    count_down: bool = True,
) -> list[int]:
    """Send each client in ``outbox`` its message of ``stage``; give the replies to ``server``.

    Every reply is counted in ``meter`` (and shown to its hook) exactly as received, before
    the server party checks it; the server's time counts as ``"aggregate"``.

    Parameters
    ----------
    transport : Transport
        Carries the messages.
    stage : str
        The stage (the clients' reply stage, e.g. ``"masked"``).
    outbox : Mapping[int, bytes]
        Client id -> the server's message to it.
    server : ServerParty
        Receives the replies.
    meter : RoundMeter
        The round's meter.
    count_down : bool
        Count the outgoing messages in ``bytes_down`` (off for the round request, which
        rides with the round's broadcast).

    Returns
    -------
    list of int
        The clients whose replies the server accepted, in client order.
    """
    if count_down:
        for client, message in outbox.items():
            meter.down(client, message)
    replies = transport.exchange(stage, outbox)
    missing = sorted(set(outbox) - set(replies))
    if missing:
        logger.warning("round %d, stage %s: no reply from client(s) %s; treated as dropped",
                       server.round_id, stage, missing)
    accepted = []
    for client in sorted(set(replies) & set(outbox)):
        message = meter.up(client, stage, replies[client])
        try:
            if sender_of(message) != client:
                raise MessageRejectedError(f"it carries client {sender_of(message)}'s message")
            with meter.timed("aggregate"):
                accepted.append(server.receive(message))
        except REJECTED as err:
            logger.warning("round %d, stage %s: client %d's message rejected: %s",
                           server.round_id, stage, client, err)
    return accepted
