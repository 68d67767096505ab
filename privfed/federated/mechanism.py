"""The hook through which privacy mechanisms act on an update's path.

A round's update travels: client delta -> :meth:`UpdateMechanism.client_transform` (on the
client, before the update is encoded; e.g. clipping and a share of distributed-DP noise)
-> secure aggregator (weights from :meth:`UpdateMechanism.weight`) -> decoded weighted mean ->
:meth:`UpdateMechanism.server_finalize` (on the server; e.g. central-DP noise) -> server
optimizer. The base class is plain FedAvg: deltas unchanged, weights ``n_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from privfed.federated.client import ClientUpdate

__all__ = ["UpdateMechanism"]


class UpdateMechanism:
    """Plain FedAvg; subclasses override the steps they change."""

    def weight(self, update: ClientUpdate) -> float:
        """The client's aggregation weight (FedAvg: its sample count n_k)."""
        return float(update.num_samples)

    def transformed_length(self, num_params: int) -> int:
        """Length of the vectors :meth:`client_transform` returns for a model of
        ``num_params`` parameters (the server needs it for a round without clients)."""
        return num_params

    def client_transform(self, round_idx: int, update: ClientUpdate) -> torch.Tensor:
        """The flat vector the client encodes and sends (runs on the client)."""
        return update.delta

    def server_finalize(
        self, round_idx: int, mean: torch.Tensor, total_weight: float, included: Sequence[int]
    ) -> torch.Tensor:
        """The update the server optimizer applies, from the decoded weighted mean.

        Parameters
        ----------
        round_idx : int
        mean : torch.Tensor
            Decoded weighted mean of the transformed client vectors.
        total_weight : float
            Sum of the weights of the included clients (so ``mean * total_weight`` is the sum).
        included : sequence of int
            Ids of the clients whose vectors are in the aggregate.
        """
        return mean

    def round_metrics(self, round_idx: int, sampled: Sequence[int]) -> dict[str, Any]:
        """JSON-able figures for the round's record (e.g. privacy spent so far)."""
        return {}
