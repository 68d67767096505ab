"""privfed's client on a Flower SuperNode: one federation client per node.

A node builds only its own client (its own data file, or in a simulation its partition of
the data), its trainer, its update pipeline and its participation policy from the config
(:func:`privfed.experiment.build_parts` and :func:`privfed.clientdata.build_client`); never
the federation.

Flower runs a ClientApp in a fresh process for every message (a simulation actor serves
many nodes), so nothing of a client may live in memory between messages. What must outlive
a message is kept in the node's ``Context.state``, which stays on the SuperNode and is never
sent to the SuperLink:

* ``privfed.identity``: the client's Ed25519 signing key (unless the node config names an
  ``identity-key`` file, which then is the key);
* ``privfed.ledger``: the client's own privacy record (how many updates it has released),
  so that its epsilon accumulates over all rounds and it stops at its budget. With every
  training request the server sends its record of the client; the node keeps the longer of
  the two and never shrinks it. A node whose state was lost therefore resumes from the
  server's record (which counts every round the client was asked to train in): it cannot
  know of releases the server never saw, and a node that does not trust the server should
  keep its SuperNode's state;
* ``privfed.pending``: the update trained and not yet sent, with the stages' broadcast it
  was trained under;
* ``privfed.stages``: the pipeline's per-client state (e.g. the error-feedback residual);
* ``privfed.protocol``: the secure protocol's party state between its stages (keys, shares,
  the CKKS context and, on the key holder, the secret key);
* ``privfed.evaluation``: federated evaluation's counts, until the protocol sends them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from privfed.aggregation import evaluation_scale
from privfed.clientdata import (
    build_client,
    client_from_arrays,
    declared_schema,
    file_spec,
    load_partitioned,
    load_site,
)
from privfed.config import ConfigError, ExperimentConfig
from privfed.experiment import FederationParts, build_parts
from privfed.federated import BudgetSpent, Client
from privfed.federated.engine import EVALUATION_ROUND_BASE
from privfed.federated.evaluation import predict_logits
from privfed.federated.metrics import EvaluationCounts
from privfed.federated.trainer import batched_model, check_finite, fit_clients
from privfed.secure import INPUT_STAGES, ClientIdentity, IdentityRegistry

from . import messages
from .protocol import NodeProtocol

__all__ = ["ClientNode"]

_IDENTITY, _LEDGER, _PENDING, _STAGES, _EVALUATION = (
    "privfed.identity", "privfed.ledger", "privfed.pending", "privfed.stages",
    "privfed.evaluation",
)


_SITES: dict[str, tuple[Any, list, FederationParts]] = {}


def _simulated_site(config: ExperimentConfig) -> tuple[Any, list, FederationParts]:
    """The pooled dataset, partition indices and public parts of ``config``, built once per
    process (a simulation actor serves many nodes). Every client's state is loaded from its
    node's state for each message."""
    key = config.to_toml()
    if key not in _SITES:
        _SITES.clear()
        dataset, partitions = load_partitioned(config)
        schema = declared_schema(config) if config.data.is_site_data else dataset
        _SITES[key] = (dataset, partitions, build_parts(config, schema))
    return _SITES[key]


