"""Aggregation weights and the server step's denominator: part of the algorithm.

The aggregation protocol releases the weighted sum ``sum_k w_k v_k`` of the included
clients' vectors (weights are public; :class:`~privfed.federated.stages.ServerAggregate`).
A weighting says what ``w_k`` is and what the sum is divided by to give the server's
update:

* :class:`SampleWeighting`: FedAvg (McMahan et al. 2017), ``w_k = n_k``, divided by the
  included clients' total weight;
* :class:`UniformWeighting`: weight 1 per client (a client's record count is private under
  DP), divided by the included count, or by a fixed public denominator (DP-FedAvg,
  McMahan et al. 2018: the *expected* cohort size ``qK``, so one client moves the update by
  at most ``S / qK``).

Asynchronous schedules discount a stale update's weight; the denominator stays the
undiscounted total (FedBuff's ``1/K sum s(tau_k) delta_k``, see
:mod:`privfed.federated.schedules`).
"""

from __future__ import annotations

import torch

from privfed.federated.stages import ServerAggregate

__all__ = ["SampleWeighting", "UniformWeighting", "Weighting"]


class Weighting:
    """Base: FedAvg's sample weighting."""

    def weight(self, num_samples: int) -> float:
        """The public aggregation weight of a client with ``num_samples`` records."""
        return float(num_samples)

    def step(self, aggregate: ServerAggregate, total_weight: float) -> torch.Tensor:
        """The server's update: the weighted sum over the included clients' total
        (undiscounted) weight; zeros when nothing was included."""
        if total_weight <= 0:
            return torch.zeros_like(aggregate.values)
        return _divide(aggregate, total_weight)


class SampleWeighting(Weighting):
    """FedAvg: ``w_k = n_k``; the update is the weighted mean."""


class UniformWeighting(Weighting):
    """Weight 1 per client; divide by ``denominator`` if given, else by the count.

    Parameters
    ----------
    denominator : float, optional
        A public, fixed denominator (DP-FedAvg: the expected number of clients ``qK``).
    """

    def __init__(self, denominator: float | None = None) -> None:
        if denominator is not None and not denominator > 0:
            raise ValueError(f"the weighting's denominator must be > 0, got {denominator!r}")
        self.denominator = denominator

    def weight(self, num_samples: int) -> float:
        """1: a client's record count is private under DP."""
        return 1.0

    def step(self, aggregate: ServerAggregate, total_weight: float) -> torch.Tensor:
        """The sum over ``denominator`` (also for an empty round), else the mean."""
        if self.denominator is None:
            return super().step(aggregate, total_weight)
        return _divide(aggregate, self.denominator)


def _divide(aggregate: ServerAggregate, denominator: float) -> torch.Tensor:
    """``sum / denominator`` as ``values * (scale / denominator)``: a released mean whose
    total weight is the denominator reaches the server step unchanged."""
    factor = aggregate.scale / denominator
    return aggregate.values if factor == 1.0 else aggregate.values * factor
