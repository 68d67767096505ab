"""The hook through which privacy mechanisms act on an update's path.

A round's update travels: client delta -> :meth:`UpdateMechanism.client_transform` (on the
client, before the update is encoded; e.g. clipping and a share of distributed-DP noise)
-> secure aggregator (weights from :meth:`UpdateMechanism.weight`) -> decoded weighted mean ->
:meth:`UpdateMechanism.server_finalize` (on the server; e.g. central-DP noise) -> server
optimizer. The base class is plain FedAvg: deltas unchanged, weights ``n_k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from privfed.federated.client import ClientUpdate

__all__ = ["UpdateMechanism"]


class UpdateMechanism:
    """Plain FedAvg; subclasses override the steps they change."""

    def weight(self, update: ClientUpdate) -> float:
        """The client's aggregation weight; see :meth:`weight_for`."""
        return self.weight_for(update.num_samples)

    def weight_for(self, num_samples: int) -> float:
        """The aggregation weight of a client with ``num_samples`` records (FedAvg: n_k).

        Weights are public and known before training, so a distributed server can announce
        the round's total weight along with the model.
        """
        return float(num_samples)

    def client_state(self) -> dict[str, float]:
        """Server-side values :meth:`client_transform` depends on (e.g. an adaptive clip
        norm). A distributed engine sends them with the model every round."""
        return {}

    def load_client_state(self, state: Mapping[str, float]) -> None:
        """Adopt the server's :meth:`client_state` (on a client of a distributed engine)."""

    # ------------------------------------------------------------------ participation
    @property
    def releases_train_loss(self) -> bool:
        """Whether clients report their training loss to the server (and the history).

        A client's loss is computed from its private data without noise, so a mechanism
        that protects the data does not release it."""
        return True

    @property
    def min_cohort(self) -> int:
        """The fewest clients a round's aggregate may hold; smaller cohorts are skipped."""
        return 1

    def may_participate(self, cid: int) -> bool:
        """Whether client ``cid`` may release another update (e.g. its privacy budget)."""
        return True

    def round_allowed(self) -> bool:
        """Whether another round may be released (e.g. a per-round privacy budget)."""
        return True

    def record_participation(self, release_id: int, cids: Sequence[int]) -> None:
        """Clients ``cids`` were asked to release an update in ``release_id`` (a round, or a
        FedBuff job); called by the server before they train, and on each client for
        itself. Recording the same release twice counts once."""

    def client_ledger(self, cid: int) -> dict[str, Any]:
        """Client ``cid``'s privacy record (JSON-able); the server sends its record to the
        client with each request, and a client keeps its own between rounds."""
        return {}

    def merge_client_ledger(self, cid: int, ledger: Mapping[str, Any]) -> None:
        """Adopt another party's record of ``cid`` where it is longer (never shrinks)."""

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
