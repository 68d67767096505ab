"""Local record-level DP: DP-SGD at each client through Opacus, one accountant per client.

Every client trains in the one shared workspace model. :class:`DPWorkspace` attaches
Opacus's ghost-clipping hooks (``GradSampleHooksFastGradientClipping``, the "ghost"
grad-sample mode: per-example gradient norms without materialising per-example gradients,
then a second backward pass on the clipped loss) to that model exactly once; the model is
not wrapped, so parameter names never gain a ``_module.`` prefix. Each :class:`DPClient`
samples its batches with Opacus's Poisson sampler, steps an Opacus
``DPOptimizerFastGradientClipping``, and keeps its own accountant for the whole training:
its history grows in every round it takes part in, and rounds it sits out cost nothing.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from opacus.accountants import IAccountant
from opacus.grad_sample import GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.mechanism import UpdateMechanism
from privfed.federated.params import FlatParameters
from privfed.privacy.accounting import make_accountant, spent_epsilon

__all__ = ["DPWorkspace", "DPClient", "LocalDP", "local_sample_rate", "local_steps_per_round"]

_WORKSPACES: weakref.WeakKeyDictionary[torch.nn.Module, DPWorkspace] = (
    weakref.WeakKeyDictionary()
)


def local_sample_rate(num_samples: int, batch_size: int) -> float:
    """Poisson rate of a client's batches: ``min(1, B / n_k)``."""
    return min(1.0, batch_size / num_samples)


def local_steps_per_round(num_samples: int, training: LocalTraining) -> int:
    """DP-SGD steps in one round: ``epochs * floor(1 / q)`` (Opacus's steps per epoch)."""
    return training.epochs * int(1 / local_sample_rate(num_samples, training.batch_size))


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


