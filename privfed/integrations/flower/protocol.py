"""The secure protocol of a config, on both sides of the Flower engine.

:class:`ServerProtocol` builds the round's server party and runs privfed's one driver of the
configured protocol (:func:`privfed.secure.run_plain`, :func:`~privfed.secure.run_he`,
:func:`~privfed.secure.run_masking`) over a :class:`~.transport.FlowerTransport`;
:class:`NodeProtocol` answers each stage on a SuperNode through the protocol's client
endpoint, keeping the party's state between stages in the node's ``Context.state``. Neither
side repeats a protocol's stage sequence: that is the driver's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from privfed.aggregation import to_aggregate
from privfed.config import ConfigError, ExperimentConfig
from privfed.experiment import FederationParts, secure_params
from privfed.federated import Aggregate, RoundSkipped
from privfed.federated.engine import ServerHook
from privfed.secure import (
    ClientIdentity,
    HEClientParty,
    HEKeygenEndpoint,
    HEKeyHolder,
    HEParams,
    HEPublicContext,
    HEPublicEndpoint,
    HEServerParty,
    IdentityRegistry,
    KeyHolderEndpoint,
    MaskingClientParty,
    MaskingEndpoint,
    MaskingParams,
    MaskingServerParty,
    OneShotEndpoint,
    PlainClientParty,
    PlainServerParty,
    RoundMeter,
    RoundRequest,
    ThresholdError,
    pack_registry,
    run_he,
    run_masking,
    run_plain,
    set_up_he,
    unpack_registry,
)
from privfed.secure.masking.messages import KIND as MASKING_KIND

from .registry import NodeDirectory
from .transport import FlowerTransport

__all__ = ["HE_KEY_HOLDER", "NodeProtocol", "ServerProtocol"]

HE_KEY_HOLDER = 0
"""The client whose SuperNode generates the CKKS keys and decrypts the aggregates."""

_PROTOCOL = "privfed.protocol"


class _Settings:
    """The protocol parameters of a config, the same on the server and every node."""

    def __init__(self, config: ExperimentConfig, parts: FederationParts) -> None:
        self.kind = config.secure.kind
        params = secure_params(config, parts)
        self.clip = params.get("clip")
        self.out_of_range = params.get("out_of_range", "error")
        self.codec = params.get("codec")
        self.server_model = params.get("server_model", "malicious")
        self.min_clients = params.get("min_clients", 2)
        if self.kind == "he":
            self.he = HEParams(params["poly_modulus_degree"],
                               tuple(params["coeff_mod_bit_sizes"]), params["scale_bits"])
        if self.kind == "masking":
            self.masking = MaskingParams(**params)


class ServerProtocol:
    """The server side: one round of the configured protocol over the Flower transport.

    Parameters
    ----------
    config : ExperimentConfig
    parts : FederationParts
        The server's parts (the payload codec, the policy's ``min_cohort``).
    directory : NodeDirectory
        The registered nodes and their keys.
    """

    def __init__(self, config: ExperimentConfig, parts: FederationParts,
                 directory: NodeDirectory) -> None:
        self.settings = _Settings(config, parts)
        self.directory = directory
        self.he_public: HEPublicContext | None = None

    def set_up(self, transport: FlowerTransport) -> None:
        """HE: have the key holder's node make the CKKS keys and give every node the signed
        public context."""
        if self.settings.kind == "he":
            self.he_public = set_up_he(transport, self.settings.he, self.directory.registry,
                                       sorted(self.directory.node_of), key_holder=HE_KEY_HOLDER)

    def aggregate(
        self, transport: FlowerTransport, round_id: int, weights: Mapping[int, float],
        length: int, on_server_message: ServerHook | None, *, evaluation: bool = False,
    ) -> Aggregate:
        """Run the round's stages with the clients in ``weights`` (``evaluation``: the
        clients' evaluation counts, which go without the lossy payload codec).

        Raises
        ------
        RoundSkipped
            Too few clients answered for the protocol to release the sum.
        """
        settings, registry = self.settings, self.directory.registry
        meter = RoundMeter(sorted(weights), on_server_message)
        transport.round_id, transport.client_seconds = round_id, 0.0
        try:
            if settings.kind == "masking":
                server = MaskingServerParty(registry, settings.masking, round_id, length, weights)
                decoded = run_masking(transport, server, weights, meter)
            elif settings.kind == "he":
                server = HEServerParty(round_id, weights, registry, length, public=self.he_public)
                decoded = run_he(transport, server, meter, key_holder=HE_KEY_HOLDER,
                                 server_model=settings.server_model)
            else:
                codec = None if evaluation else settings.codec
                clip = None if evaluation else settings.clip  # counts go unscaled in the clear
                server = PlainServerParty(round_id, weights, registry, length, codec=codec,
                                          clip=clip)
                decoded = run_plain(transport, server, meter)
        except ThresholdError as err:
            raise RoundSkipped(str(err)) from None
        meter.seconds["encode"] += transport.client_seconds
        return to_aggregate(meter.result(decoded, sorted(weights)))

    def registry_message(self) -> bytes:
        """The clients' keys as relayed with each training request (masking builds its
        round's party from them; a node with pinned keys checks them)."""
        return pack_registry(self.directory.registry)


