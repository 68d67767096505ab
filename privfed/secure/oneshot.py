"""Parties and driver shared by the single-upload protocols (plain and HE).

Each client sends one message (signed, except in the unprotected plain baseline); the server
checks and adds them; the key holder decodes the aggregate message.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Aggregator, DecodedAggregate, RoundMeter
from .errors import MessageRejectedError, ThresholdError
from .identity import IdentityRegistry
from .validation import check_round_id, check_weight
from .wire import (
    SERVER_ID,
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
        self._received: list[int] = []

    @property
    def included(self) -> tuple[int, ...]:
        """Clients whose messages were accepted, sorted."""
        return tuple(sorted(self._received))

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
        self._received.append(env.sender)
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


class OneShotAggregator(Aggregator):
    """Driver for single-upload protocols; the stage a client can drop before is ``"upload"``."""

    stages = ("upload",)
    broadcast_aggregate: bool = False

    @abstractmethod
    def _client(self, client_id: int) -> Any:
        """Client party with an ``encode(round_id, vector, weight, total_weight)`` method."""

    @abstractmethod
    def _server(self, round_id: int, weights: dict[int, float], dim: int) -> OneShotServer:
        """Server party of the round."""

    @abstractmethod
    def _decode(self, message: bytes, round_id: int) -> DecodedAggregate:
        """Key-holder decoding of the aggregate message."""

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
        if self.broadcast_aggregate:
            for c in server.included:
                meter.down(c, agg)
        with meter.timed("decode"):
            return self._decode(agg, round_id)
