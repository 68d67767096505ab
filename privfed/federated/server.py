"""The FedAvg server: sample clients, collect their encoded updates, step the global model."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.evaluation import evaluate
from privfed.federated.history import History, RoundRecord
from privfed.federated.mechanism import UpdateMechanism
from privfed.federated.observers import Observer
from privfed.federated.optimizers import ServerOptimizer
from privfed.federated.params import FlatParameters
from privfed.federated.sampling import ClientSampler
from privfed.secure import AggregationResult
from privfed.secure.errors import ThresholdError

__all__ = ["Aggregator", "BudgetSpent", "Server", "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """A client's update is not finite: local training diverged."""


class BudgetSpent(Exception):
    """No client can release another update within its privacy budget."""


BatchSeed = Callable[[int, int], int]
"""Maps ``(round, client id)`` to the seed of that client's batch order in that round."""


class Aggregator(Protocol):
    """What the server needs of a (secure) aggregator; see :mod:`privfed.secure`."""

    def aggregate(
        self,
        round_id: int,
        vectors: Mapping[int, np.ndarray],
        weights: Mapping[int, float],
        *,
        on_server_message: Callable[[int, str, bytes], None] | None = None,
        dropouts: Mapping[str, Collection[int]] | None = None,
    ) -> AggregationResult: ...