class DPClient(Client):
    """A client that trains with DP-SGD (Opacus) and keeps one accountant for all rounds.

    Parameters
    ----------
    cid : int
    x, y : torch.Tensor
        The client's training data.
    dp_workspace : DPWorkspace
        The shared, hooked workspace the server trains every client in.
    noise_multiplier : float
        sigma of DP-SGD (noise std = sigma * max_grad_norm on the summed clipped gradients).
    max_grad_norm : float
        Per-example clip norm C.
    accountant : {"rdp", "prv", "gdp"}
    secure_rng : torch.Generator, optional
        Opacus secure mode: a cryptographic generator used for batches and noise instead of
        the seeded one the server passes to :meth:`fit`.
    """

    def __init__(
        self,
        cid: int,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        dp_workspace: DPWorkspace,
        noise_multiplier: float,
        max_grad_norm: float,
        accountant: str = "rdp",
        secure_rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(cid, x, y)
        if noise_multiplier < 0:
            raise ValueError(f"privacy.noise_multiplier must be >= 0, got {noise_multiplier}")
        if not 0 < max_grad_norm < math.inf:
            raise ValueError(f"privacy.max_grad_norm must be > 0 and finite, got {max_grad_norm}")
        self.dp_workspace = dp_workspace
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.accountant: IAccountant = make_accountant(accountant)
        self.secure_rng = secure_rng

    def epsilon(self, delta: float) -> float:
        """Epsilon this client's records have spent so far, at ``delta``."""
        return spent_epsilon(self.accountant, delta)

    def fit(
        self,
        workspace: FlatParameters,
        global_weights: torch.Tensor,
        training: LocalTraining,
        generator: torch.Generator,
    ) -> ClientUpdate:
        """Run DP-SGD from ``global_weights`` for ``training.epochs`` epochs.

        Each epoch has ``floor(1/q)`` steps; each step's batch includes every record
        independently with probability ``q = min(1, B / n_k)`` (batches may be empty).
        FedProx's proximal gradient, which does not depend on the data, is added after
        the noise.

        Parameters
        ----------
        workspace : FlatParameters
            Must be the workspace of this client's :class:`DPWorkspace`.
        global_weights : torch.Tensor
        training : LocalTraining
        generator : torch.Generator
            Source of the batches and the noise (ignored in secure mode).

        Returns
        -------
        ClientUpdate
        """
        dp = self.dp_workspace
        if workspace is not dp.workspace:
            raise ValueError(f"client {self.cid}: DP client asked to train in a foreign workspace")
        rng = self.secure_rng if self.secure_rng is not None else generator
        n = self.num_samples
        rate = local_sample_rate(n, training.batch_size)
        expected_batch = rate * n
        sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=rate, generator=rng)
        # Summed losses (empty batches are fine) and lr / E[B]: the step is
        # lr * (sum of clipped gradients + noise) / E[B], DP-SGD's usual averaged step.
        optimizer = DPOptimizerFastGradientClipping(
            torch.optim.SGD(dp.params, lr=training.lr / expected_batch),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=expected_batch,
            loss_reduction="sum",
            generator=rng,
            secure_mode=self.secure_rng is not None,
        )
        optimizer.attach_step_hook(
            self._step_hook(rate, training.mu * expected_batch, global_weights)
        )
        criterion = DPLossFastGradientClipping(
            dp.hooks, optimizer, nn.CrossEntropyLoss(reduction="sum"), loss_reduction="sum"
        )
        workspace.load(global_weights)
        module = workspace.module
        module.train()
        loss_sum, seen, steps = 0.0, 0, 0
        with dp.active(self.max_grad_norm):
            for _ in range(training.epochs):
                for batch in sampler:
                    index = torch.as_tensor(batch, dtype=torch.long)
                    optimizer.zero_grad()
                    loss = criterion(module(self.x[index]), self.y[index])
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item()
                    seen += len(index)
                    steps += 1
        return ClientUpdate(
            cid=self.cid,
            delta=workspace.data - global_weights,
            num_samples=n,
            train_loss=loss_sum / seen if seen else math.nan,
            steps=steps,
        )

    def _step_hook(self, rate: float, prox: float, global_weights: torch.Tensor):
        """Accounting, then FedProx's gradient ``prox * (w - w_global)`` (post-processing)."""
        account = self.accountant.get_optimizer_hook_fn(sample_rate=rate)
        if not prox:
            return account
        anchors = self.dp_workspace.workspace.spec.unflatten(global_weights).values()

        def hook(optimizer: DPOptimizerFastGradientClipping) -> None:
            account(optimizer)
            for param, anchor in zip(self.dp_workspace.params, anchors, strict=True):
                param.grad.add_(param.detach() - anchor, alpha=prox)

        return hook


class LocalDP(UpdateMechanism):
    """Plain FedAvg on the update path; reports the clients' record-level epsilons.

    Parameters
    ----------
    clients : sequence of DPClient
        All clients, in id order.
    delta : float
    """

    def __init__(self, clients: Sequence[DPClient], delta: float) -> None:
        self.clients = list(clients)
        self.delta = delta
        self._epsilons = [0.0] * len(self.clients)

    def round_metrics(self, round_idx: int, sampled: Sequence[int]) -> dict[str, Any]:
        """``epsilon`` (max over clients), ``epsilon_per_client`` (list by id), ``delta``.

        Only the sampled clients' accountants changed this round, so only theirs are
        recomputed.
        """
        for cid in sampled:
            self._epsilons[cid] = self.clients[cid].epsilon(self.delta)
        return {
            "epsilon": max(self._epsilons),
            "epsilon_per_client": list(self._epsilons),
            "delta": self.delta,
        }

    def client_report(self, cid: int) -> dict[str, Any]:
        """The client's accountant history: ``[[noise_multiplier, sample_rate, steps], ...]``."""
        return {"accountant_history": [list(e) for e in self.clients[cid].accountant.history]}

    def load_client_report(self, cid: int, report: Mapping[str, Any]) -> None:
        """Restore the client's accountant history (none in ``report``: a fresh accountant)."""
        history = report.get("accountant_history", [])
        self.clients[cid].accountant.history = [
            (float(noise), float(rate), int(steps)) for noise, rate, steps in history
        ]
