"""Local record-level DP: DP-SGD at each client through Opacus.

Every client trains in the one shared workspace model. :class:`DPWorkspace` attaches
Opacus's ghost-clipping hooks (``GradSampleHooksFastGradientClipping``, the "ghost"
grad-sample mode: per-example gradient norms without materialising per-example gradients,
then a second backward pass on the clipped loss) to that model exactly once; the model is
not wrapped, so parameter names never gain a ``_module.`` prefix.

Neighbouring datasets differ by adding or removing one record at one client, so a client's
record count is private: every parameter of the mechanism (:class:`DPSGDParams`: Poisson
rate, steps per round, the normaliser of the noisy sum, noise multiplier) is public, fixed
from the config and the same at every client, and a client's aggregation weight is 1.
:class:`LocalDP` accounts each client's releases in a
:class:`~privfed.privacy.ledger.ParticipationLedger` and stops a client whose next round
would exceed its budget.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from opacus.grad_sample import GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.mechanism import UpdateMechanism
from privfed.federated.params import FlatParameters
from privfed.privacy.accounting import GaussianEvent, gaussian_epsilon
from privfed.privacy.ledger import ClientLedgerMixin, ParticipationLedger
from privfed.privacy.randomness import NoisePolicy, NoiseSource

__all__ = [
    "DPClient",
    "DPSGDParams",
    "DPWorkspace",
    "LocalDP",
    "default_sample_rate",
    "local_steps_per_round",
]

_WORKSPACES: weakref.WeakKeyDictionary[torch.nn.Module, DPWorkspace] = (
    weakref.WeakKeyDictionary()
)


def default_sample_rate(batch_size: int, reference_size: int) -> float:
    """Poisson rate of a record in a batch, ``min(1, B / n_ref)``, from public values only:
    the expected batch size B and a reference client size (not a client's own count)."""
    if reference_size < 1:
        raise ValueError(f"reference client size must be >= 1, got {reference_size}")
    return min(1.0, batch_size / reference_size)


def local_steps_per_round(sample_rate: float, epochs: int) -> int:
    """DP-SGD steps of one round: ``epochs * floor(1 / q)`` (Opacus's steps per epoch)."""
    return epochs * max(1, int(1 / sample_rate))


@dataclass(frozen=True)
class DPSGDParams:
    """The public parameters of local DP-SGD, identical at every client.

    One step is ``w <- w - lr * (sum of clipped per-record gradients + N(0, (sigma C)^2))
    / normaliser`` over a Poisson batch that holds each record with probability
    ``sample_rate``; a round is ``steps_per_round`` steps. Nothing here depends on a
    client's data, so a client's record count is not revealed by its update: a client with
    more records takes larger steps (its batches are larger), the FedAvg weighting by
    size happening inside the update rather than in a weight sent in the clear.

    Attributes
    ----------
    noise_multiplier : float
        sigma >= 0.
    max_grad_norm : float
        Per-record clip norm C > 0.
    sample_rate : float
        q in (0, 1].
    steps_per_round : int
        >= 1.
    normaliser : float
        The public expected batch size the noisy sum is divided by (``federation.batch_size``).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps_per_round: int
    normaliser: float

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise ValueError(
                f"privacy.noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not 0 < self.max_grad_norm < math.inf:
            raise ValueError(
                f"privacy.max_grad_norm must be > 0 and finite, got {self.max_grad_norm!r}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"privacy.sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if self.steps_per_round < 1:
            raise ValueError(f"DP-SGD steps per round must be >= 1, got {self.steps_per_round}")
        if not self.normaliser > 0:
            raise ValueError(f"DP-SGD normaliser must be > 0, got {self.normaliser!r}")

    def release(self, rounds: int) -> GaussianEvent:
        """The subsampled Gaussian releases of ``rounds`` rounds of one client."""
        return GaussianEvent(self.noise_multiplier, self.sample_rate,
                             rounds * self.steps_per_round)


class DPWorkspace:
    """The shared workspace with Opacus's per-sample-gradient hooks attached once.

    Use :meth:`of`; it returns the same object for the same workspace, so the hooks are
    never registered twice. The hooks are attached only inside :meth:`active` (and removed
    on exit), so plain forward/backward passes on the workspace model (evaluation, plain
    training, attacks) run on an untouched module.

    Attributes
    ----------
    workspace : FlatParameters
    params : list of torch.nn.Parameter
        The trainable parameters, in the workspace's spec order.
    """

    def __init__(self, workspace: FlatParameters) -> None:
        if workspace.module in _WORKSPACES:
            raise ValueError("this workspace already has DP hooks; use DPWorkspace.of(workspace)")
        self.workspace = workspace
        self.params = [p for p in workspace.module.parameters() if p.requires_grad]
        self._grad_views = [p.grad for p in self.params]
        self.hooks = GradSampleHooksFastGradientClipping(
            workspace.module, batch_first=True, loss_reduction="sum", use_ghost_clipping=True
        )
        self.hooks.remove_hooks()
        _WORKSPACES[workspace.module] = self

    @classmethod
    def of(cls, workspace: FlatParameters) -> DPWorkspace:
        """The DP workspace of ``workspace``, created (and hooked) on first use."""
        existing = _WORKSPACES.get(workspace.module)
        return existing if existing is not None else cls(workspace)

    @contextmanager
    def active(self, max_grad_norm: float) -> Iterator[None]:
        """Attach the hooks, clipping at ``max_grad_norm``; on exit remove them and restore
        the flat gradient views.

        Opacus's optimizer replaces each ``p.grad`` with a fresh tensor; afterwards the
        gradients are views of ``workspace.grad`` again (zeroed), so non-DP code that
        relies on the flat gradient keeps working.
        """
        self.hooks.max_grad_norm = max_grad_norm
        self.hooks.add_hooks(loss_reduction="sum", batch_first=True)
        try:
            with warnings.catch_warnings():
                # PyTorch warns that the first layer's full backward hook sees no input
                # gradient (the data does not require grad); that is expected here.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                yield
        finally:
            self.hooks.remove_hooks()
            for param, view in zip(self.params, self._grad_views, strict=True):
                param.grad = view
                param.summed_grad = None
            self.workspace.grad.zero_()


class _SourcedNoiseOptimizer(DPOptimizerFastGradientClipping):
    """Opacus's ghost-clipping DP optimizer with the noise drawn from a :class:`NoiseSource`
    (one draw for all parameters) instead of a PyTorch generator."""

    def __init__(self, *args: Any, noise: NoiseSource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noise = noise

    def add_noise(self) -> None:
        """``p.grad = p.summed_grad + N(0, (sigma C)^2)`` for every parameter."""
        std = self.noise_multiplier * self.max_grad_norm
        sizes = [p.summed_grad.numel() for p in self.params]
        draws = self.noise.normal(std, sum(sizes)) if std else torch.zeros(sum(sizes))
        for p, noise in zip(self.params, torch.split(draws, sizes), strict=True):
            p.grad = (p.summed_grad + noise.view_as(p.summed_grad)).view_as(p)


class DPClient(Client):
    """A client that trains with DP-SGD (Opacus) under public :class:`DPSGDParams`.

    Parameters
    ----------
    cid : int
    x, y : torch.Tensor
        The client's training data.
    dp_workspace : DPWorkspace
        The shared, hooked workspace the server trains every client in.
    params : DPSGDParams
    noise : NoisePolicy
        Secure: batches and noise from a fresh :class:`~privfed.privacy.randomness.SecureNoise`
        per round; seeded: from the generator the server passes to :meth:`fit`.
    """

    def __init__(
        self,
        cid: int,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        dp_workspace: DPWorkspace,
        params: DPSGDParams,
        noise: NoisePolicy,
    ) -> None:
        super().__init__(cid, x, y)
        self.dp_workspace = dp_workspace
        self.params = params
        self.noise = noise

    def fit(
        self,
        workspace: FlatParameters,
        global_weights: torch.Tensor,
        training: LocalTraining,
        generator: torch.Generator,
    ) -> ClientUpdate:
        """Run ``params.steps_per_round`` DP-SGD steps from ``global_weights``.

        Each step's batch holds every record independently with probability
        ``params.sample_rate`` (batches may be empty); the noisy sum of clipped gradients is
        divided by ``params.normaliser``. FedProx's proximal gradient, which does not depend
        on the data, is added after the noise.

        Parameters
        ----------
        workspace : FlatParameters
            Must be the workspace of this client's :class:`DPWorkspace`.
        global_weights : torch.Tensor
        training : LocalTraining
            Its learning rate and FedProx mu (the epochs are in ``params.steps_per_round``).
        generator : torch.Generator
            Source of the batches and the noise when the noise is seeded.

        Returns
        -------
        ClientUpdate
            ``train_loss`` is NaN when every batch was empty.
        """
        dp, params = self.dp_workspace, self.params
        if workspace is not dp.workspace:
            raise ValueError(f"client {self.cid}: DP client asked to train in a foreign workspace")
        source = self.noise.around(generator)
        optimizer = _SourcedNoiseOptimizer(
            torch.optim.SGD(dp.params, lr=training.lr / params.normaliser),
            noise_multiplier=params.noise_multiplier,
            max_grad_norm=params.max_grad_norm,
            expected_batch_size=params.normaliser,
            loss_reduction="sum",
            noise=source,
        )
        if training.mu:
            optimizer.attach_step_hook(self._proximal_hook(
                training.mu * params.normaliser, global_weights))
        criterion = DPLossFastGradientClipping(
            dp.hooks, optimizer, nn.CrossEntropyLoss(reduction="sum"), loss_reduction="sum"
        )
        workspace.load(global_weights)
        module = workspace.module
        module.train()
        loss_sum, seen = 0.0, 0
        with dp.active(params.max_grad_norm):
            for _ in range(params.steps_per_round):
                index = source.subsample(self.num_samples, params.sample_rate)
                optimizer.zero_grad()
                loss = criterion(module(self.x[index]), self.y[index])
                loss.backward()
                optimizer.step()
                loss_sum += loss.item()
                seen += len(index)
        return ClientUpdate(
            cid=self.cid,
            delta=workspace.data - global_weights,
            num_samples=self.num_samples,
            train_loss=loss_sum / seen if seen else math.nan,
            steps=params.steps_per_round,
        )

    def _proximal_hook(self, prox: float, global_weights: torch.Tensor):
        """FedProx's gradient ``prox * (w - w_global)`` (post-processing of the noisy step)."""
        anchors = self.dp_workspace.workspace.spec.unflatten(global_weights).values()

        def hook(optimizer: DPOptimizerFastGradientClipping) -> None:
            for param, anchor in zip(self.dp_workspace.params, anchors, strict=True):
                param.grad.add_(param.detach() - anchor, alpha=prox)

        return hook


class LocalDP(ClientLedgerMixin, UpdateMechanism):
    """FedAvg with weight 1 per client; accounts each client's record-level epsilon.

    Parameters
    ----------
    params : DPSGDParams
    num_clients : int
    delta : float
    accountant : {"pld", "prv", "rdp"}
    budget : float or None
        ``privacy.epsilon``: a client whose next round would exceed it stops contributing.
    noise : NoisePolicy
    """

    def __init__(
        self,
        params: DPSGDParams,
        *,
        num_clients: int,
        delta: float,
        accountant: str,
        budget: float | None,
        noise: NoisePolicy,
    ) -> None:
        self.params = params
        self.delta = delta
        self.noise = noise

        def epsilon_after(rounds: int) -> float:
            return gaussian_epsilon([params.release(rounds)], delta, accountant)

        self.client_spend = ParticipationLedger(num_clients, epsilon_after, budget)

    @property
    def noise_multiplier(self) -> float:
        """sigma of every client's DP-SGD."""
        return self.params.noise_multiplier

    def weight_for(self, num_samples: int) -> float:
        """1: a client's record count is private under record-level DP."""
        return 1.0

    @property
    def releases_train_loss(self) -> bool:
        """False: the training loss is a non-private statistic of the client's records."""
        return False

    def round_metrics(self, round_idx: int, sampled: Sequence[int]) -> dict[str, Any]:
        """``epsilon`` (max over clients, against the server and everyone else),
        ``epsilon_per_client`` (list by id), ``delta`` and the noise's provenance."""
        return {
            "epsilon": self.client_spend.max_epsilon(),
            "epsilon_against": "server",
            "epsilon_per_client": self.client_spend.epsilons(),
            "delta": self.delta,
            "noise": self.noise.label,
        }