class Server:
    """Runs FedAvg rounds over a set of clients.

    One round: sample clients; send each the global weights; each trains locally and
    returns its delta; the aggregator turns the deltas into bytes on the wire and back into
    their weighted mean (weights ``n_k / sum(n_k)`` over the round's clients); the server
    optimizer applies the mean to the global model.

    Parameters
    ----------
    workspace : FlatParameters
        The model, bound to flat buffers; its current weights are the initial global model.
        The simulation trains every client in this one workspace.
    clients : sequence of Client
        Client ``i`` of the sequence must have ``cid == i``.
    training : LocalTraining
        Local hyperparameters, the same for every client.
    sampler : ClientSampler
    optimizer : ServerOptimizer
    aggregator : Aggregator
        E.g. ``privfed.secure.make_aggregator("none")``.
    test_data : (torch.Tensor, torch.Tensor)
        Held-out examples and labels for evaluating the global model.
    batch_seed : callable
        ``(round, cid) -> int``, the seed of the client's batch order in that round.
    eval_every : int, default 1
        Evaluate the global model every this many rounds (and always after the last).
    observers : sequence of Observer, optional
    mechanism : UpdateMechanism, optional
        Privacy processing on the update's path; default plain FedAvg.
    """

    def __init__(
        self,
        workspace: FlatParameters,
        clients: Sequence[Client],
        *,
        training: LocalTraining,
        sampler: ClientSampler,
        optimizer: ServerOptimizer,
        aggregator: Aggregator,
        test_data: tuple[torch.Tensor, torch.Tensor],
        batch_seed: BatchSeed,
        eval_every: int = 1,
        observers: Sequence[Observer] = (),
        mechanism: UpdateMechanism | None = None,
    ) -> None:
        if [c.cid for c in clients] != list(range(len(clients))):
            raise ValueError("clients must be given in order of their ids 0..K-1")
        if sampler.num_clients != len(clients):
            raise ValueError(
                f"sampler draws from {sampler.num_clients} clients but {len(clients)} were given"
            )
        if eval_every < 1:
            raise ValueError(f"federation.eval_every must be >= 1, got {eval_every}")
        self.workspace = workspace
        self.clients = list(clients)
        self.training = training
        self.sampler = sampler
        self.optimizer = optimizer
        self.aggregator = aggregator
        self.test_data = test_data
        self.batch_seed = batch_seed
        self.eval_every = eval_every
        self.observers = list(observers)
        self.mechanism = mechanism or UpdateMechanism()
        self.weights = workspace.data.detach().clone()
        self.history = History()
        self.round = 0
        self._notes: dict[str, Any] = {}

    @property
    def model_bytes(self) -> int:
        """Size of the global model as float32 on the wire."""
        return self.weights.numel() * self.weights.element_size()

    def fit(self, rounds: int, on_round: Callable[[RoundRecord], None] | None = None) -> History:
        """Run ``rounds`` more rounds; evaluate after the last one whatever ``eval_every``.

        Parameters
        ----------
        rounds : int
            Number of rounds to run.
        on_round : callable, optional
            Called with each round's record (e.g. to advance a progress bar).

        Returns
        -------
        History
            All rounds run by this server so far.
        """
        if rounds < 1:
            raise ValueError(f"federation.rounds must be >= 1, got {rounds}")
        last = self.round + rounds
        while self.round < last:
            try:
                if not self.mechanism.round_allowed():
                    raise BudgetSpent(f"privacy budget spent after round {self.round}")
                record = self.run_round(evaluate_now=self.round + 1 == last)
            except BudgetSpent as stop:
                self.history.stop_reason = str(stop)
                self._evaluate_last()
                break
            if on_round is not None:
                on_round(record)
        return self.history

    def run_round(self, evaluate_now: bool = False) -> RoundRecord:
        """Run one round and return its record (also appended to :attr:`history`).

        The sampled clients whose privacy budget cannot afford the round sit it out (their
        number is ``extra["budget_exhausted"]``); a cohort smaller than the mechanism's
        :attr:`~privfed.federated.mechanism.UpdateMechanism.min_cohort` is not trained and
        the round is skipped (``extra["skipped"]``), like a round whose secure aggregation
        cannot complete: the model does not move, and privacy is still accounted.
        """
        self.round += 1
        r = self.round
        started = time.perf_counter()
        self._notes = {}
        cids = self._cohort(self.sampler.sample())
        for obs in self.observers:
            obs.round_started(r, cids)
        self.mechanism.record_participation(r, cids)
        updates, result, bytes_down = self._collect(r, cids)
        return self._apply(r, updates, result, started=started, evaluate_now=evaluate_now,
                           bytes_down=bytes_down)

    def _cohort(self, sampled: Sequence[int]) -> list[int]:
        """The sampled clients that may take part; none if too few to aggregate."""
        cohort = [c for c in sampled if self.mechanism.may_participate(c)]
        if len(cohort) < len(sampled):
            self._notes["budget_exhausted"] = len(sampled) - len(cohort)
        if 0 < len(cohort) < self.mechanism.min_cohort:
            self._notes["skipped"] = (f"{len(cohort)} client(s) sampled, fewer than the "
                                      f"{self.mechanism.min_cohort} a released sum must hold")
            return []
        return cohort

    def _evaluate_last(self) -> None:
        """Evaluate the final model if the last round run was not evaluated."""
        if self.history.rounds and self.history.rounds[-1].test_accuracy is None:
            last = self.history.rounds[-1]
            last.test_loss, last.test_accuracy = self.evaluate()

    def train_client(self, cid: int, global_weights: torch.Tensor, round_idx: int) -> ClientUpdate:
        """Client ``cid`` trains from ``global_weights`` in round ``round_idx`` with its
        batch-order seed for that round."""
        return self._train(self.clients[cid], self.batch_seed(round_idx, cid), global_weights,
                           round_idx)

    def _collect(
        self, round_idx: int, cids: Sequence[int]
    ) -> tuple[list[ClientUpdate], AggregationResult, int]:
        """Train the round's clients and aggregate their updates.

        Returns
        -------
        updates : list of ClientUpdate
        result : AggregationResult
        bytes_down : int
            Bytes the server sent to deliver the model (protocol messages are in ``result``).
        """
        updates = [self.train_client(cid, self.weights, round_idx) for cid in cids]
        result = self._aggregate(
            round_idx, updates, {u.cid: self.mechanism.weight(u) for u in updates}
        )
        return updates, result, len(cids) * self.model_bytes

    def evaluate(self) -> tuple[float, float]:
        """Loss and accuracy of the current global model on the test data."""
        self.workspace.load(self.weights)
        return evaluate(self.workspace.module, *self.test_data)

    def _train(
        self, client: Client, seed: int, global_weights: torch.Tensor, round_idx: int
    ) -> ClientUpdate:
        """Client ``client`` trains from ``global_weights`` with batch-order seed ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        update = client.fit(self.workspace, global_weights, self.training, generator)
        if not torch.isfinite(update.delta).all():
            raise TrainingDivergedError(
                f"round {round_idx}: client {client.cid}'s update has NaN/Inf values, so local "
                f"training diverged; lower federation.lr (now {self.training.lr}) or the noise"
            )
        return update

    def _aggregate(
        self, round_idx: int, updates: Sequence[ClientUpdate], weights: Mapping[int, float]
    ) -> AggregationResult:
        """The clients' transformed updates through the aggregator, with ``weights``."""
        if not updates:  # Poisson client sampling can leave a round empty.
            return AggregationResult(
                mean=np.zeros(self.mechanism.transformed_length(self.weights.numel())),
                total_weight=0.0, included=(), dropped=(),
                bytes_up={}, bytes_down={}, seconds={},
            )
        try:
            return self.aggregator.aggregate(
                round_idx,
                {u.cid: self.mechanism.client_transform(round_idx, u).numpy() for u in updates},
                weights,
                on_server_message=self._notify_received if self.observers else None,
            )
        except ThresholdError as err:  # e.g. one client under masking: skip, never abort
            self._notes["skipped"] = str(err)
            return self._aggregate(round_idx, [], {})

    def _apply(
        self,
        round_idx: int,
        updates: Sequence[ClientUpdate],
        result: AggregationResult,
        *,
        started: float,
        evaluate_now: bool,
        bytes_down: int,
        scale: float = 1.0,
        extra: Mapping[str, Any] | None = None,
    ) -> RoundRecord:
        """Release the aggregate, step the global model by ``scale`` times the finalized
        mean, and record, evaluate and announce the round."""
        r, mechanism = round_idx, self.mechanism
        for obs in self.observers:
            obs.aggregate_released(r, result.mean)
        mean = torch.from_numpy(np.asarray(result.mean, dtype=np.float32))
        step = mechanism.server_finalize(r, mean, result.total_weight, result.included)
        self.optimizer.step(self.weights, step if scale == 1.0 else step * scale)
        for obs in self.observers:
            obs.model_released(r, self.weights, self.workspace.spec)
        record = RoundRecord(
            round=r,
            clients=list(result.included),
            train_loss=weighted_loss(updates, set(result.included))
            if mechanism.releases_train_loss else None,
            seconds=time.perf_counter() - started,
            bytes_up=sum(result.bytes_up.values()),
            bytes_down=bytes_down + sum(result.bytes_down.values()),
            extra={
                **{f"seconds_{k}": v for k, v in result.seconds.items()},
                **mechanism.round_metrics(r, [u.cid for u in updates]),
                **self._notes,
                **(extra or {}),
            },
        )
        if evaluate_now or r % self.eval_every == 0:
            record.test_loss, record.test_accuracy = self.evaluate()
        self.history.append(record)
        for obs in self.observers:
            obs.round_finished(record)
        return record

    def _notify_received(self, cid: int, stage: str, message: bytes) -> None:
        for obs in self.observers:
            obs.server_received(self.round, cid, stage, message)


def weighted_loss(updates: Sequence[ClientUpdate], included: set[int]) -> float | None:
    """Sample-weighted mean training loss of the ``included`` updates (None if none)."""
    kept = [u for u in updates if u.cid in included]
    total = sum(u.num_samples for u in kept)
    return sum(u.train_loss * u.num_samples for u in kept) / total if total else None
