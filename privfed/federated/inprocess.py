"""The in-process engine: every client trains in this process, in one shared workspace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from privfed.federated.client import Client, ClientUpdate
from privfed.federated.engine import (
    Aggregate,
    AggregationProtocol,
    ServerHook,
    TrainJob,
    TrainReport,
)
from privfed.federated.params import FlatParameters
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.stages import Pipeline
from privfed.federated.trainer import LocalTrainer, check_finite
from privfed.federated.weighting import SampleWeighting, Weighting

__all__ = ["InProcessEngine"]


class InProcessEngine:
    """Trains the clients one after another in ``workspace`` and aggregates their updates
    with an aggregation protocol (e.g. :class:`privfed.aggregation.SecureAggregation`
    around a :mod:`privfed.secure` aggregator, whose parties exchange only bytes).

    A client's update stays with it (in :attr:`pending`) until the server aggregates; the
    client halves of the pipeline run then, as the client sends (so a schedule that
    aggregates later, like FedBuff, transforms with the round the update is sent in).

    Parameters
    ----------
    workspace : FlatParameters
        The model every client trains in (the server's own, in the simulation).
    clients : sequence of Client
        Client ``i`` of the sequence must have ``client_id == i``.
    trainer : LocalTrainer
        E.g. :class:`~privfed.federated.trainer.SGDTrainer` or
        :class:`privfed.privacy.DPSGDTrainer`.
    aggregation : AggregationProtocol
        E.g. ``SecureAggregation(privfed.secure.make_aggregator("none"))``.
    pipeline : Pipeline, optional
        The update stages (the server's pipeline: in-process both halves are one object).
    weighting : Weighting, optional
        Gives each client's public aggregation weight; default FedAvg's ``n_k``.
    policy : ParticipationPolicy, optional
        Whether a client reports its training loss and sample count (read once).
    """

    def __init__(
        self,
        workspace: FlatParameters,
        clients: Sequence[Client],
        *,
        trainer: LocalTrainer,
        aggregation: AggregationProtocol,
        pipeline: Pipeline | None = None,
        weighting: Weighting | None = None,
        policy: ParticipationPolicy | None = None,
    ) -> None:
        if [c.client_id for c in clients] != list(range(len(clients))):
            raise ValueError("clients must be given in order of their ids 0..K-1")
        self.workspace = workspace
        self.clients = list(clients)
        self.trainer = trainer
        self.aggregation = aggregation
        self.pipeline = pipeline or Pipeline()
        self.weighting = weighting or SampleWeighting()
        self._releases_statistics = (policy or ParticipationPolicy()).releases_statistics
        self.pending: dict[int, torch.Tensor] = {}

    @property
    def num_clients(self) -> int:
        """The number of clients."""
        return len(self.clients)

    def client_weight(self, client_id: int) -> float:
        """The weighting's public weight of ``client_id``."""
        return self.weighting.weight(self.clients[client_id].num_samples)

    def train_client(self, job: TrainJob) -> ClientUpdate:
        """Train one client (its update is not kept); see :meth:`train`."""
        generator = torch.Generator().manual_seed(job.seed)
        client = self.clients[job.client_id]
        update = self.trainer.fit(client, self.workspace, job.params, generator)
        return check_finite(update, job.release_id)

    def train(self, jobs: Sequence[TrainJob]) -> list[TrainReport]:
        """Train each job's client from its model; keep its update until :meth:`aggregate`.

        In-process the client and server halves share one pipeline, so the stages'
        broadcast needs no delivery.
        """
        reports = []
        released = self._releases_statistics
        for job in jobs:
            update = self.train_client(job)
            self.pending[job.client_id] = update.delta
            reports.append(TrainReport(
                job.client_id, update.steps,
                num_samples=update.num_samples if released else None,
                train_loss=update.train_loss if released else None,
            ))
        return reports

    def aggregate(
        self, round_id: int, weights: Mapping[int, float], length: int,
        on_server_message: ServerHook | None = None,
    ) -> Aggregate:
        """Each client's stages' client halves on its pending update, then the protocol.

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum.
        """
        vectors = {c: self.pipeline.client(round_id, c, self.pending.pop(c))
                   for c in sorted(weights)}
        return self.aggregation.aggregate(round_id, vectors, weights, on_server_message)
