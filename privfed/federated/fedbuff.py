"""Asynchronous buffered aggregation (FedBuff, Nguyen et al. 2022) in simulated time.

Clients train concurrently and finish after a seeded, per-client latency. Their updates
enter a buffer as they arrive; when ``buffer_size`` updates are buffered the server applies
their staleness-weighted mean and the model version advances. One server step is one
:class:`~privfed.federated.history.RoundRecord`, whose ``extra["sim_time"]`` is the simulated
time of the step (unit: the median client's time to receive, train and send).

A client trains when its update is due (in simulated time order) from the model it received
when it started, so ``Client.fit`` runs exactly once per update that is sent: a local-DP
client's ledger counts exactly the updates it sent, jobs still running when training stops
cost no privacy, and a client whose budget cannot afford another update gets no new job
(training stops when no client can).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from privfed.federated.client import Client, ClientUpdate
from privfed.federated.history import History, RoundRecord
from privfed.federated.params import FlatParameters
from privfed.federated.server import BudgetSpent, Server

__all__ = ["LatencyModel", "FedBuffServer", "synchronous_times"]


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

    def duration(self, cid: int) -> float:
        """Simulated time of one job of client ``cid``."""
        return float(self.durations[cid])


def synchronous_times(history: History, latency: LatencyModel) -> list[float]:
    """Simulated end time of each round of a synchronous run that waits for its slowest client.

    Parameters
    ----------
    history : History
        Of a synchronous :class:`~privfed.federated.server.Server` run.
    latency : LatencyModel

    Returns
    -------
    list of float
        Cumulative time after each round.
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
    cid: int = field(compare=False)
    version: int = field(compare=False)
    weights: torch.Tensor = field(compare=False)
    seed: int = field(compare=False)


class FedBuffServer(Server):
    """FedBuff: apply the staleness-weighted mean of every ``buffer_size`` arriving updates.

    Clients are drawn in the order of the sampler's successive draws ("waves"), skipping those
    already training, so that ``concurrency`` jobs are always in flight; the job of client
    ``c`` from wave ``w`` uses the batch order ``batch_seed(w, c)``. An update computed from
    model version ``v`` and applied at version ``v'`` has staleness ``s = v' - v`` and weight
    ``mechanism.weight(update) * (1 + s) ** -staleness_exponent``; the server step is the
    weighted mean times ``sum(discounted weights) / sum(weights)`` (FedBuff's
    ``1/K sum s(tau_i) delta_i`` with FedAvg sample weights). With zero latency spread,
    ``concurrency == buffer_size ==`` clients per round, this is synchronous FedAvg exactly.

    Parameters
    ----------
    workspace : FlatParameters
    clients : sequence of Client
    buffer_size : int
        K, the updates aggregated per server step.
    concurrency : int
        Clients training at once, at most the number of clients.
    latency : LatencyModel
    staleness_exponent : float, default 0.5
        ``a`` in the discount ``(1 + s) ** -a`` (0.5: Nguyen et al.'s ``1 / sqrt(1 + s)``).
    **kwargs
        The other arguments of :class:`~privfed.federated.server.Server`. User-level DP
        mechanisms (central, distributed) assume sampled rounds and are not supported.
    """

    def __init__(
        self,
        workspace: FlatParameters,
        clients: Sequence[Client],
        *,
        buffer_size: int,
        concurrency: int,
        latency: LatencyModel,
        staleness_exponent: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(workspace, clients, **kwargs)
        if buffer_size < 1:
            raise ValueError(f"federation.buffer_size must be >= 1, got {buffer_size}")
        if not 1 <= concurrency <= len(self.clients):
            raise ValueError(f"federation.concurrency must be in [1, {len(self.clients)}] "
                             f"(the number of clients), got {concurrency}")
        if not staleness_exponent >= 0:
            raise ValueError(f"federation.staleness_exponent must be >= 0, "
                             f"got {staleness_exponent!r}")
        if len(latency.durations) != len(self.clients):
            raise ValueError(f"latency model for {len(latency.durations)} clients, "
                             f"{len(self.clients)} given")
        self.buffer_size = buffer_size
        self.concurrency = concurrency
        self.latency = latency
        self.staleness_exponent = staleness_exponent
        self.clock = 0.0
        self.sent: Counter[int] = Counter()
        """Updates each client has sent (trained and uploaded) so far."""
        self._jobs: list[_Job] = []
        self._buffer: list[tuple[ClientUpdate, int]] = []
        self._waves: deque[tuple[int, int]] = deque()
        self._wave = 0
        self._seq = 0
        self._launched = 0

    def run_round(self, evaluate_now: bool = False) -> RoundRecord:
        """Wait (in simulated time) for ``buffer_size`` updates, apply them, return the record."""
        started = time.perf_counter()
        self._notes = {}
        while len(self._buffer) < self.buffer_size:
            self._launch()
            if not self._jobs:
                raise BudgetSpent(f"privacy budget of every client spent after server step "
                                  f"{self.round}")
            self._receive()
        batch, self._buffer = self._buffer[: self.buffer_size], self._buffer[self.buffer_size:]
        self.round += 1
        r = self.round
        updates = [u for u, _ in batch]
        for obs in self.observers:
            obs.round_started(r, [u.cid for u in updates])
        staleness = {u.cid: r - 1 - version for u, version in batch}
        base = {u.cid: self.mechanism.weight(u) for u in updates}
        weights = {c: w * (1.0 + staleness[c]) ** -self.staleness_exponent
                   for c, w in base.items()}
        result = self._aggregate(r, updates, weights)
        record = self._apply(
            r, updates, result, started=started, evaluate_now=evaluate_now,
            bytes_down=self._launched * self.model_bytes,
            scale=result.total_weight / sum(base[c] for c in result.included),
            extra={
                "sim_time": self.clock,
                "staleness_max": max(staleness.values()),
                "staleness_mean": float(np.mean(list(staleness.values()))),
            },
        )
        self._launched = 0
        return record

    def _launch(self) -> None:
        """Start jobs from the current model until ``concurrency`` are in flight (or every
        client that can still afford a job is busy)."""
        busy = {job.cid for job in self._jobs}
        idle = {c for c in range(len(self.clients))
                if c not in busy and self.mechanism.may_participate(c)}
        while len(self._jobs) < self.concurrency and idle:
            if not self._waves:
                self._wave += 1
                self._waves.extend((self._wave, c) for c in self.sampler.sample())
                continue
            wave, cid = self._waves.popleft()
            if cid not in idle:
                continue
            idle.discard(cid)
            self._seq += 1
            heapq.heappush(self._jobs, _Job(
                self.clock + self.latency.duration(cid), self._seq, cid, self.round,
                self.weights.clone(), self.batch_seed(wave, cid),
            ))
            self._launched += 1

    def _receive(self) -> None:
        """Advance the clock to the next finish time; train and buffer every job due then."""
        self.clock = self._jobs[0].finish
        while self._jobs and self._jobs[0].finish == self.clock:
            job = heapq.heappop(self._jobs)
            self.mechanism.record_participation(job.seq, [job.cid])
            update = self._train(self.clients[job.cid], job.seed, job.weights, self.round + 1)
            self._buffer.append((update, job.version))
            self.sent[job.cid] += 1

