"""Local trainers: train one client's model from the global weights on that client's data.

A trainer is the only place local optimisation happens; DP-SGD is another trainer
(:class:`privfed.privacy.DPSGDTrainer`), not another kind of client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.cohort import StackedModel, fit_cohort_sgd
from privfed.federated.engine import TrainingDivergedError
from privfed.federated.params import FlatParameters

__all__ = ["CohortTrainer", "LocalTrainer", "SGDTrainer", "batched_model", "check_finite",
           "fit_clients"]


class LocalTrainer(Protocol):
    """Trains one client for one round."""

    def fit(
        self,
        client: Client,
        workspace: FlatParameters,
        global_params: torch.Tensor,
        generator: torch.Generator,
    ) -> ClientUpdate:
        """Train ``client`` in ``workspace`` from ``global_params``; return its update.

        Parameters
        ----------
        client : Client
        workspace : FlatParameters
            The model to train in, on its device; its weights are overwritten.
        global_params : torch.Tensor
            Flat float32 global model the round starts from (not modified), on the CPU.

        Returns
        -------
        ClientUpdate
            Its ``delta`` a flat float32 CPU tensor, whatever the workspace's device.
        generator : torch.Generator
            Source of the batch order (and of seeded noise).
        """


@runtime_checkable
class CohortTrainer(Protocol):
    """A trainer that can also train a round's clients as one batched computation
    (:mod:`privfed.federated.cohort`), giving the updates :meth:`LocalTrainer.fit` gives up
    to float32 rounding."""

    def fit_cohort(
        self,
        model: StackedModel,
        clients: Sequence[Client],
        starts: torch.Tensor,
        generators: Sequence[torch.Generator],
    ) -> list[ClientUpdate]:
        """Train every client at once.

        Parameters
        ----------
        model : StackedModel
            The shared model, stacked.
        clients : sequence of Client
            K clients.
        starts : torch.Tensor
            ``(K, P)`` float32: client k's starting model in row k, on the device to train
            on (not modified).
        generators : sequence of torch.Generator
            Client k's generator, as :meth:`LocalTrainer.fit` would receive it.

        Returns
        -------
        list of ClientUpdate
            In the order of ``clients``; deltas are flat float32 CPU vectors.
        """

    @property
    def expected_batch_size(self) -> int:
        """The public expected batch size, which sizes a batched chunk's memory (never a
        client's own count: how the cohort is chunked depends on public values only)."""

    @property
    def supports_cohort(self) -> bool:
        """Whether :meth:`fit_cohort` may be used (a trainer may be asked for one particular
        computation, e.g. a reference library's)."""


def batched_model(
    trainer: LocalTrainer, workspace: FlatParameters, vectorise: bool = True
) -> StackedModel | None:
    """The stacked form of ``workspace``'s model where ``trainer`` can train clients batched
    (``federation.vectorise``), else None: the clients train one after another."""
    if vectorise and isinstance(trainer, CohortTrainer) and trainer.supports_cohort:
        return StackedModel.of(workspace)
    return None


def fit_clients(
    trainer: LocalTrainer,
    stacked: StackedModel | None,
    clients: Sequence[Client],
    workspace: FlatParameters,
    starts: Sequence[torch.Tensor],
    generators: Sequence[torch.Generator],
) -> list[ClientUpdate]:
    """Train ``clients[k]`` from the flat float32 model ``starts[k]`` with ``generators[k]``:
    as one batched computation where ``stacked`` (:func:`batched_model`) is given, else one
    after another with ``trainer.fit``. The in-process engine trains its chunks and a Flower
    node its one client through here, so a client computes the same update in both.
    """
    if stacked is None:
        return [trainer.fit(client, workspace, start, generator)
                for client, start, generator in zip(clients, starts, generators, strict=True)]
    cohort: CohortTrainer = trainer  # type: ignore[assignment]
    rows = torch.stack(list(starts)).to(workspace.device)
    return cohort.fit_cohort(stacked, clients, rows, generators)


def check_finite(update: ClientUpdate, release_id: int) -> ClientUpdate:
    """Return ``update`` if its delta is finite, where every trained update is checked.

    One pass over the delta: its float32 sum is NaN or infinite when any coordinate is (and
    when finite coordinates overflow float32's range, itself a divergence).

    Raises
    ------
    TrainingDivergedError
        The delta holds NaN or infinite values: local training diverged.
    """
    if not torch.isfinite(update.delta.sum()):
        raise TrainingDivergedError(
            f"release {release_id}: client {update.client_id}'s update has NaN/Inf values, so "
            f"local training diverged; lower federation.lr or the noise"
        )
    return update


class SGDTrainer:
    """Mini-batch SGD for ``training.epochs`` epochs (FedProx's proximal term if ``mu``).

    Each epoch visits the local data in the order of ``torch.randperm(n, generator)`` in
    consecutive mini-batches (what ``DataLoader(shuffle=True, generator=...)`` gives; with
    ``training.drop_last``, ``drop_last=True``).

    Parameters
    ----------
    training : LocalTraining
    """

    def __init__(self, training: LocalTraining) -> None:
        self.training = training

    def fit(
        self,
        client: Client,
        workspace: FlatParameters,
        global_params: torch.Tensor,
        generator: torch.Generator,
    ) -> ClientUpdate:
        """See :meth:`LocalTrainer.fit`; trains on ``workspace.device`` (the client's data
        is moved there), and returns the delta as a CPU vector."""
        training = self.training
        anchor = global_params.to(workspace.device)
        workspace.load(anchor)
        module, weights, grad = workspace.module, workspace.data, workspace.grad
        x, y = client.x.to(workspace.device), client.y.to(workspace.device)
        module.train()
        n, batch = client.num_samples, training.batch_size
        end = n - n % batch if training.drop_last else n
        loss_sum, steps = 0.0, 0
        for _ in range(training.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, end, batch):
                index = order[start : start + batch]
                grad.zero_()
                loss = F.cross_entropy(module(x[index]), y[index])
                loss.backward()
                with torch.no_grad():
                    if training.mu:
                        grad.add_(weights - anchor, alpha=training.mu)
                    weights.add_(grad, alpha=-training.lr)
                loss_sum += loss.item()
                steps += 1
        return ClientUpdate(
            client_id=client.client_id,
            delta=(weights - anchor).cpu(),
            num_samples=n,
            train_loss=loss_sum / steps if steps else math.nan,
            steps=steps,
        )

    def fit_cohort(
        self,
        model: StackedModel,
        clients: Sequence[Client],
        starts: torch.Tensor,
        generators: Sequence[torch.Generator],
    ) -> list[ClientUpdate]:
        """See :meth:`CohortTrainer.fit_cohort`: the same batches and steps as :meth:`fit`
        (:func:`~privfed.federated.cohort.fit_cohort_sgd`)."""
        return fit_cohort_sgd(model, self.training, clients, starts, generators)

    @property
    def expected_batch_size(self) -> int:
        """``training.batch_size``."""
        return self.training.batch_size

    supports_cohort = True
