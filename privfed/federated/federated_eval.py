"""Federated evaluation: sampled clients evaluate the global model on their held-out data.

Each sampled client that holds validation data computes a vector of counts (confusion
matrix, loss sum, score histograms; :class:`~privfed.federated.metrics.EvaluationCounts`)
and sends it through the same aggregation protocol as the updates; the server computes the
pooled metrics from the sum. Where the protocol shows the server each client's vector
(plain aggregation) it also records each client's metrics and the worst client's; under
HE or masking it learns the sum only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from privfed.federated.engine import EvaluationResult, RoundSkipped
from privfed.federated.metrics import EvaluationCounts, metrics_from_counts, worst_client

if TYPE_CHECKING:
    from privfed.federated.server import Server

__all__ = ["FederatedEvaluation"]


class FederatedEvaluation:
    """When and on whom the server runs federated evaluation.

    Parameters
    ----------
    counts : EvaluationCounts
        The count vector's layout (number of classes, AUC bins).
    every : int
        Run after every this many rounds (and after the last), >= 1.
    fraction : float
        Share of the clients sampled each time, in (0, 1]; at least one.
    seed : int
        Seed of the evaluation cohorts (independent of training's client sampling).
    """

    def __init__(self, counts: EvaluationCounts, *, every: int, fraction: float,
                 seed: int) -> None:
        if every < 1:
            raise ValueError(f"federation.federated_eval_every must be >= 1 here, got {every}")
        if not 0 < fraction <= 1:
            raise ValueError(f"federation.federated_eval_fraction must be in (0, 1], got "
                             f"{fraction}")
        self.counts = counts
        self.every = every
        self.fraction = fraction
        self.seed = seed

    def due(self, round_id: int) -> bool:
        """Whether evaluation runs after round ``round_id``."""
        return round_id % self.every == 0

    def cohort(self, round_id: int, num_clients: int) -> list[int]:
        """The clients sampled to evaluate after ``round_id`` (seeded, without replacement)."""
        size = min(num_clients, max(1, math.floor(self.fraction * num_clients + 0.5)))
        rng = np.random.default_rng([self.seed, round_id])
        return sorted(int(c) for c in rng.choice(num_clients, size=size, replace=False))

    def run(self, server: Server, round_id: int) -> dict[str, Any]:
        """Evaluate the server's current model on a sampled cohort; the JSON-able record
        (see :attr:`privfed.federated.RoundRecord.federated`; ``"skipped"`` says why the
        protocol released no sum, if it did not)."""
        engine = server.engine
        cohort = self.cohort(round_id, engine.num_clients)
        try:
            result = engine.evaluate(round_id, cohort, server.weights, self.counts,
                                     server.received_hook())
        except RoundSkipped as err:  # e.g. too few clients to unmask: skip, never abort
            result = EvaluationResult(np.zeros(0), {}, ())
            skipped = str(err)
        else:
            skipped = None
        record: dict[str, Any] = {
            "included": list(result.included), "bytes_up": result.bytes_up,
            "bytes_down": result.bytes_down, "pooled": None, "clients": {}, "worst": None,
            "skipped": skipped,
        }
        if not result.included:
            return record
        record["pooled"] = self._metrics(result.total)
        clients = {c: self._metrics(v) for c, v in sorted(result.per_client.items())}
        record["clients"] = {str(c): m for c, m in clients.items()}
        if clients:
            client_id, _ = worst_client(clients)
            record["worst"] = {"client": client_id, **clients[client_id]}
        return record

    def _metrics(self, vector: np.ndarray) -> dict[str, Any]:
        counts = self.counts
        return metrics_from_counts(vector, counts.num_classes, counts.bins)
