"""What a schedule asks of an engine: train clients, then aggregate their updates.

An engine runs the clients' side of a round somewhere (in this process, or on Flower
nodes) and drives the aggregation protocol; a schedule (synchronous rounds, FedBuff) decides
who trains from which model and when the server aggregates. Any schedule runs on any
engine. The types here are plain data; the core imports no engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["EVALUATION_ROUND_BASE", "Aggregate", "AggregationProtocol",
           "CheckpointableEngine", "Engine",
           "EvaluationProtocol", "EvaluationResult", "RoundPlan", "RoundSkipped",
           "RunningAggregate", "StreamingAggregation", "TrainJob", "TrainReport",
           "TrainingDivergedError", "evaluation_hook", "evaluation_round_id",
           "evaluation_stage"]

EVALUATION_ROUND_BASE = 2**40
"""Federated evaluation runs the aggregation protocol under round ids from here on, so that
no protocol run of an evaluation shares a round id (keys, nonces, a key holder's one
decryption per round) with a training round."""


def evaluation_round_id(round_id: int) -> int:
    """The protocol round id of the federated evaluation after training round ``round_id``."""
    return EVALUATION_ROUND_BASE + round_id


def evaluation_stage(stage: str = "") -> str:
    """The name observers see for a message of federated evaluation: ``"evaluation"`` (the
    counts in the clear) or ``"evaluation:<protocol stage>"``, never a training stage's."""
    return f"evaluation:{stage}" if stage else "evaluation"


def evaluation_hook(on_server_message: ServerHook | None) -> ServerHook | None:
    """``on_server_message`` with each protocol stage renamed by :func:`evaluation_stage`."""
    if on_server_message is None:
        return None
    return lambda client, stage, message: on_server_message(client, evaluation_stage(stage),
                                                            message)


class TrainingDivergedError(FloatingPointError):
    """A client's update is not finite: local training diverged."""


class RoundSkipped(Exception):
    """The aggregation protocol could not release this round's sum (e.g. too few clients
    survived to unmask it); the round is skipped, never aborted."""


@dataclass(frozen=True)
class TrainJob:
    """One client's local training, as the server asks for it.

    Attributes
    ----------
    client_id : int
    release_id : int
        The round (or FedBuff job) the update is released in; the privacy ledger counts
        one release per id.
    params : torch.Tensor
        Flat float32 global model to start from (not modified).
    seed : int
        Seed of the client's batch order.
    """

    client_id: int
    release_id: int
    params: torch.Tensor
    seed: int


@dataclass(frozen=True)
class TrainReport:
    """What a client tells the server after training (its update stays with it until the
    aggregation protocol runs).

    Attributes
    ----------
    client_id : int
    steps : int
        Local optimisation steps taken.
    num_samples : int or None
        n_k; None where the policy does not release it.
    train_loss : float or None
        Mean local training loss; None where the policy does not release it.
    examples_seen, examples_clipped : int or None
        DP-SGD's examples in the round's batches and those clipped
        (:class:`~privfed.federated.client.ClientUpdate`); None where the policy does not
        release them (``ParticipationPolicy.releases_exact_diagnostics``).
    """

    client_id: int
    steps: int
    num_samples: int | None = None
    train_loss: float | None = None
    examples_seen: int | None = None
    examples_clipped: int | None = None


@dataclass(frozen=True)
class Aggregate:
    """What the aggregation protocol releases to the server in one round.

    Attributes
    ----------
    mean : torch.Tensor
        Flat float32 weighted mean of the included clients' vectors.
    total_weight : float
        Sum of the included clients' (public) weights.
    included : tuple of int
        Clients whose vectors are in the mean.
    dropped : tuple of int
        Clients of the round whose vectors are not.
    bytes_up, bytes_down : dict of int to int
        Bytes each client sent to / received from the server in the protocol.
    seconds : dict of str to float
        ``"encode"`` (client time, summed), ``"aggregate"`` (server), ``"decode"``.
    """

    mean: torch.Tensor
    total_weight: float
    included: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, length: int, dropped: Sequence[int] = ()) -> Aggregate:
        """The aggregate of a round without clients: zeros of ``length``."""
        return cls(torch.zeros(length), 0.0, (), tuple(dropped))


ServerHook = Callable[[int, str, bytes], None]
"""Called as ``(client_id, stage, message)`` for every message the server receives."""


@dataclass(frozen=True)
class RoundPlan:
    """How the server will aggregate a round's updates, where it knows before they train
    (synchronous rounds: the same round, the whole cohort, the public weights).

    An engine may then add each update into the round's aggregate as the client trains
    (:class:`StreamingAggregation`) instead of keeping it until :meth:`Engine.aggregate`,
    which must then be called with exactly these arguments.

    Attributes
    ----------
    round_id : int
    weights : dict of int to float
        Client id -> aggregation weight: every trained client, nobody else.
    on_server_message : ServerHook or None
        What the server's :meth:`Engine.aggregate` call will pass.
    """

    round_id: int
    weights: Mapping[int, float]
    on_server_message: ServerHook | None = None

    def matches(
        self, round_id: int, weights: Mapping[int, float], on_server_message: ServerHook | None
    ) -> bool:
        """Whether an aggregation with these arguments is the planned one."""
        return (round_id == self.round_id and dict(weights) == dict(self.weights)
                and on_server_message == self.on_server_message)


