"""The server's round: cohort from a schedule, aggregate from an engine, one optimizer step.

One round, as the server sees it::

    schedule  -> the cohort, trained by the engine from the global model
    engine    -> the aggregate of the cohort's updates (client halves of the stages and the
                 secure protocol run where the clients are)
    pipeline  -> the stages' server halves on the weighted sum, in reverse order
    weighting -> the server update (the sum over the algorithm's denominator)
    optimizer -> the new global model -> evaluation, history, observers

The server holds no client data and imports no engine, protocol or privacy mechanism.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from privfed.federated.engine import (
    Aggregate,
    CheckpointableEngine,
    Engine,
    RoundSkipped,
    ServerHook,
    TrainingDivergedError,
    TrainReport,
)
from privfed.federated.evaluation import evaluate, predict_logits
from privfed.federated.federated_eval import FederatedEvaluation
from privfed.federated.history import History, RoundRecord
from privfed.federated.metrics_exact import exact_metrics
from privfed.federated.observers import Observer
from privfed.federated.optimizers import ServerOptimizer
from privfed.federated.params import FlatParameters
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.sampling import ClientSampler
from privfed.federated.schedules import BudgetSpent, Cohort, Schedule, SynchronousRounds
from privfed.federated.stages import Pipeline, ServerAggregate
from privfed.federated.weighting import SampleWeighting, Weighting

__all__ = ["Server"]

BatchSeed = Callable[[int, int], int]
"""Maps ``(round or wave, client id)`` to the seed of that client's batch order."""


