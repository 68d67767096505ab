"""The update pipeline: ordered stages on the path a client update travels.

A stage is one idea on the update's path (clipping, a noise share, random-k restriction,
error feedback, central noise). It has two halves:

* the **client half** (:meth:`UpdateStage.client`) runs where the client runs, on that
  client's own flat update, before the update is handed to the aggregation protocol;
* the **server half** (:meth:`UpdateStage.server`) runs on the server, on the released
  aggregate, and the server halves run in reverse order (the last client half is undone
  first), like pfl-research's postprocessors.

A stage may broadcast values to the clients every round (:meth:`UpdateStage.broadcast`,
e.g. the adaptive clip norm), keep per-client state (:meth:`UpdateStage.state_dict`,
e.g. an error-feedback residual; on a Flower node it lives in the node's state) and report
metrics for the round's record. :class:`Pipeline` holds the stages in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

__all__ = ["Pipeline", "ServerAggregate", "UpdateStage"]


@dataclass(frozen=True)
class ServerAggregate:
    """What the server halves of the stages work on: the weighted sum of the included
    clients' vectors, ``sum_k w_k v_k = values * scale``.

    The protocol releases the weighted mean and the total weight; keeping them as
    ``values`` and ``scale`` (rather than multiplying them out) lets a round without stages
    reach the server step exactly as released.

    Attributes
    ----------
    values : torch.Tensor
        Flat float32 vector; the sum is ``values * scale``.
    scale : float
        Multiplier of ``values`` (the total weight as released; 1 once a stage has set
        the sum).
    included : tuple of int
        Ids of the clients whose vectors are in the sum.
    discarded : bool
        A stage withheld the round's sum (e.g. distributed DP: fewer than K_min clients,
        so less noise than accounted); the sum is then zero and later stages must not
        learn from it.
    """

    values: torch.Tensor
    scale: float
    included: tuple[int, ...]
    discarded: bool = False
    sum: torch.Tensor = field(init=False, repr=False, compare=False)
    """The weighted sum ``values * scale`` (flat float32)."""

    def __post_init__(self) -> None:
        total = self.values if self.scale == 1.0 else self.values * self.scale
        object.__setattr__(self, "sum", total)

    def with_sum(self, new_sum: torch.Tensor) -> ServerAggregate:
        """A copy whose sum is ``new_sum``."""
        return replace(self, values=new_sum, scale=1.0)

    def map(self, linear: Callable[[torch.Tensor], torch.Tensor]) -> ServerAggregate:
        """A copy whose sum is ``linear(sum)``, for a linear map (e.g. dropping or
        scattering coordinates), applied to ``values`` so the scale is kept."""
        return replace(self, values=linear(self.values))


class UpdateStage:
    """One stage of the update pipeline; the base class changes nothing.

    Subclasses override the halves they need. ``name`` prefixes the stage's broadcast
    values and state keys.
    """

    name: str = "stage"

    def output_length(self, length: int) -> int:
        """Length of the client half's output for an input of ``length`` coordinates."""
        return length

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """Client half: transform client ``client_id``'s flat float32 vector (on the client)."""
        return vector

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Server half: transform the released aggregate (on the server)."""
        return aggregate

    def reconstruct(self, round_id: int, vector: torch.Tensor) -> torch.Tensor:
        """What the server reads of one client's output of this stage: undo the client
        half's change of shape (e.g. scatter random-k coordinates back, strip a control
        value), without noise and without changing any state. The attacks package uses it
        to read a client's update exactly as the server could."""
        return vector

    def broadcast(self) -> dict[str, float]:
        """Values every client needs this round (JSON-able floats), sent with the model."""
        return {}

    def load_broadcast(self, values: Mapping[str, float]) -> None:
        """Adopt the server's :meth:`broadcast` (on a client of a distributed engine)."""

    def state_dict(self, client_id: int) -> dict[str, Any]:
        """Client ``client_id``'s state kept between rounds: numbers, strings, lists, dicts
        and CPU tensors (a JSON transport, e.g. a Flower node's state, writes a tensor as a
        list, which :meth:`load_state_dict` also takes)."""
        return {}

    def load_state_dict(self, client_id: int, state: Mapping[str, Any]) -> None:
        """Restore client ``client_id``'s state (e.g. on a Flower node, from its state)."""

    def server_state(self) -> dict[str, Any]:
        """The server half's state kept between rounds (e.g. the adaptive clip norm), for
        a checkpoint (JSON-able)."""
        return {}

    def load_server_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`server_state`'s output."""

    def metrics(self) -> dict[str, Any]:
        """JSON-able figures for the round's record (e.g. the current clip norm)."""
        return {}


class Pipeline:
    """The ordered stages; client halves in order, server halves in reverse order.

    Parameters
    ----------
    stages : sequence of UpdateStage
        In the order the client applies them.
    """

    def __init__(self, stages: Sequence[UpdateStage] = ()) -> None:
        self.stages = tuple(stages)

    def __iter__(self):
        return iter(self.stages)

    def output_length(self, length: int) -> int:
        """Length of the vector the client hands to the aggregation protocol."""
        for stage in self.stages:
            length = stage.output_length(length)
        return length

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """Every client half, in order."""
        for stage in self.stages:
            vector = stage.client(round_id, client_id, vector)
        return vector

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Every server half, in reverse order."""
        for stage in reversed(self.stages):
            aggregate = stage.server(round_id, aggregate)
        return aggregate

    def reconstruct(self, round_id: int, vector: torch.Tensor) -> torch.Tensor:
        """Every stage's :meth:`UpdateStage.reconstruct`, in reverse order: one client's
        protocol input read back as a model-length update."""
        for stage in reversed(self.stages):
            vector = stage.reconstruct(round_id, vector)
        return vector

    def broadcast(self) -> dict[str, dict[str, float]]:
        """Each stage's broadcast, by stage name (stages without one are left out)."""
        return {s.name: b for s in self.stages if (b := s.broadcast())}

    def load_broadcast(self, values: Mapping[str, Mapping[str, float]]) -> None:
        """Hand each stage its part of :meth:`broadcast`."""
        for stage in self.stages:
            if stage.name in values:
                stage.load_broadcast(values[stage.name])

    def state_dict(self, client_id: int) -> dict[str, dict[str, Any]]:
        """Client ``client_id``'s state of every stage that keeps one, by stage name."""
        return {s.name: d for s in self.stages if (d := s.state_dict(client_id))}

    def load_state_dict(self, client_id: int, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore client ``client_id``'s state of every stage."""
        for stage in self.stages:
            if stage.name in state:
                stage.load_state_dict(client_id, state[stage.name])

    def server_state(self) -> dict[str, dict[str, Any]]:
        """The server state of every stage that keeps one, by stage name."""
        return {s.name: d for s in self.stages if (d := s.server_state())}

    def load_server_state(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Restore :meth:`server_state`'s output.

        Raises
        ------
        ValueError
            ``state`` names a stage this pipeline does not have.
        """
        unknown = set(state) - {s.name for s in self.stages}
        if unknown:
            raise ValueError(f"stage state for {sorted(unknown)}, which this pipeline does "
                             "not have")
        for stage in self.stages:
            if stage.name in state:
                stage.load_server_state(state[stage.name])

    def metrics(self) -> dict[str, Any]:
        """Every stage's metrics, merged."""
        out: dict[str, Any] = {}
        for stage in self.stages:
            out.update(stage.metrics())
        return out
