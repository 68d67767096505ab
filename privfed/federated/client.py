"""A federated client's data, its local hyperparameters, and the update it computes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from privfed.config.fields import check_field

__all__ = ["LocalTraining", "ClientUpdate", "Client"]


@dataclass(frozen=True)
class LocalTraining:
    """Hyperparameters of a client's local training in one round.

    Attributes
    ----------
    epochs : int
        Local epochs E (passes over the client's data).
    batch_size : int
        Mini-batch size B; the last batch of an epoch may be smaller.
    lr : float
        Local SGD learning rate.
    mu : float
        FedProx proximal coefficient (Li et al. 2020); the local objective becomes
        ``loss + mu / 2 * ||w - w_global||^2``. 0 gives plain FedAvg.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    mu: float = 0.0

    def __post_init__(self) -> None:
        check_field("federation.local_epochs", self.epochs)
        check_field("federation.batch_size", self.batch_size)
        check_field("federation.lr", self.lr)
        check_field("federation.mu", self.mu)


@dataclass(frozen=True)
class ClientUpdate:
    """What a client computes in one round, before any privacy or encoding step.

    Attributes
    ----------
    client_id : int
        Client id.
    delta : torch.Tensor
        Flat float32 vector ``local weights - global weights``.
    num_samples : int
        n_k, the client's number of training samples (its FedAvg weight).
    train_loss : float
        Mean training loss over the local steps.
    steps : int
        Number of local optimisation steps taken.
    """

    client_id: int
    delta: torch.Tensor
    num_samples: int
    train_loss: float
    steps: int


class Client:
    """One participant with its own training data.

    The client does not own a model or a training loop: a
    :class:`~privfed.federated.trainer.LocalTrainer` trains it in a shared
    :class:`~privfed.federated.params.FlatParameters` workspace, so no model is rebuilt or
    deep-copied per client per round.

    Parameters
    ----------
    client_id : int
        Client id.
    x, y : torch.Tensor
        The client's training examples and integer labels (the client's shard, not a copy
        of the whole dataset).
    validation : (torch.Tensor, torch.Tensor), optional
        Examples and labels the client holds out from training, for federated evaluation.
    """

    def __init__(
        self, client_id: int, x: torch.Tensor, y: torch.Tensor,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"client {client_id}: {len(x)} examples but {len(y)} labels")
        if len(x) == 0:
            raise ValueError(f"client {client_id} has no training data")
        if validation is not None and len(validation[0]) != len(validation[1]):
            raise ValueError(f"client {client_id}: {len(validation[0])} validation examples "
                             f"but {len(validation[1])} labels")
        self.client_id = client_id
        self.x = x
        self.y = y
        self.validation = validation if validation is not None and len(validation[1]) else None

    @property
    def num_samples(self) -> int:
        """n_k, the number of local training examples."""
        return len(self.y)
