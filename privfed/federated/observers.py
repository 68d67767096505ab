"""Observers: callbacks that see each event of a round as the party that would see it.

The attacks package subscribes here; the core never imports it. Each hook receives only
what its party has in a real deployment: ``server_received`` the bytes of a message as they
arrive at the server, ``aggregate_released`` the decoded aggregate, ``model_released`` the
new global model as every client (and, at the end, the outside world) receives it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from privfed.federated.history import RoundRecord
from privfed.federated.params import ParamSpec

__all__ = ["Observer"]


class Observer:
    """Base class: override the hooks you need; the defaults do nothing."""

    def round_started(self, round_id: int, client_ids: Sequence[int]) -> None:
        """The server sampled ``client_ids`` for round ``round_id``."""

    def server_received(self, round_id: int, client_id: int, stage: str, message: bytes) -> None:
        """The server received ``message`` from client ``client_id`` at protocol ``stage``."""

    def aggregate_released(self, round_id: int, mean_update: torch.Tensor) -> None:
        """The key holders decoded the aggregate: the weighted mean (flat float32) of the
        clients' transformed updates, before the stages' server halves."""

    def model_released(self, round_id: int, weights: torch.Tensor, spec: ParamSpec) -> None:
        """The server published new global weights (a read-only flat vector)."""

    def round_finished(self, record: RoundRecord) -> None:
        """The round's metrics are final."""
