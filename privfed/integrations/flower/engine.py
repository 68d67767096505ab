"""The Flower engine: the clients are SuperNodes, reached through a Flower Grid.

:class:`FlowerEngine` implements :class:`privfed.federated.Engine` for the simulation
engine and for a deployment alike: training requests are Flower messages carrying the
model, and the secure protocol runs through privfed's own protocol drivers
(:mod:`privfed.secure`) over a :class:`~.transport.FlowerTransport`, so only the parties'
bytes travel through the SuperLink. Any schedule (synchronous rounds, FedBuff) runs on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from privfed.aggregation import evaluation_scale
from privfed.config import ConfigError, ExperimentConfig
from privfed.experiment import FederationParts
from privfed.federated import (
    Aggregate,
    ParticipationPolicy,
    Pipeline,
    TrainJob,
    TrainReport,
)
from privfed.federated.engine import (
    EvaluationResult,
    RoundPlan,
    ServerHook,
    evaluation_hook,
    evaluation_round_id,
)
from privfed.federated.inprocess import result_of, sum_in_the_clear

from . import messages
from .protocol import ServerProtocol
from .registry import NodeDirectory
from .transport import FlowerTransport

__all__ = ["FlowerEngine", "FlowerOptions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowerOptions:
    """How the ServerApp talks to the SuperNodes.

    Attributes
    ----------
    stage_timeout : float
        Seconds to wait for the replies of one message round (training, or one protocol
        stage); a node that has not answered by then is treated as dropped for the round.
    connect_timeout : float
        Seconds to wait for ``data.num_clients`` SuperNodes to connect.
    """

    stage_timeout: float = 300.0
    connect_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("stage_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"flower {name} must be > 0 seconds, got {getattr(self, name)}")


class FlowerEngine:
    """Clients on Flower SuperNodes; see the module docstring.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The ServerApp's grid.
    config : ExperimentConfig
        The federation's config (every node builds its own client from the same config).
    parts : FederationParts
        The server's parts: its policy (the server's privacy record of each client, sent
        with each training request) and pipeline (whose broadcast goes with it).
    options : FlowerOptions
    """

    def __init__(
        self,
        grid: Grid,
        config: ExperimentConfig,
        parts: FederationParts,
        options: FlowerOptions,
    ) -> None:
        self.grid = grid
        self.config = config
        self.policy: ParticipationPolicy = parts.policy
        self.pipeline: Pipeline = parts.pipeline
        self.options = options
        self.directory = NodeDirectory()
        self.transport = FlowerTransport(grid, self.directory, options.stage_timeout)
        self.protocol = ServerProtocol(config, parts, self.directory)

    @property
    def num_clients(self) -> int:
        """``data.num_clients``: one SuperNode per client."""
        return self.config.data.num_clients

    def client_weight(self, client_id: int) -> float:
        """The weight the client's node registered with (its sample count, or 1 under DP)."""
        return self.directory.weight[client_id]

    # ------------------------------------------------------------------ set-up
    def connect(self) -> None:
        """Wait for the SuperNodes, learn which client each is, and set up the protocol
        (the CKKS keys, for HE).

        Raises
        ------
        ConfigError
            Too few SuperNodes connect in time, or the connected ones do not cover
            every client id ``0..data.num_clients-1``.
        """
        wanted = self.num_clients
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
        bodies = {node: messages.content() for node in nodes}
        replies = self.transport.ask_nodes(messages.REGISTER, bodies, 0)
        for node, record in replies.items():
            self.directory.add(node, int(record["client_id"]), float(record["weight"]),
                               bytes(record["verify_key"]))
        missing = sorted(set(range(wanted)) - set(self.directory.node_of))
        if missing:
            raise ConfigError(
                f"no SuperNode registered as client(s) {missing}: every partition-id in "
                f"0..{wanted - 1} needs a SuperNode"
            )
        self.protocol.set_up(self.transport)

    # ------------------------------------------------------------------ one round
    def train(
        self, jobs: Sequence[TrainJob], plan: RoundPlan | None = None
    ) -> list[TrainReport]:
        """Send each job's client the model, its batch seed, the stages' broadcast and the
        server's record of it; a node that fails or does not answer is left out (a dropout
        of the round). ``plan`` is not used: each node keeps its update until the protocol
        runs."""
        if not jobs:
            return []
        broadcast = self.pipeline.broadcast()
        registry = self.protocol.registry_message() if self.config.secure.kind == "masking" \
            else None
        bodies = {
            job.client_id: messages.content(
                model=job.params.numpy(), release=job.release_id, seed=job.seed,
                broadcast=broadcast, ledger=self.policy.client_ledger(job.client_id),
                registry=registry,
            )
            for job in jobs
        }
        replies = self.transport.ask(messages.TRAIN, bodies, jobs[0].release_id)
        return [_report(client_id, record) for client_id, record in sorted(replies.items())]

    def aggregate(
        self, round_id: int, weights: Mapping[int, float], length: int,
        on_server_message: ServerHook | None = None,
    ) -> Aggregate:
        """Run the protocol's stages with the nodes over the transport.

        Raises
        ------
        RoundSkipped
            Too few nodes answered for the protocol to release the sum.
        """
        return self.protocol.aggregate(self.transport, round_id, weights, length,
                                       on_server_message)


    def evaluate(
        self, round_id: int, client_ids: Sequence[int], params: torch.Tensor, counts: Any,
        on_server_message: ServerHook | None = None,
    ) -> EvaluationResult:
        """Federated evaluation on the nodes: each evaluates the model on its held-out data;
        in the clear the replies carry the counts, else the protocol sums them (under the
        evaluation round id, without the payload codec).

        Raises
        ------
        RoundSkipped
            Too few nodes answered for the protocol to release the sum.
        """
        protocol_round = evaluation_round_id(round_id)
        registry = self.protocol.registry_message() if self.config.secure.kind == "masking" \
            else None
        bodies = {c: messages.content(model=params.numpy(), registry=registry)
                  for c in client_ids}
        replies = self.transport.ask(messages.EVALUATE, bodies, protocol_round)
        ready = sorted(c for c, record in replies.items() if bool(record["has_data"]))
        if not ready:
            return EvaluationResult(np.zeros(0), {}, ())
        if self.config.secure.kind == "none":
            vectors = {c: np.frombuffer(bytes(replies[c]["counts"]), "<f8") for c in ready}
            return sum_in_the_clear(vectors, on_server_message)
        aggregate = self.protocol.aggregate(self.transport, protocol_round,
                                            dict.fromkeys(ready, 1.0), counts.length,
                                            evaluation_hook(on_server_message),
                                            evaluation=True)
        secure = self.config.secure
        return result_of(aggregate, counts, evaluation_scale(secure.kind, secure.clip))


def _report(client_id: int, record: ConfigRecord) -> TrainReport:
    loss, samples = record.get("train_loss"), record.get("num_samples")
    return TrainReport(client_id, int(record["steps"]),
                       num_samples=None if samples is None else int(samples),
                       train_loss=None if loss is None else float(loss))
