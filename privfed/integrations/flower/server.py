"""privfed's server driving its rounds over a Flower Grid (simulation or deployment).

:class:`FlowerServer` is privfed's :class:`~privfed.federated.Server` (same sampling, server
optimizer, central-DP finalisation, evaluation, history and observers) in which a round's
training and aggregation are Flower messages to the SuperNodes instead of in-process calls.
The secure-aggregation parties are privfed's own (:mod:`privfed.secure`); only their bytes
travel through the SuperLink.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from privfed.config import ConfigError
from privfed.federated import ClientUpdate, Server
from privfed.secure import AggregationResult, DecodedAggregate
from privfed.secure.base import RoundMeter
from privfed.secure.errors import (
    AuthenticationError,
    InvalidInputError,
    MessageRejectedError,
    ThresholdError,
)
from privfed.secure.he import HEPublicContext, HEServer
from privfed.secure.masking import MaskingServer, decode_masking
from privfed.secure.plain import PlainServer, decode_plain

from . import messages
from .registry import NodeDirectory, pack_registry

__all__ = ["HE_KEY_HOLDER", "FlowerOptions", "FlowerServer"]

HE_KEY_HOLDER = 0
"""The client whose SuperNode generates the CKKS keys and decrypts the aggregates."""

logger = logging.getLogger(__name__)
_REJECTED = (MessageRejectedError, AuthenticationError, InvalidInputError)


@dataclass(frozen=True)
class FlowerOptions:
    """How the ServerApp talks to the SuperNodes.

    Attributes
    ----------
    stage_timeout : float
        Seconds to wait for the replies of one protocol stage; a node that has not answered
        by then is treated as dropped for the round.
    connect_timeout : float
        Seconds to wait for ``data.num_clients`` SuperNodes to connect.
    """

    stage_timeout: float = 300.0
    connect_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("stage_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"flower {name} must be > 0 seconds, got {getattr(self, name)}")


class FlowerServer(Server):
    """A :class:`~privfed.federated.Server` whose clients are Flower SuperNodes.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~privfed.federated.Server`; its clients are used only for their
        number (each SuperNode loads its own partition).
    grid : flwr.serverapp.Grid
        The ServerApp's grid.
    options : FlowerOptions
    """

    def __init__(self, *args: Any, grid: Grid, options: FlowerOptions, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grid = grid
        self.options = options
        self.directory = NodeDirectory()
        self.he_public: HEPublicContext | None = None
        self.kind = self.aggregator.kind
        if self.kind not in ("none", "he", "masking"):
            raise ConfigError(
                f"the Flower engines support secure.kind 'none', 'he' and 'masking' without "
                f"compression; got aggregator {self.kind!r}"
            )

    # ------------------------------------------------------------------ set-up
    def connect(self) -> None:
        """Wait for the SuperNodes, learn which client each is, and set up CKKS keys.

        Raises
        ------
        ConfigError
            Too few SuperNodes connect in time, or the connected ones do not cover
            every client id ``0..data.num_clients-1``.
        """
        wanted = len(self.clients)
        deadline = time.monotonic() + self.options.connect_timeout
        while len(nodes := sorted(self.grid.get_node_ids())) < wanted:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"{len(nodes)} SuperNode(s) connected within "
                    f"{self.options.connect_timeout:g} s, but data.num_clients = {wanted}: "
                    f"start one SuperNode per client, with --node-config partition-id=<0..."
                    f"{wanted - 1}>"
                )
            time.sleep(0.2)
        replies = self._ask(messages.REGISTER, {node: messages.content() for node in nodes}, 0)
        for node, record in replies.items():
            self.directory.add(node, int(record["cid"]), float(record["weight"]),
                               bytes(record["verify_key"]))
        missing = sorted(set(range(wanted)) - set(self.directory.node_of))
        if missing:
            raise ConfigError(
                f"no SuperNode registered as client(s) {missing}: every partition-id in "
                f"0..{wanted - 1} needs a SuperNode"
            )
        if self.kind == "he":
            self._set_up_he()

    def _set_up_he(self) -> None:
        reply = self._exchange(messages.HE_KEYGEN, {HE_KEY_HOLDER: messages.content()}, 0)
        if HE_KEY_HOLDER not in reply:
            raise ThresholdError(f"the CKKS key holder (client {HE_KEY_HOLDER}) did not answer")
        signed = bytes(reply[HE_KEY_HOLDER]["public"])
        self.he_public = HEPublicContext.from_signed(signed, self.directory.registry,
                                                     HE_KEY_HOLDER)
        registry = pack_registry(self.directory.registry)
        others = {c: messages.content(public=signed, key_holder=HE_KEY_HOLDER,
                                      registry=registry)
                  for c in self.directory.node_of}
        answered = self._exchange(messages.HE_PUBLIC, others, 0)
        if len(answered) < len(others):
            logger.warning("clients %s did not store the CKKS public context",
                           sorted(set(others) - set(answered)))

    # ------------------------------------------------------------------ one round
    def _collect(
        self, round_idx: int, cids: Sequence[int]
    ) -> tuple[list[ClientUpdate], AggregationResult, int]:
        if not cids:
            return [], self._aggregate(round_idx, [], {}), 0
        weights = {c: self.directory.weight[c] for c in cids}
        meter = RoundMeter(cids, self._notify_received if self.observers else None)
        common = {"round": round_idx, "mechanism": self.mechanism.client_state()}
        try:
            if self.kind == "masking":
                decoded, trained = self._masking_round(round_idx, weights, common, meter)
            else:
                decoded, trained = self._one_shot_round(round_idx, weights, common, meter)
        except ThresholdError as err:  # too few clients to finish: skip, never abort
            self._notes["skipped"] = str(err)
            return [], self._aggregate(round_idx, [], {}), len(cids) * self.model_bytes
        updates = [
            ClientUpdate(
                cid=cid, delta=torch.empty(0), num_samples=int(record.get("num_samples", 0)),
                train_loss=float(record.get("train_loss", math.nan)), steps=int(record["steps"]),
            )
            for cid, record in sorted(trained.items())
        ]
        return updates, meter.result(decoded, cids), len(cids) * self.model_bytes

    def _one_shot_round(
        self, r: int, weights: Mapping[int, float], common: dict, meter: RoundMeter
    ) -> tuple[DecodedAggregate, dict[int, ConfigRecord]]:
        """Plain or CKKS: one upload per client, summed by the server."""
        model, total = self.weights.numpy(), sum(weights.values())
        bodies = {c: messages.content(model=model, weight=w, total_weight=total,
                                      ledger=self.mechanism.client_ledger(c), **common)
                  for c, w in weights.items()}
        trained = self._exchange(messages.TRAIN, bodies, r)
        dim = self.mechanism.transformed_length(self.weights.numel())
        if self.kind == "he":
            party = HEServer(r, weights, self.directory.registry, dim, public=self.he_public)
        else:
            party = PlainServer(r, weights, self.directory.registry, dim)
        self._receive_all(party, "upload", trained, meter)
        with meter.timed("aggregate"):
            aggregate = party.aggregate()
        if self.kind == "none":
            with meter.timed("decode"):
                return decode_plain(aggregate, r), trained
        uploads = (party.accepted_uploads() if self.aggregator.server_model == "malicious"
                   else None)
        return self._decrypt(r, aggregate, uploads, meter), trained

    def _decrypt(
        self, r: int, aggregate: bytes, uploads: list[bytes] | None, meter: RoundMeter
    ) -> DecodedAggregate:
        """The key holder checks the aggregate against the signed uploads (malicious server
        model) and decrypts it into the weighted mean."""
        holder = HE_KEY_HOLDER
        if holder in meter.bytes_down:
            for upload in uploads or ():
                meter.down(holder, upload)
            meter.down(holder, aggregate)
        started = time.perf_counter()
        body = messages.content(round=r, payload=aggregate, uploads=uploads,
                                registry=pack_registry(self.directory.registry))
        reply = self._exchange(messages.HE_DECRYPT, {holder: body}, r)
        if holder not in reply:
            raise ThresholdError(
                f"round {r}: the CKKS key holder (client {holder}) did not decrypt the aggregate"
            )
        meter.seconds["decode"] += time.perf_counter() - started
        record = reply[holder]
        return DecodedAggregate(
            np.frombuffer(bytes(record["mean"]), dtype="<f8"),
            float(record["total_weight"]),
            tuple(int(c) for c in record["included"]),
        )

    def _masking_round(
        self, r: int, weights: Mapping[int, float], common: dict, meter: RoundMeter
    ) -> tuple[DecodedAggregate, dict[int, ConfigRecord]]:
        """Bonawitz et al.'s stages (with the consistency round under the malicious server
        model); the first also trains. Nodes that fail or time out at a stage are dropouts,
        recovered from the survivors' shares."""
        dim = self.mechanism.transformed_length(self.weights.numel())
        party = MaskingServer(self.directory.registry, self.aggregator.params, r, dim, weights)
        model, registry = self.weights.numpy(), pack_registry(self.directory.registry)
        bodies = {c: messages.content(model=model, weight=w, registry=registry,
                                      ledger=self.mechanism.client_ledger(c), **common)
                  for c, w in weights.items()}
        trained = self._exchange(messages.ADVERTISE, bodies, r)
        alive = self._receive_all(party, "advertise", trained, meter)
        with meter.timed("aggregate"):
            keys = party.keys_message()
        alive = self._stage(party, messages.SHARE, "share", dict.fromkeys(alive, keys), r, meter)
        with meter.timed("aggregate"):
            forward = party.forward_messages()
        alive = self._stage(party, messages.MASKED, "masked", forward, r, meter)
        if party.params.consistency_round:
            with meter.timed("aggregate"):
                survivors = party.survivors_message()
            alive = self._stage(party, messages.CONSISTENCY, "consistency",
                                dict.fromkeys(alive, survivors), r, meter)
        with meter.timed("aggregate"):
            request = party.unmask_request()
        self._stage(party, messages.UNMASK, "unmask", dict.fromkeys(alive, request), r, meter)
        with meter.timed("aggregate"):
            aggregate = party.aggregate()
        with meter.timed("decode"):
            mean, total, included = decode_masking(aggregate, r)
        return DecodedAggregate(mean, total, included), trained

    def _stage(
        self, party: MaskingServer, message_type: str, stage: str, inbox: Mapping[int, bytes],
        r: int, meter: RoundMeter,
    ) -> list[int]:
        """Send each live client its message of ``stage``; receive the answers."""
        bodies = {c: messages.content(round=r, payload=meter.down(c, data))
                  for c, data in inbox.items()}
        return self._receive_all(party, stage, self._exchange(message_type, bodies, r), meter)

    def _receive_all(
        self, party: Any, stage: str, replies: Mapping[int, ConfigRecord], meter: RoundMeter
    ) -> list[int]:
        """Hand each reply's payload to the server party; return the clients it accepted."""
        accepted = []
        for cid, record in sorted(replies.items()):
            payload = meter.up(cid, stage, bytes(record["payload"]))
            meter.seconds["encode"] += float(record["seconds_encode"])
            try:
                with meter.timed("aggregate"):
                    party.receive(payload)
            except _REJECTED as err:
                logger.warning("round %d, stage %s: client %d's message rejected: %s",
                               self.round, stage, cid, err)
                continue
            accepted.append(cid)
        return accepted

    # ------------------------------------------------------------------ messaging
    def _exchange(
        self, message_type: str, bodies: Mapping[int, RecordDict], r: int
    ) -> dict[int, ConfigRecord]:
        """Send ``bodies`` (by client id); return the replies that came back without error."""
        node_of = self.directory.node_of
        replies = self._ask(message_type, {node_of[c]: body for c, body in bodies.items()}, r)
        cid_of = self.directory.cid_of
        answered = {cid_of[node]: record for node, record in replies.items()}
        silent = sorted(set(bodies) - set(answered))
        if silent:
            logger.warning("round %d, %s: no usable reply from client(s) %s; treated as dropped",
                           r, message_type, silent)
        return answered

    def _ask(
        self, message_type: str, bodies: Mapping[int, RecordDict], r: int
    ) -> dict[int, ConfigRecord]:
        """Send ``bodies`` (by node id) and wait up to ``stage_timeout`` for the replies."""
        outgoing = [
            Message(body, dst_node_id=node, message_type=message_type, group_id=str(r))
            for node, body in bodies.items()
        ]
        replies: dict[int, ConfigRecord] = {}
        for reply in self.grid.send_and_receive(outgoing, timeout=self.options.stage_timeout):
            if reply.has_error():
                logger.warning("round %d, %s: a node failed: %s", r, message_type,
                               reply.error.reason)
            else:
                replies[reply.metadata.src_node_id] = messages.fields(reply)
        return replies