class AggregationProtocol(Protocol):
    """An aggregation protocol run in one process (all parties here, bytes between them);
    :class:`privfed.aggregation.SecureAggregation` adapts any :mod:`privfed.secure`
    aggregator."""

    def aggregate(
        self, round_id: int, vectors: Mapping[int, torch.Tensor], weights: Mapping[int, float],
        on_server_message: ServerHook | None = None,
    ) -> Aggregate:
        """The weighted mean of the clients' flat float32 ``vectors`` with public ``weights``.

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum (e.g. too many dropouts).
        """


class RunningAggregate(Protocol):
    """One round of a protocol that sums in the clear, fed one client at a time: holds a
    running sum, not the clients' vectors."""

    def add(self, vectors: Mapping[int, torch.Tensor], weights: Mapping[int, float]) -> None:
        """Add some clients' flat float32 CPU ``vectors`` with their public ``weights``
        (each call's clients after every earlier call's, in id order)."""

    def result(self) -> Aggregate:
        """What :meth:`AggregationProtocol.aggregate` returns for the added vectors and
        weights, bit for bit, or the error it raises.

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum.
        """


@runtime_checkable
class StreamingAggregation(Protocol):
    """An aggregation protocol that can also sum a round as its vectors arrive."""

    def running(
        self, round_id: int, on_server_message: ServerHook | None = None
    ) -> RunningAggregate | None:
        """A running aggregate of round ``round_id`` equal to :meth:`aggregate`'s, or None
        where the protocol needs every vector at once (e.g. to build its messages)."""


@dataclass(frozen=True)
class EvaluationProtocol:
    """How the clients' evaluation counts reach the server.

    Attributes
    ----------
    aggregation : AggregationProtocol
        The configured secure aggregator, without any lossy payload codec.
    scale : float
        Each client sends ``counts * scale`` (1 in the clear; under a secure aggregator a
        public factor that keeps every entry within its input range).
    reveals_clients : bool
        Whether the server sees each client's counts (plain aggregation), so that it may
        record each client's metrics and the worst client's.
    """

    aggregation: AggregationProtocol
    scale: float = 1.0
    reveals_clients: bool = True


@dataclass(frozen=True)
class EvaluationResult:
    """What the server learns from one federated evaluation.

    Attributes
    ----------
    total : numpy.ndarray
        float64 sum of the included clients' count vectors (integers, rounded).
    per_client : dict of int to numpy.ndarray
        Each client's vector, where the protocol reveals them; else empty.
    included : tuple of int
        The clients whose counts are in ``total``.
    bytes_up, bytes_down : int
        Bytes of the protocol run, all clients together.
    """

    total: Any
    per_client: dict[int, Any]
    included: tuple[int, ...]
    bytes_up: int = 0
    bytes_down: int = 0


@runtime_checkable
class CheckpointableEngine(Protocol):
    """An engine whose clients' state between rounds can be saved and restored (the
    in-process engine; on Flower the state lives on the nodes)."""

    def state_dict(self) -> dict[str, Any]:
        """The clients' state between rounds that the server does not hold (e.g. updates
        trained but not yet aggregated)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


class Engine(Protocol):
    """Where the clients train and how their updates are aggregated.

    Attributes
    ----------
    num_clients : int
        The federation's clients are ``0 .. num_clients - 1``.
    """

    num_clients: int

    def client_weight(self, client_id: int) -> float:
        """The public aggregation weight of ``client_id``."""

    def train(
        self, jobs: Sequence[TrainJob], plan: RoundPlan | None = None
    ) -> list[TrainReport]:
        """Run the jobs (the clients receive the model and the stages' broadcast); each
        client keeps its update until :meth:`aggregate`, unless ``plan`` says how that
        call will aggregate them (the engine may then sum them as they are trained).

        Raises
        ------
        TrainingDivergedError
            A client's update is not finite.
        """

    def aggregate(
        self, round_id: int, weights: Mapping[int, float], length: int,
        on_server_message: ServerHook | None = None,
    ) -> Aggregate:
        """Aggregate the pending update of every client in ``weights`` with those weights
        (or release the sum of a round :meth:`train` summed as its ``plan`` said).

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum.
        """

    def evaluate(
        self, round_id: int, client_ids: Sequence[int], params: torch.Tensor,
        counts: Any, on_server_message: ServerHook | None = None,
    ) -> EvaluationResult:
        """Federated evaluation: each client in ``client_ids`` that holds validation data
        evaluates the flat float32 model ``params`` on it and sends its counts
        (``counts.from_logits``, :class:`privfed.federated.metrics.EvaluationCounts`)
        through the evaluation protocol; the server learns their sum. Each message the
        server receives goes to ``on_server_message`` under a stage named
        ``evaluation_stage(stage)``.

        Raises
        ------
        RoundSkipped
            The protocol could not release the sum.
        """
