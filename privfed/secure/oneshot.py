"""Parties and driver steps shared by the single-upload protocols (plain and HE).

The server requests an upload from every participant (a :class:`~privfed.secure.RoundRequest`,
answered by the client's :class:`OneShotEndpoint`); each client sends one message (signed,
except in the unprotected plain baseline); the server checks and adds them and keeps the
accepted messages (:meth:`OneShotServerParty.accepted_uploads`) so that a key holder can check the
aggregate against them (:func:`open_uploads`); the aggregate message is decoded by the server
itself (plain) or by a key holder (HE).
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from .base import DecodedAggregate, RoundMeter, SecureAggregator
from .driver import run_stage
from .errors import ConsistencyError, MessageRejectedError, ThresholdError
from .identity import IdentityRegistry
from .payloads import RoundRequest
from .transport import ClientEndpoint, LocalTransport, Transport
from .validation import check_round_id, check_weight
from .wire import (
    SERVER_ID,
    Envelope,
    expect,
    open_signed,
    open_unsigned,
    pack,
    pack_fields,
    pack_ids,
    unpack,
    unpack_fields,
    unpack_ids,
)

_F64 = struct.Struct("<d")
UPLOAD_STAGE = "upload"


class OneShotServerParty(ABC):
    """Server of a single-upload protocol for one round.

    Parameters
    ----------
    round_id : int
        The round this server object serves.
    weights : Mapping[int, float]
        Participants and their public weights; the announced total is their sum.
    registry : IdentityRegistry
        Verification keys of the clients.
    dim : int
        Vector length.
    """

    kind: str
    signed: bool = True
    """Whether client messages carry (and must carry) an Ed25519 signature."""
    keeps_uploads: bool = False
    """Whether the accepted messages are kept for a key holder (:meth:`accepted_uploads`);
    off where nobody checks them, so a plain server does not hold every update twice."""

    def __init__(
        self,
        round_id: int,
        weights: Mapping[int, float],
        registry: IdentityRegistry,
        dim: int,
    ) -> None:
        self.round_id = check_round_id(round_id)
        self.weights = {c: check_weight(w, c) for c, w in weights.items()}
        self.total_weight = sum(self.weights.values())
        self.registry = registry
        self.dim = dim
        self._received: dict[int, bytes] = {}  # sender -> message (b"" unless kept)

    @property
    def included(self) -> tuple[int, ...]:
        """Clients whose messages were accepted, sorted."""
        return tuple(sorted(self._received))

    def accepted_uploads(self) -> list[bytes]:
        """The accepted client messages, byte for byte as received, sorted by sender.

        A key holder checks the aggregate against them (see
        :meth:`privfed.secure.HEKeyHolder.decode`); any transport forwards them as they are.
        """
        if not self.keeps_uploads:
            raise MessageRejectedError(
                f"{type(self).__name__} does not keep the uploads (no key holder checks them)"
            )
        return [self._received[c] for c in self.included]

    def receive(self, message: bytes) -> int:
        """Check and add one client message; return the sender id.

        Raises
        ------
        MessageRejectedError
            Malformed, replayed, unknown or duplicate sender, wrong length/context.
        AuthenticationError
            Signature does not verify. In every case the server state is unchanged.
        """
        if self.signed:
            env = open_signed(
                message, self.registry, kind=self.kind, stage="upload",
                round_id=self.round_id, allowed=self.weights,
            )
        else:
            env = open_unsigned(
                message, kind=self.kind, stage="upload", round_id=self.round_id,
                allowed=self.weights,
            )
        if env.sender in self._received:
            raise MessageRejectedError(
                f"duplicate message from client {env.sender} in round {self.round_id}"
            )
        parsed = self._parse(env.sender, env.payload)
        self._add(parsed)
        self._received[env.sender] = bytes(message) if self.keeps_uploads else b""
        return env.sender

    def aggregate(self) -> bytes:
        """Return the aggregate message for the key holders.

        Raises
        ------
        ThresholdError
            If no client message was accepted.
        """
        if not self._received:
            raise ThresholdError(f"round {self.round_id}: no client message to aggregate")
        included = self.included
        head = [
            pack_ids(included),
            _F64.pack(sum(self.weights[c] for c in included)),
            _F64.pack(self.total_weight),
        ]
        payload = pack_fields(head + self._aggregate_fields())
        return pack(self.kind, "aggregate", self.round_id, SERVER_ID, payload)

    @abstractmethod
    def _parse(self, sender: int, payload: bytes) -> Any:
        """Validate a payload without changing state; raise MessageRejectedError if bad."""

    @abstractmethod
    def _add(self, parsed: Any) -> None:
        """Add a validated payload to the running sum."""

    @abstractmethod
    def _aggregate_fields(self) -> list[bytes]:
        """Serialized running sum."""


def open_aggregate(
    message: bytes, kind: str, round_id: int
) -> tuple[tuple[int, ...], float, float, list[bytes]]:
    """Parse an aggregate message.

    Returns
    -------
    included, included_weight, announced_total, body_fields
    """
    env = unpack(message)
    expect(env, kind=kind, stage="aggregate", round_id=round_id)
    fields = unpack_fields(env.payload)
    if len(fields) < 3:
        raise MessageRejectedError("aggregate message lacks its header fields")
    included = unpack_ids(fields[0])
    (w_incl,) = _F64.unpack(fields[1])
    (total,) = _F64.unpack(fields[2])
    return included, w_incl, total, fields[3:]


def open_uploads(
    uploads: Sequence[bytes], registry: IdentityRegistry, *, kind: str, round_id: int
) -> list[Envelope]:
    """Authenticate the signed uploads a server says it summed; return them sorted by sender.

    Each must carry a valid signature of a registered client over its header (kind, stage
    ``"upload"``, round, sender) and payload, and no sender may appear twice.

    Raises
    ------
    AuthenticationError
        A signature does not verify (forged, tampered or relabelled for another sender).
    MessageRejectedError
        Malformed, another kind or stage, another round (replay), unregistered sender.
    ConsistencyError
        Two uploads from one sender.
    """
    envs: dict[int, Envelope] = {}
    for data in uploads:
        env = open_signed(bytes(data), registry, kind=kind, stage="upload",
                          round_id=round_id, allowed=registry.keys)
        if env.sender in envs:
            raise ConsistencyError(
                f"round {round_id}: two uploads from client {env.sender} were forwarded"
            )
        envs[env.sender] = env
    return [envs[c] for c in sorted(envs)]


class OneShotClientParty(Protocol):
    """A single-upload client party (:class:`~privfed.secure.PlainClientParty`,
    :class:`~privfed.secure.HEClientParty`)."""

    kind: str

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """The client's upload message."""
        ...


