"""Parties and driver shared by the single-upload protocols (plain and HE).

Each client sends one message (signed, except in the unprotected plain baseline); the server
checks and adds them and keeps the accepted messages (:meth:`OneShotServer.accepted_uploads`)
so that a key holder can check the aggregate against them (:func:`open_uploads`); the
aggregate message is decoded by the server itself (plain) or by a key holder (HE).
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import Aggregator, DecodedAggregate, RoundMeter
from .errors import ConsistencyError, MessageRejectedError, ThresholdError
from .identity import IdentityRegistry
from .validation import check_round_id, check_weight
from .wire import (
    SERVER_ID,
    Envelope,
    expect,
    open_signed,
    open_unsigned,
    pack,
    pack_fields,
    unpack,
    unpack_fields,
)

_F64 = struct.Struct("<d")


def pack_ids(ids: tuple[int, ...]) -> bytes:
    """Encode client ids as little-endian uint32."""
    return np.asarray(ids, dtype="<u4").tobytes()


def unpack_ids(data: bytes) -> tuple[int, ...]:
    """Inverse of :func:`pack_ids`."""
    if len(data) % 4:
        raise MessageRejectedError(f"id list of {len(data)} bytes is not a multiple of 4")
    return tuple(int(i) for i in np.frombuffer(data, dtype="<u4"))


class OneShotServer(ABC):
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


class OneShotAggregator(Aggregator):
    """Driver for single-upload protocols; the stage a client can drop before is ``"upload"``.

    Subclasses build the parties (:meth:`_client`, :meth:`_server`) and either decode the
    aggregate where it is (:meth:`_decode`, plain sums: no key holder) or override
    :meth:`_release` to hand it to a key holder, counting the bytes it receives.
    """

    stages = ("upload",)

    @abstractmethod
    def _client(self, client_id: int) -> Any:
        """Client party with an ``encode(round_id, vector, weight, total_weight)`` method."""

    @abstractmethod
    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> OneShotServer:
        """Server party of the round."""

    def _decode(self, message: bytes, round_id: int) -> DecodedAggregate:
        """Decode a plain aggregate message where it is (used by the default :meth:`_release`)."""
        raise NotImplementedError(f"{type(self).__name__} must define _decode or _release")

    def _release(
        self, server: OneShotServer, message: bytes, round_id: int, meter: RoundMeter
    ) -> DecodedAggregate:
        """Turn the aggregate message into the mean; default: decoded by the server itself."""
        with meter.timed("decode"):
            return self._decode(message, round_id)

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
        dropped = dropouts.get("upload", frozenset())
        for c in sorted(vectors):
            if c in dropped:
                continue
            client = self._client(c)
            with meter.timed("encode"):
                msg = client.encode(round_id, vectors[c], weights[c], server.total_weight)
            meter.up(c, "upload", msg)
            with meter.timed("aggregate"):
                server.receive(msg)
        with meter.timed("aggregate"):
            agg = server.aggregate()
        return self._release(server, agg, round_id, meter)
