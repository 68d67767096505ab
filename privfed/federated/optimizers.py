"""Server optimizers: how the averaged client update moves the global model.

FedAvg treats the weighted mean of client deltas as a pseudo-gradient step of size
``lr``; FedAvgM adds server momentum (Hsu et al. 2019); FedAdam applies Adam on the server
(Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2, without bias correction).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from privfed.config.fields import check_field

__all__ = ["SERVER_OPTIMIZERS", "ServerOptimizer", "FedAvg", "FedAvgM", "FedAdam",
           "make_server_optimizer"]


class ServerOptimizer(ABC):
    """Applies the aggregated update to the global weights, in place."""

    @abstractmethod
    def step(self, weights: torch.Tensor, mean_delta: torch.Tensor) -> None:
        """Update ``weights`` (flat, in place) with the weighted mean of client deltas."""

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state between steps (flat float32 CPU tensors, or None before
        the first step), for a checkpoint; empty for a stateless optimizer."""
        return {name: None if value is None else value.clone()
                for name, value in self._state().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output: the next step is the one this optimizer
        would have taken.

        Raises
        ------
        ValueError
            ``state`` names other entries than this optimizer keeps.
        """
        names = set(self._state())
        if set(state) != names:
            raise ValueError(f"{type(self).__name__} state has entries {sorted(state)}, "
                             f"expected {sorted(names)}")
        for name, value in state.items():
            setattr(self, f"_{name}", None if value is None else value.clone())

    def _state(self) -> dict[str, torch.Tensor | None]:
        """The state entries by name; entry ``x`` lives in the attribute ``_x``."""
        return {}


class FedAvg(ServerOptimizer):
    """``w <- w + lr * mean_delta``; ``lr = 1`` is McMahan et al.'s FedAvg.

    Parameters
    ----------
    lr : float, default 1.0
        Server learning rate.
    """

    def __init__(self, lr: float = 1.0) -> None:
        check_field("federation.server_lr", lr)
        self.lr = lr

    def step(self, weights: torch.Tensor, mean_delta: torch.Tensor) -> None:
        weights.add_(mean_delta, alpha=self.lr)


class FedAvgM(ServerOptimizer):
    """FedAvg with server momentum: ``v <- beta * v + mean_delta``; ``w <- w + lr * v``.

    Parameters
    ----------
    lr : float, default 1.0
        Server learning rate.
    momentum : float, default 0.9
        Momentum coefficient beta in [0, 1).
    """

    def __init__(self, lr: float = 1.0, momentum: float = 0.9) -> None:
        check_field("federation.server_lr", lr)
        check_field("federation.server_momentum", momentum)
        self.lr, self.momentum = lr, momentum
        self._velocity: torch.Tensor | None = None

    def step(self, weights: torch.Tensor, mean_delta: torch.Tensor) -> None:
        if self._velocity is None:
            self._velocity = mean_delta.clone()
        else:
            self._velocity.mul_(self.momentum).add_(mean_delta)
        weights.add_(self._velocity, alpha=self.lr)

    def _state(self) -> dict[str, torch.Tensor | None]:
        return {"velocity": self._velocity}


class FedAdam(ServerOptimizer):
    """Adam on the server (Reddi et al. 2021).

    ``m <- b1 m + (1-b1) d``; ``v <- b2 v + (1-b2) d^2``; ``w <- w + lr * m / (sqrt(v) + tau)``.

    Parameters
    ----------
    lr : float, default 0.01
        Server learning rate eta.
    beta1, beta2 : float, default 0.9, 0.99
        Moment decay rates, each in [0, 1).
    tau : float, default 1e-3
        Adaptivity (the epsilon of Adam); Reddi et al. tune it in [1e-5, 1e-1].
    """

    def __init__(
        self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        check_field("federation.server_lr", lr)
        check_field("federation.server_beta1", beta1)
        check_field("federation.server_beta2", beta2)
        check_field("federation.server_tau", tau)
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self._m: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def step(self, weights: torch.Tensor, mean_delta: torch.Tensor) -> None:
        if self._m is None or self._v is None:
            self._m = torch.zeros_like(mean_delta)
            self._v = torch.zeros_like(mean_delta)
        self._m.mul_(self.beta1).add_(mean_delta, alpha=1 - self.beta1)
        self._v.mul_(self.beta2).addcmul_(mean_delta, mean_delta, value=1 - self.beta2)
        weights.addcdiv_(self._m, self._v.sqrt().add_(self.tau), value=self.lr)

    def _state(self) -> dict[str, torch.Tensor | None]:
        return {"m": self._m, "v": self._v}


SERVER_OPTIMIZERS: dict[str, type[ServerOptimizer]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
}


def make_server_optimizer(name: str, **params: float) -> ServerOptimizer:
    """Build a server optimizer by name ("fedavg", "fedavgm", "fedadam").

    Raises
    ------
    privfed.config.ConfigError
        (a ``ValueError``) naming the config field of an unknown name or invalid parameter.
    """
    check_field("federation.server_optimizer", name)
    return SERVER_OPTIMIZERS[name](**params)