class OneShotEndpoint:
    """Client endpoint of a single-upload protocol: answers the round request with the upload.

    Parameters
    ----------
    party : OneShotClientParty
        The client party (e.g. :class:`~privfed.secure.PlainClientParty`).
    vector : array_like
        The client's flat update.
    """

    def __init__(self, party: OneShotClientParty, vector: Any) -> None:
        self.party = party
        self.vector = vector

    def respond(self, stage: str, message: bytes) -> bytes:
        """Answer the :class:`~privfed.secure.RoundRequest` of stage ``"upload"``.

        Raises
        ------
        MessageRejectedError
            Another stage, a malformed request, or a request for another vector length.
        InvalidInputError
            The party refuses the vector or the weights (see its ``encode``).
        """
        if stage != UPLOAD_STAGE:
            raise MessageRejectedError(f"{self.party.kind!r} client: no stage {stage!r}")
        request = RoundRequest.from_bytes(message, self.party.kind)
        size = np.asarray(self.vector).size
        if request.dim != size:
            raise MessageRejectedError(
                f"round {request.round_id}: the server expects {request.dim} values, this "
                f"client has {size}"
            )
        return self.party.encode(request.round_id, self.vector, request.weight,
                                 request.total_weight)


def collect_uploads(transport: Transport, server: OneShotServerParty, meter: RoundMeter) -> bytes:
    """Request every participant's upload, hand the replies to ``server``; its aggregate.

    Raises
    ------
    ThresholdError
        No upload was accepted.
    """
    with meter.timed("aggregate"):
        requests = {
            c: RoundRequest(server.round_id, w, server.total_weight, server.dim).to_bytes(
                server.kind)
            for c, w in server.weights.items()
        }
    run_stage(transport, UPLOAD_STAGE, requests, server, meter, count_down=False)
    with meter.timed("aggregate"):
        return server.aggregate()


ServerT = TypeVar("ServerT", bound=OneShotServerParty)


class OneShotAggregator(SecureAggregator, Generic[ServerT]):
    """In-process single-upload protocol: the clients' endpoints over a
    :class:`~privfed.secure.LocalTransport`, the stage ``"upload"`` (the one a client can drop
    before) and the protocol's driver (:meth:`_drive`).
    """

    stages = (UPLOAD_STAGE,)

    @abstractmethod
    def _client(self, client_id: int) -> OneShotClientParty:
        """Client party of ``client_id``."""

    @abstractmethod
    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> ServerT:
        """Server party of the round."""

    @abstractmethod
    def _drive(
        self, transport: Transport, server: ServerT, meter: RoundMeter
    ) -> DecodedAggregate:
        """Run the protocol's driver."""

    def _endpoints(self, vectors: dict[int, np.ndarray]) -> dict[int, ClientEndpoint]:
        """Each client's endpoint."""
        return {c: OneShotEndpoint(self._client(c), v) for c, v in vectors.items()}

    def _run(
        self,
        round_id: int,
        vectors: dict[int, np.ndarray],
        weights: dict[int, float],
        dropouts: dict[str, frozenset[int]],
        meter: RoundMeter,
    ) -> DecodedAggregate:
        dim = next(iter(vectors.values())).size
        server = self._server(round_id, weights, dim)
        transport = LocalTransport(self._endpoints(vectors), dropouts=dropouts)
        decoded = self._drive(transport, server, meter)
        meter.seconds["encode"] += transport.seconds[UPLOAD_STAGE]
        return decoded
