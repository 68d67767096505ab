"""The in-process engine: every client trains in this process, in one shared workspace."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from privfed.federated.client import Client, ClientUpdate
from privfed.federated.cohort import cohort_chunks, default_memory_budget
from privfed.federated.engine import (
    Aggregate,
    AggregationProtocol,
    EvaluationProtocol,
    EvaluationResult,
    RoundPlan,
    RunningAggregate,
    ServerHook,
    StreamingAggregation,
    TrainJob,
    TrainReport,
    evaluation_hook,
    evaluation_round_id,
    evaluation_stage,
)
from privfed.federated.evaluation import predict_logits
from privfed.federated.params import FlatParameters
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.stages import Pipeline
from privfed.federated.trainer import LocalTrainer, batched_model, check_finite, fit_clients
from privfed.federated.weighting import SampleWeighting, Weighting

__all__ = ["InProcessEngine"]


class InProcessEngine:
    """Trains the clients one after another in ``workspace`` and aggregates their updates
    with an aggregation protocol (e.g. :class:`privfed.aggregation.SecureAggregation`
    around a :mod:`privfed.secure` aggregator, whose parties exchange only bytes).

    A client's update stays with it (in :attr:`pending`) until the server aggregates; the
    client halves of the pipeline run then, as the client sends (so a schedule that
    aggregates later, like FedBuff, transforms with the round the update is sent in).
    Where the schedule plans the aggregation before training (a
    :class:`~privfed.federated.RoundPlan`: synchronous rounds) and the protocol sums in the
    clear, each update instead goes through the client halves as soon as it is trained and
    into a running sum, in the same order and float64 arithmetic (the same aggregate, bit
    for bit): a round's memory grows with the chunk, not the cohort.

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
    evaluation : EvaluationProtocol, optional
        How federated evaluation's counts are aggregated; default: ``aggregation`` in the
        clear.
    vectorise : bool, default True
        Train a round's clients as one batched computation
        (:mod:`privfed.federated.cohort`) where the trainer and the model allow it; False:
        one after another. The updates agree to float32 rounding.
    memory_budget : int, optional
        Bytes of one batched chunk's working set (parameters, gradients, activations); a
        larger cohort is trained in chunks. Default: sized for the CPU's caches, or larger
        on a GPU (:func:`privfed.federated.cohort.default_memory_budget`).
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
        evaluation: EvaluationProtocol | None = None,
        vectorise: bool = True,
        memory_budget: int | None = None,
    ) -> None:
        if [c.client_id for c in clients] != list(range(len(clients))):
            raise ValueError("clients must be given in order of their ids 0..K-1")
        self.workspace = workspace
        self.clients = list(clients)
        self.trainer = trainer
        self.aggregation = aggregation
        self.pipeline = pipeline or Pipeline()
        self.weighting = weighting or SampleWeighting()
        policy = policy or ParticipationPolicy()
        self._releases_statistics = policy.releases_statistics
        self._releases_diagnostics = policy.releases_exact_diagnostics
        self.evaluation = evaluation or EvaluationProtocol(aggregation)
        self.pending: dict[int, torch.Tensor] = {}
        self._streamed: tuple[RoundPlan, RunningAggregate] | None = None
        self.memory_budget = memory_budget or default_memory_budget(workspace.device)
        self.stacked = batched_model(trainer, workspace, vectorise)

    @property
    def num_clients(self) -> int:
        """The number of clients."""
        return len(self.clients)

    def client_weight(self, client_id: int) -> float:
        """The weighting's public weight of ``client_id``."""
        return self.weighting.weight(self.clients[client_id].num_samples)

    def train_client(self, job: TrainJob) -> ClientUpdate:
        """Train one client (its update is not kept); see :meth:`train`. Batched with a
        cohort of one where :attr:`stacked` allows (plain SGD then gives the update the
        client gets in any chunk of :meth:`train`, bit for bit)."""
        return self._fit([job])[0]

    def train(
        self, jobs: Sequence[TrainJob], plan: RoundPlan | None = None
    ) -> list[TrainReport]:
        """Train each job's client from its model; keep its update until :meth:`aggregate`,
        or, where ``plan`` allows, run its client halves at once and add it into the
        round's running sum, so that the round holds one chunk's updates at a time, not the
        cohort's.

        In-process the client and server halves share one pipeline, so the stages'
        broadcast needs no delivery.
        """
        running = self._running(jobs, plan)
        self._streamed = None if running is None else (plan, running)
        reports = []
        for chunk in self._chunks(jobs):
            updates = self._fit(chunk)
            reports.extend(self._report(u) for u in updates)
            deltas = {u.client_id: u.delta for u in updates}
            if running is None:
                self.pending.update(deltas)
            else:
                running.add({c: self.pipeline.client(plan.round_id, c, delta)
                             for c, delta in deltas.items()},
                            {c: plan.weights[c] for c in deltas})
        return reports

    def _running(
        self, jobs: Sequence[TrainJob], plan: RoundPlan | None
    ) -> RunningAggregate | None:
        """The round's running sum where :meth:`train` streams: ``plan`` names exactly the
        jobs' clients, which come in increasing id order (the order the batch sum adds them
        in), and the aggregation protocol sums them in the clear without messages (a
        :class:`~privfed.federated.StreamingAggregation` whose running sum is not None);
        else None."""
        if plan is None or not isinstance(self.aggregation, StreamingAggregation):
            return None
        if [job.client_id for job in jobs] != sorted(plan.weights):
            return None
        return self.aggregation.running(plan.round_id, plan.on_server_message)

    def _report(self, update: ClientUpdate) -> TrainReport:
        """What the client tells the server (loss, sample count and clipped-example count
        where released)."""
        released, diagnosed = self._releases_statistics, self._releases_diagnostics
        return TrainReport(
            update.client_id, update.steps,
            num_samples=update.num_samples if released else None,
            train_loss=update.train_loss if released else None,
            examples_seen=update.examples_seen if diagnosed else None,
            examples_clipped=update.examples_clipped if diagnosed else None,
        )

    def _chunks(self, jobs: Sequence[TrainJob]) -> list[Sequence[TrainJob]]:
        """The jobs in chunks trained together: batched chunks of the memory budget (sized
        from public values: the model, the example shape and the expected batch size), or
        one job at a time where the trainer is not batched."""
        if self.stacked is None:
            return [[job] for job in jobs]
        if not jobs:
            return []
        per_client = self.stacked.bytes_per_client(
            self.trainer.expected_batch_size,  # type: ignore[attr-defined]
            math.prod(self.clients[jobs[0].client_id].example_shape))
        return [[jobs[i] for i in chunk]
                for chunk in cohort_chunks(len(jobs), per_client, self.memory_budget)]

    def _fit(self, jobs: Sequence[TrainJob]) -> list[ClientUpdate]:
        """The jobs' checked updates (:func:`~privfed.federated.trainer.fit_clients`)."""
        updates = fit_clients(
            self.trainer, self.stacked, [self.clients[job.client_id] for job in jobs],
            self.workspace, [job.params for job in jobs],
            [torch.Generator().manual_seed(job.seed) for job in jobs])
        return [check_finite(u, job.release_id) for u, job in zip(updates, jobs, strict=True)]

    def aggregate(
        self, round_id: int, weights: Mapping[int, float], length: int,
        on_server_message: ServerHook | None = None,
    ) -> Aggregate:
        """Each client's stages' client halves on its pending update, then the protocol;
        or the running sum of the round :meth:`train` streamed.

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum.
        RuntimeError
            The round was streamed for a different aggregation than this one.
        """
        streamed, self._streamed = self._streamed, None
        if streamed is not None:
            plan, running = streamed
            if not plan.matches(round_id, weights, on_server_message):
                raise RuntimeError(f"round {round_id} is aggregated otherwise than planned "
                                   f"for round {plan.round_id}, whose updates are summed")
            return running.result()
        vectors = {c: self.pipeline.client(round_id, c, self.pending.pop(c))
                   for c in sorted(weights)}
        return self.aggregation.aggregate(round_id, vectors, weights, on_server_message)

    def state_dict(self) -> dict[str, Any]:
        """The clients' trained updates not yet aggregated (FedBuff's buffer beyond one
        server step), for a checkpoint; called between rounds.

        Raises
        ------
        RuntimeError
            During a streamed round.
        """
        if self._streamed is not None:
            raise RuntimeError("a streamed round is in progress: checkpoint between rounds")
        return {"pending": {c: delta.clone() for c, delta in self.pending.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises
        ------
        ValueError
            A pending update of a client outside the federation or of another length than
            the model.
        """
        pending = {int(c): delta.clone() for c, delta in state["pending"].items()}
        numel = self.workspace.spec.numel
        for client_id, delta in pending.items():
            if not 0 <= client_id < self.num_clients or delta.shape != (numel,):
                raise ValueError(f"pending update of client {client_id}: not a client of "
                                 f"this federation or not {numel} coordinates")
        self.pending, self._streamed = pending, None

    def evaluate(
        self, round_id: int, client_ids: Sequence[int], params: torch.Tensor, counts: Any,
        on_server_message: ServerHook | None = None,
    ) -> EvaluationResult:
        """Each listed client with validation data evaluates ``params`` on it; the counts
        go through the evaluation protocol (see :class:`~privfed.federated.Engine`).

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum.
        """
        self.workspace.load(params)
        vectors = {}
        for client_id in sorted(client_ids):
            held = self.clients[client_id].validation
            if held is not None:
                logits = predict_logits(self.workspace.module, held[0])
                vectors[client_id] = counts.from_logits(logits, held[1])
        return aggregate_counts(self.evaluation, round_id, vectors, counts, on_server_message)


def aggregate_counts(
    evaluation: EvaluationProtocol, round_id: int, vectors: Mapping[int, np.ndarray],
    counts: Any, on_server_message: ServerHook | None = None,
) -> EvaluationResult:
    """The sum of the clients' float64 count ``vectors``: added in float64 where the server
    sees each vector anyway (plain aggregation), else through the evaluation protocol with
    equal weights under the evaluation round id of ``round_id``.

    Raises
    ------
    RoundSkipped
        The protocol could not release the sum.
    """
    if not vectors:
        return EvaluationResult(np.zeros(0), {}, ())
    if evaluation.reveals_clients:
        return sum_in_the_clear(vectors, on_server_message)
    scaled = {c: torch.from_numpy(counts.encode(v, evaluation.scale))
              for c, v in vectors.items()}
    aggregate = evaluation.aggregation.aggregate(
        evaluation_round_id(round_id), scaled, dict.fromkeys(vectors, 1.0),
        evaluation_hook(on_server_message))
    return result_of(aggregate, counts, evaluation.scale)


def sum_in_the_clear(
    vectors: Mapping[int, np.ndarray], on_server_message: ServerHook | None = None
) -> EvaluationResult:
    """The float64 sum of count vectors the server receives in the clear (each one also
    goes to ``on_server_message`` as the little-endian float64 bytes it arrives as)."""
    for client_id, vector in sorted(vectors.items()):
        if on_server_message is not None:
            on_server_message(client_id, evaluation_stage(), vector.astype("<f8").tobytes())
    size = sum(v.size for v in vectors.values()) * 8
    return EvaluationResult(np.sum(list(vectors.values()), axis=0), dict(vectors),
                            tuple(sorted(vectors)), bytes_up=size)


def result_of(aggregate: Aggregate, counts: Any, scale: float) -> EvaluationResult:
    """The summed counts of a protocol's equal-weight ``aggregate`` of the clients' encoded
    vectors (:meth:`~privfed.federated.metrics.EvaluationCounts.encode`)."""
    total = counts.decode(aggregate.mean.double().numpy() * len(aggregate.included), scale)
    return EvaluationResult(total, {}, aggregate.included, sum(aggregate.bytes_up.values()),
                            sum(aggregate.bytes_down.values()))