class NodeProtocol:
    """A node's side: answer one stage of the protocol with this client's endpoint.

    Parameters
    ----------
    config : ExperimentConfig
    parts : FederationParts
        The node's parts (the payload codec, the policy's ``min_cohort``).
    identity : ClientIdentity
    pinned : IdentityRegistry or None
        Keys exchanged out of band (see :class:`~.node.ClientNode`).
    state : flwr.app.RecordDict
        The node's ``Context.state``.
    """

    def __init__(self, config: ExperimentConfig, parts: FederationParts,
                 identity: ClientIdentity, pinned: IdentityRegistry | None,
                 state: RecordDict) -> None:
        self.settings = _Settings(config, parts)
        self.identity = identity
        self.pinned = pinned
        self.state = state

    def respond(self, stage: str, message: bytes, vector: np.ndarray | None,
                relayed_registry: bytes | None, *, evaluation: bool = False) -> bytes:
        """This client's reply to the server's ``message`` of ``stage``.

        ``vector`` is the client's update (first stage only); ``relayed_registry`` the keys
        the server relayed with the training request (masking); ``evaluation``: the vector
        is evaluation counts, sent without the lossy payload codec.
        """
        record = self._record()
        if stage in ("he_keygen", "he_public", "decrypt"):
            return self._he_setup_or_decrypt(stage, message, record)
        if stage == "upload":
            party = self._one_shot_party(record, codec=not evaluation)
            return OneShotEndpoint(party, vector).respond(stage, message)
        if stage == "advertise":
            registry = self._registry(unpack_registry(relayed_registry or b""))
            round_id = RoundRequest.from_bytes(message, MASKING_KIND).round_id
            party = MaskingClientParty(self.identity, registry, self.settings.masking, round_id)
            record["registry"] = pack_registry(registry)
            record["vector"] = np.asarray(vector, "<f4").tobytes()
        else:
            if "party" not in record:
                raise ConfigError(f"client {self.identity.client_id}: masking stage {stage!r} "
                                  "before the advertise stage")
            registry = unpack_registry(bytes(record["registry"]))
            party = MaskingClientParty.from_bytes(bytes(record["party"]), self.identity, registry,
                                             self.settings.masking)
        vector = np.frombuffer(bytes(record["vector"]), dtype="<f4")
        reply = MaskingEndpoint(party, vector).respond(stage, message)
        record["party"] = party.to_bytes()
        self.state[_PROTOCOL] = record
        return reply

    def _record(self) -> ConfigRecord:
        return self.state[_PROTOCOL] if _PROTOCOL in self.state else ConfigRecord()

    def _registry(self, relayed: IdentityRegistry) -> IdentityRegistry:
        """The pinned keys (after checking the relayed ones agree), else the relayed ones."""
        if self.pinned is None:
            return relayed
        self.pinned.check_relayed(relayed)
        return self.pinned

    def _one_shot_party(self, record: ConfigRecord,
                        codec: bool = True) -> PlainClientParty | HEClientParty:
        settings = self.settings
        options = {"clip": settings.clip, "out_of_range": settings.out_of_range}
        if settings.kind == "he":
            if "public" not in record:
                raise ConfigError(f"client {self.identity.client_id} received no CKKS public "
                                  "context")
            return HEClientParty(self.identity, HEPublicContext(bytes(record["public"])), **options)
        return PlainClientParty(self.identity, codec=settings.codec if codec else None,
                                **options)

    def _he_setup_or_decrypt(self, stage: str, message: bytes, record: ConfigRecord) -> bytes:
        settings = self.settings
        if stage == "he_keygen":
            endpoint = HEKeygenEndpoint(self.identity)
            reply = endpoint.respond(stage, message)
            record["secret"] = endpoint.key_holder.secret_material()
            record["cohorts"] = b"{}"
        elif stage == "he_public":
            endpoint = HEPublicEndpoint(self.pinned)
            reply = endpoint.respond(stage, message)
            record["public"] = endpoint.public.data
            record["registry"] = pack_registry(endpoint.registry)
        else:
            if "secret" not in record:
                raise ConfigError(f"client {self.identity.client_id} holds no CKKS secret key")
            holder = HEKeyHolder(secret_material=bytes(record["secret"]))
            holder.cohorts = {int(r): tuple(ids) for r, ids in
                              json.loads(bytes(record["cohorts"]).decode()).items()}
            endpoint = KeyHolderEndpoint(
                holder, unpack_registry(bytes(record["registry"])),
                server_model=settings.server_model, min_clients=settings.min_clients,
                clip=settings.clip,
            )
            reply = endpoint.respond(stage, message)
            record["cohorts"] = json.dumps({str(r): list(ids)
                                            for r, ids in holder.cohorts.items()}).encode()
        self.state[_PROTOCOL] = record
        return reply