def _client(
    config: ExperimentConfig, client_id: int, data_path: str | None
) -> tuple[Client, FederationParts]:
    """This node's client and parts: from its own file (``data_path``, a deployed site,
    with the parts of the config's declared schema), else its partition of the config's
    dataset (a simulation)."""
    if data_path is None:
        dataset, partitions, parts = _simulated_site(config)
        return build_client(config, dataset, partitions[client_id], client_id), parts
    spec = file_spec(config.data, data_path)
    arrays = load_site(config, spec, client_id)
    return client_from_arrays(arrays, client_id), build_parts(config, declared_schema(config))


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
    data_path : str, optional
        This site's own data file (format and columns from ``config.data``); the node reads
        only it. Default: its partition of the config's dataset (a simulation).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        partition_id: int,
        state: RecordDict,
        *,
        identity_key: str | None = None,
        pinned_keys: str | None = None,
        data_path: str | None = None,
    ) -> None:
        num_clients = config.data.num_clients
        if not 0 <= partition_id < num_clients:
            raise ConfigError(
                f"SuperNode node-config partition-id={partition_id} is outside the "
                f"federation's data.num_clients={num_clients}: allowed 0..{num_clients - 1}"
            )
        self.config = config
        self.client_id = partition_id
        self.state = state
        self.client, self.parts = _client(config, partition_id, data_path)
        self.stacked = batched_model(self.parts.trainer, self.parts.workspace,
                                     config.federation.vectorise)
        self.policy = self.parts.policy
        self.policy.merge_client_ledger(self.client_id, self._json(_LEDGER, "ledger"))
        self.identity = self._identity(identity_key)
        self.pinned = None if pinned_keys is None else IdentityRegistry.from_file(pinned_keys)
        if self.pinned is not None and self.pinned.keys.get(self.client_id) != (
            self.identity.public_bytes
        ):
            raise ConfigError(
                f"client {self.client_id}: its identity key does not match its entry in the "
                f"pinned keys {pinned_keys!r}: set node-config identity-key to this site's key"
            )
        self.protocol = NodeProtocol(config, self.parts, self.identity, self.pinned, state)

    def _identity(self, identity_key: str | None) -> ClientIdentity:
        if identity_key is not None:
            return ClientIdentity.from_file(self.client_id, identity_key)
        if _IDENTITY in self.state:
            raw = bytes(self.state[_IDENTITY]["key"])
            return ClientIdentity.from_private_bytes(self.client_id, raw)
        identity = ClientIdentity(self.client_id)
        self.state[_IDENTITY] = ConfigRecord({"key": identity.private_bytes()})
        return identity

    # ------------------------------------------------------------------ set-up
    def register(self, message: Message) -> RecordDict:
        """Tell the server who this node is: client id, aggregation weight (the sample count
        for plain FedAvg; 1 under DP, where the count is private), verification key."""
        return messages.content(
            client_id=self.client_id,
            weight=self.parts.weighting.weight(self.client.num_samples),
            verify_key=self.identity.public_bytes,
        )

    # ------------------------------------------------------------------ training
    def train(self, message: Message) -> RecordDict:
        """Train from the message's model; keep the update (and the broadcast) until the
        protocol's first stage; report the steps (and, where the policy releases them, the
        training loss and sample count).

        Raises
        ------
        BudgetSpent
            When one more update would take this client past its privacy budget (by the
            longer of its own record and the server's).
        """
        fields = messages.fields(message)
        release_id, client_id = int(fields["release"]), self.client_id
        self.policy.merge_client_ledger(client_id, messages.json_field(fields, "ledger"))
        if not self.policy.may_participate(client_id):
            raise BudgetSpent(f"client {client_id}: one more update would exceed its privacy "
                              "budget; it does not train")
        self.policy.record_participation(release_id, [client_id])
        self.state[_LEDGER] = ConfigRecord({
            "ledger": json.dumps(self.policy.client_ledger(client_id)).encode(),
        })
        params = torch.from_numpy(messages.model(message).copy())
        generator = torch.Generator().manual_seed(int(fields["seed"]))
        (update,) = fit_clients(self.parts.trainer, self.stacked, [self.client],
                                self.parts.workspace, [params], [generator])
        check_finite(update, release_id)
        self.state[_PENDING] = ConfigRecord({
            "delta": update.delta.numpy().astype("<f4").tobytes(),
            "broadcast": bytes(fields["broadcast"]) if "broadcast" in fields else b"{}",
            "registry": bytes(fields["registry"]) if "registry" in fields else b"",
        })
        released = self.policy.releases_statistics
        return messages.content(
            steps=update.steps,
            num_samples=update.num_samples if released else None,
            train_loss=update.train_loss if released else None,
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, message: Message) -> RecordDict:
        """Evaluate the message's model on this client's held-out data. In the clear the
        reply carries the counts; under HE or masking they wait (scaled, see
        :func:`privfed.aggregation.evaluation_scale`) for the protocol's first stage."""
        fields = messages.fields(message)
        held = self.client.validation
        if held is None:
            return messages.content(has_data=False)
        workspace = self.parts.workspace
        workspace.load(torch.from_numpy(messages.model(message).copy()))
        counts = EvaluationCounts(self.parts.num_classes)
        vector = counts.from_logits(predict_logits(workspace.module, held[0]), held[1])
        if self.config.secure.kind == "none":
            return messages.content(has_data=True, counts=vector.astype("<f8").tobytes())
        secure = self.config.secure
        scaled = counts.encode(vector, evaluation_scale(secure.kind, secure.clip)).astype("<f4")
        self.state[_EVALUATION] = ConfigRecord({
            "vector": scaled.tobytes(),
            "registry": bytes(fields["registry"]) if "registry" in fields else b"",
        })
        return messages.content(has_data=True)

    # ------------------------------------------------------------------ protocol stages
    def stage(self, message: Message) -> RecordDict:
        """Answer one stage of the secure protocol; the first stage sends the pending update
        through this client's pipeline first."""
        fields = messages.fields(message)
        stage, round_id = str(fields["stage"]), int(fields["round"])
        started = time.perf_counter()
        vector, registry = None, None
        evaluation = round_id >= EVALUATION_ROUND_BASE
        if stage in INPUT_STAGES:
            vector, registry = (self._send_counts() if evaluation
                                else self._send_pending(round_id))
        payload = self.protocol.respond(stage, bytes(fields["payload"]), vector, registry,
                                        evaluation=evaluation)
        return messages.content(payload=payload, seconds_encode=time.perf_counter() - started)

    def _send_pending(self, round_id: int) -> tuple[np.ndarray, bytes]:
        """The pending update through the pipeline's client halves (with the broadcast it
        was trained under and this client's stage state, which is then kept), and the keys
        the server relayed with the training request."""
        if _PENDING not in self.state:
            raise ConfigError(f"client {self.client_id}: asked to send before training")
        pending = self.state[_PENDING]
        pipeline = self.parts.pipeline
        pipeline.load_broadcast(json.loads(bytes(pending["broadcast"]).decode()))
        pipeline.load_state_dict(self.client_id, self._json(_STAGES, "state"))
        delta = torch.from_numpy(np.frombuffer(bytes(pending["delta"]), "<f4").copy())
        vector = pipeline.client(round_id, self.client_id, delta)
        self.state[_STAGES] = ConfigRecord({
            "state": json.dumps(pipeline.state_dict(self.client_id),
                                default=lambda tensor: tensor.tolist()).encode(),
        })
        del self.state[_PENDING]
        return vector.numpy(), bytes(pending["registry"])

    def _send_counts(self) -> tuple[np.ndarray, bytes]:
        """The evaluation counts kept by :meth:`evaluate`, and the relayed keys."""
        if _EVALUATION not in self.state:
            raise ConfigError(f"client {self.client_id}: asked to send evaluation counts "
                              "before evaluating")
        kept = self.state[_EVALUATION]
        del self.state[_EVALUATION]
        return np.frombuffer(bytes(kept["vector"]), "<f4").copy(), bytes(kept["registry"])

    def _json(self, key: str, field: str) -> dict:
        return messages.json_field(self.state[key], field) if key in self.state else {}