class Server:
    """Runs FedAvg rounds of a schedule on an engine.

    Parameters
    ----------
    workspace : FlatParameters
        The server's model, bound to flat buffers; its current weights are the initial
        global model (the in-process engine trains its clients in the same workspace).
    engine : Engine
        Where the clients train and how their updates are aggregated, e.g.
        :class:`~privfed.federated.inprocess.InProcessEngine`.
    sampler : ClientSampler
    optimizer : ServerOptimizer
    test_data : (torch.Tensor, torch.Tensor) or None
        A central test set for evaluating the global model; None: none (a federation of
        sites' own data may have none, and evaluates on the clients).
    batch_seed : callable
        ``(round, client id) -> int``, the seed of the client's batch order.
    schedule : Schedule, optional
        Default :class:`~privfed.federated.schedules.SynchronousRounds`.
    pipeline : Pipeline, optional
        The update stages (the same object the in-process engine runs the client halves
        of); default none.
    weighting : Weighting, optional
        Default FedAvg's :class:`~privfed.federated.weighting.SampleWeighting`.
    policy : ParticipationPolicy, optional
        Privacy accounting and budgets; default none.
    eval_every : int, default 1
        Evaluate the global model every this many rounds (and always after the last).
    federated_evaluation : FederatedEvaluation, optional
        Evaluate on the clients' held-out data too (see
        :class:`~privfed.federated.federated_eval.FederatedEvaluation`); default: not.
    observers : sequence of Observer, optional
    """

    def __init__(
        self,
        workspace: FlatParameters,
        engine: Engine,
        *,
        sampler: ClientSampler,
        optimizer: ServerOptimizer,
        test_data: tuple[torch.Tensor, torch.Tensor] | None,
        batch_seed: BatchSeed,
        schedule: Schedule | None = None,
        pipeline: Pipeline | None = None,
        weighting: Weighting | None = None,
        policy: ParticipationPolicy | None = None,
        eval_every: int = 1,
        federated_evaluation: FederatedEvaluation | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        if sampler.num_clients != engine.num_clients:
            raise ValueError(f"sampler draws from {sampler.num_clients} clients but the engine "
                             f"has {engine.num_clients}")
        if eval_every < 1:
            raise ValueError(f"federation.eval_every must be >= 1, got {eval_every}")
        self.workspace = workspace
        self.engine = engine
        self.sampler = sampler
        self.optimizer = optimizer
        self.test_data = test_data
        self.batch_seed = batch_seed
        self.schedule = schedule or SynchronousRounds()
        self.pipeline = pipeline or Pipeline()
        self.weighting = weighting or SampleWeighting()
        self.policy = policy or ParticipationPolicy()
        self.eval_every = eval_every
        self.federated_evaluation = federated_evaluation
        self.observers = list(observers)
        self.weights = workspace.data.detach().to("cpu", copy=True)
        self.history = History()
        self.round = 0

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
                if not self.policy.round_allowed():
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

        The schedule's cohort excludes clients whose privacy budget cannot afford the
        round (``extra["budget_exhausted"]``); a cohort smaller than the policy's
        ``min_cohort``, or one whose secure aggregation cannot complete, is skipped
        (``extra["skipped"]``): the model does not move, and privacy is still accounted.
        """
        started = time.perf_counter()
        cohort = self.schedule.next_cohort(self)
        self.round = cohort.round_id
        aggregate, notes = self._aggregate(cohort)
        step = self._server_step(aggregate, cohort.base_weights)
        self.optimizer.step(self.weights, step)
        check_global_model(self.weights, self.round)
        for obs in self.observers:
            obs.model_released(self.round, self.weights, self.workspace.spec)
        record = self._record(cohort, aggregate, started, {**cohort.notes, **notes})
        if evaluate_now or record.round % self.eval_every == 0:
            self._evaluate_central(record)
        federated = self.federated_evaluation
        if federated is not None and (evaluate_now or federated.due(record.round)):
            record.federated = federated.run(self, record.round)
        self.history.append(record)
        for obs in self.observers:
            obs.round_finished(record)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything the next round depends on, between rounds: the global model (and the
        workspace's buffers), the round, the history, and the state of the optimizer,
        sampler, schedule, privacy ledgers, stages (server halves and every client's) and
        engine, with torch's global generator (e.g. dropout). Tensors, numbers, strings,
        lists and dicts only (``torch.load(..., weights_only=True)`` reads it back).

        Restored by :meth:`load_state_dict` into a server built from the same config, the
        following rounds are those this server would run, bit for bit where its randomness
        is seeded (noise from OS entropy, ``privacy.secure_mode``, is drawn afresh).

        Raises
        ------
        TypeError
            The engine's clients keep state this process cannot save (Flower nodes).
        """
        if not isinstance(self.engine, CheckpointableEngine):
            raise TypeError(f"{type(self.engine).__name__} keeps its clients' state on "
                            "their nodes: checkpoints need the in-process engine")
        return {
            "round": self.round,
            "weights": self.weights.clone(),
            "buffers": {n: b.detach().cpu().clone()
                        for n, b in self.workspace.module.named_buffers()},
            "history": self.history.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "policy": self.policy.state_dict(),
            "stages": {"server": self.pipeline.server_state(),
                       "clients": {c: state for c in range(self.engine.num_clients)
                                   if (state := self.pipeline.state_dict(c))}},
            "engine": self.engine.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (see there).

        Raises
        ------
        ValueError
            ``state`` is not of a server of this federation (another model size, clients,
            stages or privacy ledgers).
        TypeError
            As :meth:`state_dict`.
        """
        if not isinstance(self.engine, CheckpointableEngine):
            raise TypeError(f"{type(self.engine).__name__} cannot restore its clients' state")
        weights = state["weights"]
        if weights.shape != self.weights.shape:
            raise ValueError(f"saved model of {weights.numel()} parameters, this federation's "
                             f"has {self.weights.numel()}")
        buffers = dict(self.workspace.module.named_buffers())
        if set(state["buffers"]) != set(buffers):
            raise ValueError(f"saved model buffers {sorted(state['buffers'])}, this model has "
                             f"{sorted(buffers)}")
        self.round = int(state["round"])
        self.weights = weights.to(torch.float32, copy=True)
        for name, value in state["buffers"].items():
            buffers[name].copy_(value)
        self.history = History.from_state_dict(state["history"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.schedule.load_state_dict(state["schedule"])
        self.policy.load_state_dict(state["policy"])
        self.pipeline.load_server_state(state["stages"]["server"])
        for client_id, client_state in state["stages"]["clients"].items():
            self.pipeline.load_state_dict(int(client_id), client_state)
        self.engine.load_state_dict(state["engine"])
        torch.set_rng_state(state["torch_rng"])

    def evaluate(self) -> tuple[float, float]:
        """Loss and accuracy of the current global model on the central test data.

        Raises
        ------
        ValueError
            Without a central test set.
        """
        if self.test_data is None:
            raise ValueError("this server has no central test set")
        self.workspace.load(self.weights)
        return evaluate(self.workspace.module, *self.test_data)

    def test_metrics(self) -> dict[str, Any] | None:
        """The current global model's classification metrics on the central test set
        (:func:`privfed.federated.metrics.exact_metrics`, scikit-learn's), or None without
        one."""
        if self.test_data is None:
            return None
        self.workspace.load(self.weights)
        logits = predict_logits(self.workspace.module, self.test_data[0])
        labels = self.test_data[1].cpu().numpy()
        return exact_metrics(labels, torch.softmax(logits.double(), 1).numpy())

    def _evaluate_central(self, record: RoundRecord) -> None:
        """The central test set's loss and accuracy, where there is one."""
        if self.test_data is not None:
            record.test_loss, record.test_accuracy = self.evaluate()

    def _aggregate(self, cohort: Cohort) -> tuple[Aggregate, dict[str, Any]]:
        """The engine's aggregate of the cohort, released to the observers."""
        length = self.pipeline.output_length(self.weights.numel())
        notes: dict[str, Any] = {}
        aggregate = Aggregate.empty(length)
        if cohort.weights:
            hook = self.received_hook()
            try:
                aggregate = self.engine.aggregate(cohort.round_id, cohort.weights, length, hook)
            except RoundSkipped as err:  # e.g. one client under masking: skip, never abort
                notes["skipped"] = str(err)
                aggregate = Aggregate.empty(length, dropped=sorted(cohort.weights))
        for obs in self.observers:
            obs.aggregate_released(self.round, aggregate.mean)
        self.policy.record_release(self.round)
        return aggregate, notes

    def _server_step(self, aggregate: Aggregate, base_weights: Mapping[int, float]) -> torch.Tensor:
        """The stages' server halves on the weighted sum, then the weighting's update."""
        released = ServerAggregate(aggregate.mean, aggregate.total_weight, aggregate.included)
        released = self.pipeline.server(self.round, released)
        base_total = sum(base_weights[c] for c in released.included)
        return self.weighting.step(released, base_total)

    def _record(
        self, cohort: Cohort, aggregate: Aggregate, started: float, notes: Mapping[str, Any]
    ) -> RoundRecord:
        clipped = clipped_example_fraction(cohort.reports, set(aggregate.included))
        return RoundRecord(
            round=self.round,
            clients=list(aggregate.included),
            train_loss=weighted_loss(cohort.reports, set(aggregate.included)),
            seconds=time.perf_counter() - started,
            bytes_up=sum(aggregate.bytes_up.values()),
            bytes_down=cohort.bytes_down + sum(aggregate.bytes_down.values()),
            extra={
                **{f"seconds_{k}": v for k, v in aggregate.seconds.items()},
                **self.policy.metrics(),
                **self.pipeline.metrics(),
                **({} if clipped is None else {"clipped_example_fraction": clipped}),
                **notes,
            },
        )

    def _evaluate_last(self) -> None:
        """Evaluate the final model if the last round run was not evaluated."""
        if not self.history.rounds:
            return
        last = self.history.rounds[-1]
        if last.test_accuracy is None:
            self._evaluate_central(last)
        if self.federated_evaluation is not None and last.federated is None:
            last.federated = self.federated_evaluation.run(self, last.round)

    def received_hook(self) -> ServerHook | None:
        """What the engine calls with each message the server receives (for the
        observers' ``server_received``); None without observers."""
        return self._notify_received if self.observers else None

    def _notify_received(self, client_id: int, stage: str, message: bytes) -> None:
        for obs in self.observers:
            obs.server_received(self.round, client_id, stage, message)


def weighted_loss(reports: Sequence[TrainReport], included: set[int]) -> float | None:
    """Sample-weighted mean training loss of the ``included`` clients that reported one
    (None if none did, e.g. under DP where the loss is not released; NaN: a client that
    took no step, ``federation.drop_last``)."""
    kept = [r for r in reports if r.client_id in included and r.train_loss is not None
            and not math.isnan(r.train_loss) and r.num_samples]
    total = sum(r.num_samples for r in kept)
    return sum(r.train_loss * r.num_samples for r in kept) / total if total else None


def clipped_example_fraction(reports: Sequence[TrainReport], included: set[int]) -> float | None:
    """The fraction of the ``included`` clients' DP-SGD examples whose gradient norm exceeded
    the clip, over the examples of their batches (None where no client reported its counts,
    e.g. under private diagnostics, or none saw an example)."""
    kept = [r for r in reports if r.client_id in included and r.examples_seen is not None]
    seen = sum(r.examples_seen for r in kept)
    return sum(r.examples_clipped for r in kept) / seen if seen else None


def check_global_model(weights: torch.Tensor, round_id: int) -> None:
    """Stop a run whose global model left float32's finite range (e.g. a server learning
    rate or momentum that amplifies every step), before it is released or evaluated.

    Raises
    ------
    TrainingDivergedError
        ``weights`` holds NaN or infinite values.
    """
    if not torch.isfinite(weights.sum()):
        raise TrainingDivergedError(
            f"round {round_id}: the global model has NaN/Inf values after the server's "
            "step, so training diverged; lower federation.server_lr (or server_momentum, "
            "federation.lr)")
