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
        Mini-batch size B; the last batch of an epoch may be smaller (unless ``drop_last``).
    lr : float
        Local SGD learning rate.
    mu : float
        FedProx proximal coefficient (Li et al. 2020); the local objective becomes
        ``loss + mu / 2 * ||w - w_global||^2``. 0 gives plain FedAvg.
    drop_last : bool
        Skip each epoch's last batch when it is smaller than B (for a model that cannot take
        a batch of one, e.g. with BatchNorm); a client with fewer than B examples then takes
        no step: its delta is zero and its ``train_loss`` NaN.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    mu: float = 0.0
    drop_last: bool = False

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
    examples_seen, examples_clipped : int or None
        DP-SGD: the examples in the round's batches (with repeats over steps) and those
        whose gradient norm exceeded the clip; None for training without per-example
        clipping.
    """

    client_id: int
    delta: torch.Tensor
    num_samples: int
    train_loss: float
    steps: int
    examples_seen: int | None = None
    examples_clipped: int | None = None


class Client:
    """One participant with its own training data.

    The client does not own a model or a training loop: a
    :class:`~privfed.federated.trainer.LocalTrainer` trains it in a shared
    :class:`~privfed.federated.params.FlatParameters` workspace, so no model is rebuilt or
    deep-copied per client per round.

    Its data is held either as its own tensors, or (:meth:`from_rows`) as row indices into
    arrays that every client of a simulation shares, gathered each time :attr:`x`,
    :attr:`y` or :attr:`validation` is read: a population of idle clients then costs its
    index lists only.

    Parameters
    ----------
    client_id : int
        Client id.
    x, y : torch.Tensor
        The client's training examples and integer labels (the client's shard, not a copy
        of the whole dataset).
    validation : (torch.Tensor, torch.Tensor), optional
        Examples and labels the client holds out from training, for federated evaluation.

    Raises
    ------
    ValueError
        ``x`` and ``y`` (or the validation pair) differ in length, or there is no
        training example.
    """

    def __init__(
        self, client_id: int, x: torch.Tensor, y: torch.Tensor,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"client {client_id}: {len(x)} examples but {len(y)} labels")
        self.client_id = client_id
        self._x, self._y = x, y
        self._rows: torch.Tensor | None = None
        self._check_size()
        if validation is not None and len(validation[0]) != len(validation[1]):
            raise ValueError(f"client {client_id}: {len(validation[0])} validation examples "
                             f"but {len(validation[1])} labels")
        self._validation = validation
        self._validation_rows: torch.Tensor | None = None

    @classmethod
    def from_rows(
        cls, client_id: int, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
        validation_rows: torch.Tensor | None = None,
    ) -> Client:
        """A client whose examples are rows of shared arrays, gathered on access.

        Parameters
        ----------
        client_id : int
        x, y : torch.Tensor
            Arrays shared by many clients, ``(N, ...)`` examples and ``(N,)`` labels
            (neither is copied).
        rows : torch.Tensor
            int64, shape ``(n_k,)``: the client's training examples ``x[rows]``, ``y[rows]``.
        validation_rows : torch.Tensor, optional
            int64: the rows it holds out for federated evaluation.

        Raises
        ------
        ValueError
            ``x`` and ``y`` differ in length, a row lies outside them, or ``rows`` is
            empty.
        """
        if len(x) != len(y):
            raise ValueError(f"client {client_id}: {len(x)} examples but {len(y)} labels")
        held = torch.zeros(0, dtype=torch.int64) if validation_rows is None else validation_rows
        for name, index in (("rows", rows), ("validation rows", held)):
            if len(index) and not 0 <= int(index.min()) <= int(index.max()) < len(x):
                raise ValueError(f"client {client_id}: {name} outside the {len(x)} shared "
                                 "examples")
        client = cls.__new__(cls)
        client.client_id = client_id
        client._x, client._y, client._rows = x, y, rows
        client._validation = None
        client._validation_rows = held if len(held) else None
        client._check_size()
        return client

    def _check_size(self) -> None:
        if self.num_samples == 0:
            raise ValueError(f"client {self.client_id} has no training data")

    @property
    def x(self) -> torch.Tensor:
        """The training examples, ``(n_k, ...)``."""
        return self._x if self._rows is None else self._x[self._rows]

    @property
    def y(self) -> torch.Tensor:
        """The integer labels, ``(n_k,)``."""
        return self._y if self._rows is None else self._y[self._rows]

    @property
    def validation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The held-out examples and labels, or None when the client holds none out."""
        if self._validation_rows is not None:
            rows = self._validation_rows
            return self._x[rows], self._y[rows]
        if self._validation is None or not len(self._validation[1]):
            return None
        return self._validation

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The shape of one example (no gather)."""
        return tuple(self._x.shape[1:])

    @property
    def shared_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(x, y, rows)`` of a client built by :meth:`from_rows` (the shared arrays, not
        copied, and its training rows); None for a client that holds its own tensors."""
        return None if self._rows is None else (self._x, self._y, self._rows)

    @property
    def num_samples(self) -> int:
        """n_k, the number of local training examples."""
        return len(self._y) if self._rows is None else len(self._rows)
