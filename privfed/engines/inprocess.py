"""The in-process engine: every client trains in this process, in one shared workspace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from privfed.federated.client import Client, ClientUpdate
from privfed.federated.engine import (
    Aggregate,
    RoundSkipped,
    ServerHook,
    TrainingDivergedError,
    TrainJob,
    TrainReport,
)
from privfed.federated.params import FlatParameters
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.stages import Pipeline
from privfed.federated.trainer import LocalTrainer
from privfed.federated.weighting import SampleWeighting, Weighting
from privfed.secure import AggregationResult, SecureAggregator, ThresholdError

__all__ = ["InProcessEngine", "to_aggregate"]


def to_aggregate(result: AggregationResult) -> Aggregate:
    """A secure aggregator's result as the core's :class:`Aggregate` (float32 torch)."""
    return Aggregate(
        mean=torch.from_numpy(np.asarray(result.mean, dtype=np.float32)),
        total_weight=result.total_weight,
        included=tuple(result.included),
        dropped=tuple(result.dropped),
        bytes_up=dict(result.bytes_up),
        bytes_down=dict(result.bytes_down),
        seconds=dict(result.seconds),
    )


class InProcessEngine:
    """Trains the clients one after another in ``workspace`` and aggregates their updates
    with a :mod:`privfed.secure` aggregator, whose parties exchange only bytes.

    A client's update stays with it (in :attr:`pending`) until the server aggregates; the
    client halves of the pipeline run then, as the client sends (so a schedule that
    aggregates later, like FedBuff, transforms with the round the update is sent in).

    Parameters
    ----------
    workspace : FlatParameters
        The model every client trains in (the server's own, in the simulation).
    clients : sequence of Client
        Client ``i`` of the sequence must have ``cid == i``.
    trainer : LocalTrainer
        E.g. :class:`~privfed.federated.trainer.SGDTrainer` or
        :class:`privfed.privacy.DPSGDTrainer`.
    aggregator : privfed.secure.SecureAggregator
        E.g. ``privfed.secure.make_aggregator("none")``.
    pipeline : Pipeline, optional
        The update stages (the server's pipeline: in-process both halves are one object).
    weighting : Weighting, optional
        Gives each client's public aggregation weight; default FedAvg's ``n_k``.
    policy : ParticipationPolicy, optional
        Whether a client reports its training loss and sample count.
    """

    def __init__(
        self,
        workspace: FlatParameters,
        clients: Sequence[Client],
        *,
        trainer: LocalTrainer,
        aggregator: SecureAggregator,
        pipeline: Pipeline | None = None,
        weighting: Weighting | None = None,
        policy: ParticipationPolicy | None = None,
    ) -> None:
        if [c.cid for c in clients] != list(range(len(clients))):
            raise ValueError("clients must be given in order of their ids 0..K-1")
        self.workspace = workspace
        self.clients = list(clients)
        self.trainer = trainer
        self.aggregator = aggregator
        self.pipeline = pipeline or Pipeline()
        self.weighting = weighting or SampleWeighting()
        self.policy = policy or ParticipationPolicy()
        self.pending: dict[int, torch.Tensor] = {}

    @property
    def num_clients(self) -> int:
        """The number of clients."""
        return len(self.clients)

    def client_weight(self, client_id: int) -> float:
        """The weighting's public weight of ``client_id``."""
        return self.weighting.weight(self.clients[client_id].num_samples)

    def model_bytes(self, length: int) -> int:
        """A float32 model of ``length`` parameters."""
        return 4 * length

    def train_client(self, job: TrainJob) -> ClientUpdate:
        """Train one client (its update is not kept); see :meth:`train`."""
        generator = torch.Generator().manual_seed(job.seed)
        client = self.clients[job.client_id]
        update = self.trainer.fit(client, self.workspace, job.params, generator)
        if not torch.isfinite(update.delta).all():
            raise TrainingDivergedError(
                f"release {job.release_id}: client {job.client_id}'s update has NaN/Inf "
                f"values, so local training diverged; lower federation.lr or the noise"
            )
        return update

    def train(self, jobs: Sequence[TrainJob], broadcast: Mapping[str, Any]) -> list[TrainReport]:
        """Train each job's client from its model; keep its update until :meth:`aggregate`.

        ``broadcast`` is the server's pipeline's own (in-process the client and server
        halves share one pipeline), so it needs no loading.
        """
        reports = []
        released = self.policy.releases_statistics
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
        """Each client's stages' client halves on its pending update, then the protocol."""
        vectors = {c: self.pipeline.client(round_id, c, self.pending.pop(c)).numpy()
                   for c in sorted(weights)}
        try:
            result = self.aggregator.aggregate(round_id, vectors, weights,
                                               on_server_message=on_server_message)
        except ThresholdError as err:
            raise RoundSkipped(str(err)) from None
        return to_aggregate(result)
