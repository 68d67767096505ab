"""Schedules: who trains from which model, and when the server aggregates.

* :class:`SynchronousRounds`: FedAvg's rounds; the sampled cohort trains from the current
  model and is aggregated at once.
* :class:`FedBuff`: asynchronous buffered aggregation (Nguyen et al. 2022) in simulated
  time. Clients train concurrently and finish after a seeded, per-client latency; their
  updates enter a buffer as they arrive; when ``buffer_size`` updates are buffered the
  server applies their staleness-weighted sum and the model version advances. One server
  step is one round, whose ``extra["sim_time"]`` is the simulated time of the step (unit:
  the median client's time to receive, train and send).

A schedule only asks the engine to train (:meth:`~privfed.federated.engine.Engine.train`);
the server then aggregates the cohort it returns, so any schedule runs on any engine.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from privfed.federated.engine import RoundPlan, TrainJob, TrainReport
from privfed.federated.history import History

if TYPE_CHECKING:
    from privfed.federated.server import Server

__all__ = ["BudgetSpent", "Cohort", "FedBuff", "LatencyModel", "Schedule",
           "SynchronousRounds", "synchronous_times"]


class BudgetSpent(Exception):
    """No client can release another update within its privacy budget."""


@dataclass
class Cohort:
    """The trained clients of one server step, ready to be aggregated.

    Attributes
    ----------
    round_id : int
        The server step (round) they are aggregated in.
    weights : dict of int to float
        Client id -> aggregation weight handed to the protocol (FedBuff: discounted).
    base_weights : dict of int to float
        Client id -> undiscounted weight (the server update's denominator).
    reports : list of TrainReport
    bytes_down : int
        Bytes the server sent to deliver models for this step.
    notes : dict
        Figures for the round's record (e.g. simulated time, skipped cohort).
    """

    round_id: int
    weights: dict[int, float]
    base_weights: dict[int, float]
    reports: list[TrainReport]
    bytes_down: int
    notes: dict[str, Any] = field(default_factory=dict)


class Schedule(Protocol):
    """Produces the next cohort to aggregate."""

    def next_cohort(self, server: Server) -> Cohort:
        """Train the next cohort on ``server.engine``; raise :class:`BudgetSpent` when no
        client can release another update."""

    def state_dict(self) -> dict[str, Any]:
        """What the next cohorts depend on besides the server's state, for a checkpoint."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


class SynchronousRounds:
    """FedAvg's synchronous rounds: sample, train from the current model, aggregate.

    The round's aggregation is known before its clients train (the cohort, their public
    weights), so the engine is told it (a :class:`~privfed.federated.engine.RoundPlan`) and
    may sum the updates as they are trained.

    The sampled clients whose privacy budget cannot afford the round sit it out; a cohort
    smaller than the policy's ``min_cohort`` is not trained and the round is skipped.
    """

    def next_cohort(self, server: Server) -> Cohort:
        """See :class:`Schedule`."""
        round_id, policy, notes = server.round + 1, server.policy, {}
        sampled = server.sampler.sample()
        cohort = [c for c in sampled if policy.may_participate(c)]
        if len(cohort) < len(sampled):
            notes["budget_exhausted"] = len(sampled) - len(cohort)
        if 0 < len(cohort) < policy.min_cohort:
            notes["skipped"] = (f"{len(cohort)} client(s) sampled, fewer than the "
                                f"{policy.min_cohort} a released sum must hold")
            cohort = []
        for obs in server.observers:
            obs.round_started(round_id, cohort)
        policy.record_participation(round_id, cohort)
        jobs = [TrainJob(c, round_id, server.weights, server.batch_seed(round_id, c))
                for c in cohort]
        weights = {c: server.engine.client_weight(c) for c in cohort}
        plan = RoundPlan(round_id, weights, server.received_hook())
        reports = server.engine.train(jobs, plan) if jobs else []
        return Cohort(round_id, weights, dict(weights), reports,
                      len(cohort) * server.model_bytes, notes)

    def state_dict(self) -> dict[str, Any]:
        """Empty: a round depends only on the server's state."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""


class LatencyModel:
    """Seeded simulated duration of one client job (download, local training, upload).

    Client ``c`` always takes ``exp(spread * z_c)`` time units, ``z_c ~ N(0, 1)`` drawn once
    from ``seed``: a log-normal spread of client speeds with median 1 (persistent stragglers,
    e.g. hospitals on slow links). ``spread = 0`` makes every client take exactly 1.

    Parameters
    ----------
    num_clients : int
    spread : float
        Standard deviation of the log-duration, >= 0.
    seed : int
    """

    def __init__(self, num_clients: int, spread: float, seed: int) -> None:
        if not spread >= 0:
            raise ValueError(f"federation.latency_spread must be >= 0, got {spread!r}")
        z = np.random.default_rng(seed).standard_normal(num_clients)
        self.durations = np.exp(spread * z) if spread else np.ones(num_clients)

    def duration(self, client_id: int) -> float:
        """Simulated time of one job of client ``client_id``."""
        return float(self.durations[client_id])


def synchronous_times(history: History, latency: LatencyModel) -> list[float]:
    """Simulated end time of each round of a synchronous run that waits for its slowest
    client.

    Returns
    -------
    list of float
        Cumulative time after each round of ``history``.
    """
    times, clock = [], 0.0
    for record in history.rounds:
        clock += max((latency.duration(c) for c in record.clients), default=0.0)
        times.append(clock)
    return times


@dataclass(order=True)
class _Job:
    finish: float
    seq: int
    client_id: int = field(compare=False)
    version: int = field(compare=False)
    params: torch.Tensor = field(compare=False)
    seed: int = field(compare=False)


class FedBuff:
    """FedBuff: apply the staleness-weighted sum of every ``buffer_size`` arriving updates.

    Clients are drawn in the order of the sampler's successive draws ("waves"), skipping
    those already training, so that ``concurrency`` jobs are always in flight; the job of
    client ``c`` from wave ``w`` uses the batch order ``batch_seed(w, c)``. A client trains
    when its job is due (in simulated time order) from the model it received when it
    started, so the engine trains exactly once per update that is sent: a local-DP client's
    ledger counts exactly the updates it sent, jobs still running when training stops cost
    no privacy, and a client whose budget cannot afford another update gets no new job.

    An update computed from model version ``v`` and applied at version ``v'`` has staleness
    ``s = v' - v`` and weight ``w_k (1 + s) ** -staleness_exponent``; the server update is
    the discounted weighted sum over the undiscounted total weight (FedBuff's
    ``1/K sum s(tau_i) delta_i`` with FedAvg sample weights). With zero latency spread and
    ``concurrency == buffer_size ==`` clients per round, this is synchronous FedAvg exactly.

    Parameters
    ----------
    num_clients : int
    buffer_size : int
        K, the updates aggregated per server step.
    concurrency : int
        Clients training at once, at most ``num_clients``.
    latency : LatencyModel
    staleness_exponent : float, default 0.5
        ``a`` in the discount ``(1 + s) ** -a`` (0.5: Nguyen et al.'s ``1 / sqrt(1 + s)``).
    """

    def __init__(
        self,
        num_clients: int,
        *,
        buffer_size: int,
        concurrency: int,
        latency: LatencyModel,
        staleness_exponent: float = 0.5,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"federation.buffer_size must be >= 1, got {buffer_size}")
        if not 1 <= concurrency <= num_clients:
            raise ValueError(f"federation.concurrency must be in [1, {num_clients}] "
                             f"(the number of clients), got {concurrency}")
        if not staleness_exponent >= 0:
            raise ValueError(f"federation.staleness_exponent must be >= 0, "
                             f"got {staleness_exponent!r}")
        if len(latency.durations) != num_clients:
            raise ValueError(f"latency model for {len(latency.durations)} clients, "
                             f"{num_clients} given")
        self.num_clients = num_clients
        self.buffer_size = buffer_size
        self.concurrency = concurrency
        self.latency = latency
        self.staleness_exponent = staleness_exponent
        self.clock = 0.0
        self.sent: Counter[int] = Counter()
        """Updates each client has sent (trained and uploaded) so far."""
        self._jobs: list[_Job] = []
        self._buffer: list[tuple[TrainReport, int]] = []
        self._waves: deque[tuple[int, int]] = deque()
        self._wave = 0
        self._seq = 0
        self._launched = 0

    def next_cohort(self, server: Server) -> Cohort:
        """Wait (in simulated time) for ``buffer_size`` updates; return them as a cohort."""
        while len(self._buffer) < self.buffer_size:
            self._launch(server)
            if not self._jobs:
                raise BudgetSpent(f"privacy budget of every client spent after server step "
                                  f"{server.round}")
            self._receive(server)
        batch, self._buffer = self._buffer[: self.buffer_size], self._buffer[self.buffer_size:]
        round_id = server.round + 1
        reports = [report for report, _ in batch]
        for obs in server.observers:
            obs.round_started(round_id, [r.client_id for r in reports])
        staleness = {r.client_id: round_id - 1 - version for r, version in batch}
        base = {c: server.engine.client_weight(c) for c in staleness}
        weights = {c: w * (1.0 + staleness[c]) ** -self.staleness_exponent
                   for c, w in base.items()}
        notes = {
            "sim_time": self.clock,
            "staleness_max": max(staleness.values()),
            "staleness_mean": float(np.mean(list(staleness.values()))),
        }
        bytes_down, self._launched = self._launched * server.model_bytes, 0
        return Cohort(round_id, weights, base, reports, bytes_down, notes)

    def state_dict(self) -> dict[str, Any]:
        """The simulated clock, the jobs in flight (with the model version each started
        from, each version's weights saved once), the buffered reports, the waves not yet
        launched and the counters, for a checkpoint.

        The buffered clients' updates are the engine's (its pending updates)."""
        return {
            "clock": self.clock,
            "sent": dict(self.sent),
            "jobs": [[j.finish, j.seq, j.client_id, j.version, j.seed] for j in self._jobs],
            "models": {j.version: j.params.clone() for j in self._jobs},
            "buffer": [[asdict(report), version] for report, version in self._buffer],
            "waves": [list(w) for w in self._waves],
            "counters": [self._wave, self._seq, self._launched],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output: the next server steps are those this
        schedule would have produced.

        Raises
        ------
        ValueError
            A job names a client outside the federation.
        """
        models = state["models"]
        jobs = [_Job(float(finish), int(seq), int(client), int(version), models[version],
                     int(seed)) for finish, seq, client, version, seed in state["jobs"]]
        if any(not 0 <= j.client_id < self.num_clients for j in jobs):
            raise ValueError(f"FedBuff state has a job of a client outside "
                             f"0..{self.num_clients - 1}")
        self.clock = float(state["clock"])
        self.sent = Counter({int(c): int(n) for c, n in state["sent"].items()})
        self._jobs = jobs  # saved in heap order
        self._buffer = [(TrainReport(**report), int(version))
                        for report, version in state["buffer"]]
        self._waves = deque((int(w), int(c)) for w, c in state["waves"])
        self._wave, self._seq, self._launched = (int(n) for n in state["counters"])

    def _launch(self, server: Server) -> None:
        """Start jobs from the current model until ``concurrency`` are in flight (or every
        client that can still afford a job is busy)."""
        busy = {job.client_id for job in self._jobs}
        idle = {c for c in range(self.num_clients)
                if c not in busy and server.policy.may_participate(c)}
        while len(self._jobs) < self.concurrency and idle:
            if not self._waves:
                self._wave += 1
                self._waves.extend((self._wave, c) for c in server.sampler.sample())
                continue
            wave, client_id = self._waves.popleft()
            if client_id not in idle:
                continue
            idle.discard(client_id)
            self._seq += 1
            heapq.heappush(self._jobs, _Job(
                self.clock + self.latency.duration(client_id), self._seq, client_id, server.round,
                server.weights.clone(), server.batch_seed(wave, client_id),
            ))
            self._launched += 1

    def _receive(self, server: Server) -> None:
        """Advance the clock to the next finish time; train and buffer every job due then."""
        self.clock = self._jobs[0].finish
        due: list[_Job] = []
        while self._jobs and self._jobs[0].finish == self.clock:
            due.append(heapq.heappop(self._jobs))
        for job in due:
            server.policy.record_participation(job.seq, [job.client_id])
        jobs = [TrainJob(j.client_id, j.seq, j.params, j.seed) for j in due]
        reports = server.engine.train(jobs)
        for job, report in zip(due, reports, strict=True):
            self._buffer.append((report, job.version))
            self.sent[job.client_id] += 1

