"""privfed's client on a Flower SuperNode: one federation client per node.

Flower runs a ClientApp in a fresh process for every message, so nothing of a client may live
in memory between messages. What must outlive a message is kept in the node's
``Context.state``, which stays on the SuperNode and is never sent to the SuperLink:

* ``privfed.identity``: the client's Ed25519 signing key (unless the node config names an
  ``identity-key`` file, which then is the key);
* ``privfed.ledger``: the client's own privacy record (how many updates it has released),
  so that its epsilon accumulates over all rounds and it stops at its budget. With every
  request the server sends its record of the client; the node keeps the longer of the two
  and never shrinks it. A node whose state was lost therefore resumes from the server's
  record (which counts every round the client was asked to train in): it cannot know of
  releases the server never saw, and a node that does not trust the server should keep
  its SuperNode's state;
* ``privfed.he``: the CKKS public context (every node) and the secret key (the key holder);
* ``privfed.masking``: the masking protocol's party state between its stages (private keys,
  seeds, shares held) and the masked update waiting for the masked-input stage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from privfed.config import ConfigError, ExperimentConfig
from privfed.experiment import Simulation, build_simulation
from privfed.federated import BudgetSpent, ClientUpdate
from privfed.secure import ClientIdentity, IdentityRegistry
from privfed.secure.he import HEClient, HEKeyHolder, HEPublicContext
from privfed.secure.masking import MaskingClient
from privfed.secure.plain import PlainClient

from . import messages
from .registry import pack_registry, unpack_registry

__all__ = ["ClientNode"]

_IDENTITY, _LEDGER, _HE, _MASKING = (
    "privfed.identity", "privfed.ledger", "privfed.he", "privfed.masking",
)
_FEDERATIONS: dict[str, Simulation] = {}


def _federation(config: ExperimentConfig) -> Simulation:
    """The federation of ``config``, built once per process (a simulation actor serves many
    nodes; a deployment starts one process per message)."""
    key = config.to_toml()
    if key not in _FEDERATIONS:
        _FEDERATIONS.clear()
        _FEDERATIONS[key] = build_simulation(config)
    return _FEDERATIONS[key]


class ClientNode:
    """The privfed client of one SuperNode, for one message.

    Parameters
    ----------
    config : ExperimentConfig
        The federation's config (the same on every node and on the server).
    partition_id : int
        Which client of the federation this node is (its data partition).
    state : flwr.app.RecordDict
        The node's ``Context.state``; read and updated in place.
    identity_key : str, optional
        PEM file of this site's Ed25519 private key (default: a key generated on first use
        and kept in ``state``).
    pinned_keys : str, optional
        JSON file of every site's public key, exchanged out of band. With it the node
        verifies every signed message against these keys and aborts a round whose relayed
        keys differ (key substitution); without it, it trusts the keys the server relays.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        partition_id: int,
        state: RecordDict,
        *,
        identity_key: str | None = None,
        pinned_keys: str | None = None,
    ) -> None:
        num_clients = config.data.num_clients
        if not 0 <= partition_id < num_clients:
            raise ConfigError(
                f"SuperNode node-config partition-id={partition_id} is outside the "
                f"federation's data.num_clients={num_clients}: allowed 0..{num_clients - 1}"
            )
        self.config = config
        self.cid = partition_id
        self.state = state
        self.federation = _federation(config)
        self.server = self.federation.server
        self.mechanism = self.server.mechanism
        self.mechanism.merge_client_ledger(self.cid, self._json(_LEDGER, "ledger"))
        if identity_key is not None:
            self.identity = ClientIdentity.from_file(self.cid, identity_key)
        elif _IDENTITY in state:
            raw = bytes(state[_IDENTITY]["key"])
            self.identity = ClientIdentity.from_private_bytes(self.cid, raw)
        else:
            self.identity = ClientIdentity(self.cid)
            state[_IDENTITY] = ConfigRecord({"key": self.identity.private_bytes()})
        self.pinned = None if pinned_keys is None else IdentityRegistry.from_file(pinned_keys)
        if self.pinned is not None and self.pinned.keys.get(self.cid) != (
            self.identity.public_bytes
        ):
            raise ConfigError(
                f"client {self.cid}: its identity key does not match its entry in the pinned "
                f"keys {pinned_keys!r}: set node-config identity-key to this site's key"
            )

    def _registry(self, relayed: bytes) -> IdentityRegistry:
        """The keys to verify signed messages with: the pinned ones (after checking the
        server relayed the same), else the relayed ones (trusting the server)."""
        registry = unpack_registry(relayed)
        if self.pinned is None:
            return registry
        self.pinned.check_relayed(registry)
        return self.pinned

    # ------------------------------------------------------------------ set-up
    def register(self, message: Message) -> RecordDict:
        """Tell the server who this node is: client id, aggregation weight (the sample count
        for plain FedAvg; 1 under DP, where the count is private), verification key."""
        num_samples = self.server.clients[self.cid].num_samples
        return messages.content(
            cid=self.cid,
            weight=self.mechanism.weight_for(num_samples),
            verify_key=self.identity.public_bytes,
        )

    def he_keygen(self, message: Message) -> RecordDict:
        """Become the CKKS key holder: make a key pair, keep the secret, return the public
        context signed with this node's identity (so the others can tell it is not the
        server's)."""
        aggregator = self.server.aggregator
        holder = HEKeyHolder(aggregator.public.params)
        self.state[_HE] = ConfigRecord({
            "secret": holder.secret_material(), "public": holder.public_material(),
            "cohorts": b"{}",
        })
        return messages.content(public=holder.signed_public_material(self.identity))

    def he_public(self, message: Message) -> RecordDict:
        """Keep the key holder's public CKKS context to encrypt with, once its signature by
        the key holder verifies (under the pinned keys, or those the server relays)."""
        fields = messages.fields(message)
        registry = self._registry(bytes(fields["registry"]))
        public = HEPublicContext.from_signed(bytes(fields["public"]), registry,
                                             int(fields["key_holder"]))
        record = self.state[_HE] if _HE in self.state else ConfigRecord()
        record["public"] = public.data
        self.state[_HE] = record
        return messages.content(ok=True)

    def he_decrypt(self, message: Message) -> RecordDict:
        """Key holder: check the aggregate against the round's signed uploads (under the
        malicious server model), then decrypt it into the weighted mean. The cohort it
        decrypted in each round is kept in the node state, so that no second cohort of the
        same round is ever decrypted."""
        if _HE not in self.state or "secret" not in self.state[_HE]:
            raise ConfigError(f"client {self.cid} holds no CKKS secret key")
        fields = messages.fields(message)
        record = self.state[_HE]
        holder = HEKeyHolder(secret_material=bytes(record["secret"]))
        holder.cohorts = {int(r): tuple(ids) for r, ids in
                          messages.json_field(record, "cohorts").items()}
        aggregator = self.server.aggregator
        uploads = [bytes(u) for u in fields["uploads"]] if "uploads" in fields else None
        decoded = holder.decode(
            bytes(fields["payload"]), int(fields["round"]), uploads=uploads,
            registry=self._registry(bytes(fields["registry"])),
            min_clients=aggregator.min_clients, clip=aggregator.clip,
        )
        record["cohorts"] = json.dumps({str(r): list(ids)
                                        for r, ids in holder.cohorts.items()}).encode()
        return messages.content(
            mean=np.asarray(decoded.mean, "<f8").tobytes(),
            total_weight=decoded.total_weight,
            included=list(decoded.included),
        )

    # ------------------------------------------------------------------ one-shot protocols
    def upload(self, message: Message) -> RecordDict:
        """Train, then send the update encoded for the server (plain or CKKS-encrypted)."""
        fields = messages.fields(message)
        round_idx = int(fields["round"])
        update, vector = self._train(message)
        started = time.perf_counter()
        payload = self._one_shot_client().encode(
            round_idx, vector, float(fields["weight"]), float(fields["total_weight"])
        )
        return self._reply(update, payload, time.perf_counter() - started)

    def _one_shot_client(self) -> PlainClient | HEClient:
        aggregator = self.server.aggregator
        options = {"clip": aggregator.clip, "out_of_range": aggregator.out_of_range}
        if self.config.secure.kind == "he":
            if _HE not in self.state:
                raise ConfigError(f"client {self.cid} received no CKKS public context")
            public = HEPublicContext(bytes(self.state[_HE]["public"]))
            return HEClient(self.identity, public, **options)
        return PlainClient(self.identity, **options)

    # ------------------------------------------------------------------ masking protocol
    def advertise(self, message: Message) -> RecordDict:
        """Train; keep the update; advertise this round's public keys and weight."""
        fields = messages.fields(message)
        update, vector = self._train(message)
        started = time.perf_counter()
        registry = self._registry(bytes(fields["registry"]))
        party = MaskingClient(self.identity, registry, self.server.aggregator.params,
                              int(fields["round"]))
        payload = party.advertise(float(fields["weight"]), vector.size)
        self._keep_masking(party, vector, registry)
        return self._reply(update, payload, time.perf_counter() - started)

    def share(self, message: Message) -> RecordDict:
        """Check the relayed keys; send encrypted Shamir shares of this round's secrets."""
        return self._masking_stage(message, lambda party, payload, _: party.share_keys(payload))

    def masked(self, message: Message) -> RecordDict:
        """Decrypt the shares received; send the masked update."""
        return self._masking_stage(
            message, lambda party, payload, vector: party.masked_input(payload, vector)
        )

    def consistency(self, message: Message) -> RecordDict:
        """Sign the set of clients the server says sent their masked update."""
        return self._masking_stage(message, lambda party, payload, _: party.consistency(payload))

    def unmask(self, message: Message) -> RecordDict:
        """Reveal the shares that let the server remove the masks of this round."""
        return self._masking_stage(message, lambda party, payload, _: party.unmask(payload))

    def _masking_stage(
        self, message: Message, act: Callable[[MaskingClient, bytes, np.ndarray], bytes]
    ) -> RecordDict:
        if _MASKING not in self.state:
            raise ConfigError(f"client {self.cid}: masking stage before the advertise stage")
        record = self.state[_MASKING]
        registry = unpack_registry(bytes(record["registry"]))
        party = MaskingClient.from_bytes(
            bytes(record["party"]), self.identity, registry, self.server.aggregator.params
        )
        vector = np.frombuffer(bytes(record["vector"]), dtype="<f4")
        started = time.perf_counter()
        payload = act(party, bytes(messages.fields(message)["payload"]), vector)
        self._keep_masking(party, vector, registry)
        return messages.content(payload=payload, seconds_encode=time.perf_counter() - started)

    def _keep_masking(
        self, party: MaskingClient, vector: np.ndarray, registry: IdentityRegistry
    ) -> None:
        self.state[_MASKING] = ConfigRecord({
            "party": party.to_bytes(),
            "vector": np.asarray(vector, "<f4").tobytes(),
            "registry": pack_registry(registry),
        })

    # ------------------------------------------------------------------ training
    def _train(self, message: Message) -> tuple[ClientUpdate, np.ndarray]:
        """Local training from the message's model; the transformed update to encode.

        Raises
        ------
        BudgetSpent
            When one more update would take this client past its privacy budget (by the
            longer of its own record and the server's).
        """
        fields = messages.fields(message)
        round_idx = int(fields["round"])
        self.mechanism.merge_client_ledger(self.cid, messages.json_field(fields, "ledger"))
        if not self.mechanism.may_participate(self.cid):
            raise BudgetSpent(f"client {self.cid}: one more update would exceed its privacy "
                              "budget; it does not train")
        self.mechanism.record_participation(round_idx, [self.cid])
        self.state[_LEDGER] = ConfigRecord({
            "ledger": json.dumps(self.mechanism.client_ledger(self.cid)).encode(),
        })
        self.mechanism.load_client_state(messages.json_field(fields, "mechanism"))
        global_weights = torch.from_numpy(messages.model(message).copy())
        update = self.server.train_client(self.cid, global_weights, round_idx)
        return update, self.mechanism.client_transform(round_idx, update).numpy()

    def _reply(self, update: ClientUpdate, payload: bytes, seconds: float) -> RecordDict:
        """The payload and timing; the training loss and sample count only where the
        mechanism releases them (not under DP: they are statistics of private data)."""
        released = self.mechanism.releases_train_loss
        return messages.content(
            payload=payload,
            num_samples=update.num_samples if released else None,
            train_loss=update.train_loss if released else None,
            steps=update.steps,
            seconds_encode=seconds,
        )

    def _json(self, key: str, field: str) -> dict:
        return messages.json_field(self.state[key], field) if key in self.state else {}
