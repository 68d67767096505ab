"""How a driver reaches the clients: a :class:`Transport`, and the in-process one.

A driver (:func:`~privfed.secure.run_plain`, :func:`~privfed.secure.run_he`,
:func:`~privfed.secure.run_masking`) runs the server party and talks to the clients only
through :meth:`Transport.exchange`: one call per protocol stage, bytes out, bytes back. On a
client the message of a stage is answered by its :class:`ClientEndpoint` (e.g.
:class:`~privfed.secure.OneShotEndpoint`, :class:`~privfed.secure.MaskingEndpoint`), whether
it lives in this process (:class:`LocalTransport`) or on a remote node.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Protocol

from .errors import InvalidInputError, MessageRejectedError


class ClientEndpoint(Protocol):
    """The client side of a protocol: answers the server's message of each stage."""

    def respond(self, stage: str, message: bytes) -> bytes:
        """Return the client's reply to the server's ``message`` of ``stage``.

        Raises
        ------
        SecureAggregationError
            The client refuses (a malformed or lying message, too few peers, a bad input).
        """
        ...


class Transport(Protocol):
    """Carries one protocol stage's messages between the server and the clients."""

    def exchange(self, stage: str, outbox: Mapping[int, bytes]) -> dict[int, bytes]:
        """Send each addressed client its message of ``stage``; return the replies.

        Parameters
        ----------
        stage : str
            The protocol stage (e.g. ``"upload"``, ``"share"``, ``"decrypt"``).
        outbox : Mapping[int, bytes]
            Client id -> the server's message to it.

        Returns
        -------
        dict of int to bytes
            Client id -> reply, for the clients that answered. A client missing from it
            dropped, failed or was rejected by the transport; the driver carries on without
            it where the protocol allows.
        """
        ...


class StageRouter:
    """One client's endpoint that hands each stage to the endpoint serving it.

    E.g. an HE client that may be picked as the round's key holder:
    ``StageRouter({"upload": OneShotEndpoint(...), "decrypt": KeyHolderEndpoint(...)})``.

    Parameters
    ----------
    routes : Mapping[str, ClientEndpoint]
        Stage -> the endpoint that answers it.
    """

    def __init__(self, routes: Mapping[str, ClientEndpoint]) -> None:
        self.routes = dict(routes)

    def respond(self, stage: str, message: bytes) -> bytes:
        """Answer ``message`` with the endpoint of ``stage``.

        Raises
        ------
        MessageRejectedError
            No endpoint serves ``stage``.
        """
        if stage not in self.routes:
            raise MessageRejectedError(
                f"no endpoint for stage {stage!r}; served: {sorted(self.routes)}"
            )
        return self.routes[stage].respond(stage, message)


class LocalTransport:
    """The in-process transport: calls each client's endpoint directly.

    An endpoint that raises stops the round with its error (in-process every party is
    this program's, so a refusal is an error of the run, not a lost node).

    Parameters
    ----------
    endpoints : Mapping[int, ClientEndpoint]
        Client id -> its endpoint.
    dropouts : Mapping[str, Collection[int]], optional
        Stage -> clients that drop before replying to that stage (simulated: they get
        their message but never answer).

    Attributes
    ----------
    seconds : collections.defaultdict of str to float
        Wall time spent in the endpoints, per stage: the clients' time.
    """

    def __init__(
        self,
        endpoints: Mapping[int, ClientEndpoint],
        *,
        dropouts: Mapping[str, Collection[int]] | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        self.dropouts = {stage: frozenset(ids) for stage, ids in (dropouts or {}).items()}
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def exchange(self, stage: str, outbox: Mapping[int, bytes]) -> dict[int, bytes]:
        """Hand each addressed client's endpoint its message, in client order; return the
        replies of those that do not drop (see :meth:`Transport.exchange`).

        Raises
        ------
        InvalidInputError
            A client without an endpoint is addressed.
        """
        unknown = sorted(set(outbox) - set(self.endpoints))
        if unknown:
            raise InvalidInputError(f"stage {stage!r} addresses clients {unknown} without "
                                    "an endpoint")
        dropped = self.dropouts.get(stage, frozenset())
        replies = {}
        for client in sorted(outbox):
            if client in dropped:
                continue
            started = time.perf_counter()
            replies[client] = self.endpoints[client].respond(stage, outbox[client])
            self.seconds[stage] += time.perf_counter() - started
        return replies
