"""Local record-level DP: the DP-SGD trainer, on a fast path or through Opacus.

Every client trains in the one shared workspace model. Two backends compute the same
mechanism (the same batches, clipping, noise draw and step):

* ``"fast"``: :class:`~privfed.privacy.fastclip.PerExampleClipper` -- one forward and one
  backward pass to the layers' outputs, per-example norms and clipped sums in closed form
  (:mod:`privfed.privacy.perexample`), one flat update of the workspace. Models whose
  trainable parameters all belong to ``nn.Linear`` / ``nn.Conv2d`` layers (privfed's
  built-in models).
* ``"opacus"``: the reference, for any model Opacus can train. :class:`DPWorkspace` attaches
  Opacus's ghost-clipping hooks (``GradSampleHooksFastGradientClipping``, the "ghost"
  grad-sample mode: per-example gradient norms without materialising per-example gradients,
  then a second backward pass on the clipped loss) to that model exactly once, on the first
  DP-SGD step; the model is not wrapped, so parameter names never gain a ``_module.``
  prefix.

:class:`DPSGDTrainer` is a :class:`~privfed.federated.trainer.LocalTrainer`: it trains any
client under the public :class:`~privfed.privacy.dpsgd.DPSGDParams`; the record-level
accounting is :class:`~privfed.privacy.policies.RecordLevelPolicy`'s.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from opacus.grad_sample import GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.cohort import StackedModel
from privfed.federated.params import FlatParameters
from privfed.privacy.cohort import fit_cohort_dpsgd
from privfed.privacy.dpsgd import DPSGDParams
from privfed.privacy.fastclip import FastPathError, PerExampleClipper
from privfed.privacy.perexample import clip_factors
from privfed.privacy.randomness import NoisePolicy, NoiseSource

__all__ = ["BACKENDS", "DPSGDTrainer", "DPWorkspace"]

BACKENDS = ("auto", "fast", "opacus")
"""The allowed values of :class:`DPSGDTrainer`'s ``backend``."""

_WORKSPACES: weakref.WeakKeyDictionary[torch.nn.Module, DPWorkspace] = (
    weakref.WeakKeyDictionary()
)


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
        """The DP workspace of ``workspace``, created (and hooked) on first use.

        Raises
        ------
        ValueError
            ``workspace.module`` was hooked through another :class:`FlatParameters` (whose
            flat buffers its parameters may no longer view).
        """
        existing = _WORKSPACES.get(workspace.module)
        if existing is None:
            return cls(workspace)
        if existing.workspace is not workspace:
            raise ValueError("this module's DP hooks belong to a foreign workspace")
        return existing

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
        draws = draws.to(self.params[0].device)
        for p, noise in zip(self.params, torch.split(draws, sizes), strict=True):
            p.grad = (p.summed_grad + noise.view_as(p.summed_grad)).view_as(p)


class DPSGDTrainer:
    """DP-SGD (Abadi et al. 2016) under public :class:`~privfed.privacy.dpsgd.DPSGDParams`.

    Parameters
    ----------
    params : DPSGDParams
    training : LocalTraining
        Its learning rate and FedProx mu (the epochs are in ``params.steps_per_round``).
    noise : NoisePolicy
        Secure: batches and noise from a fresh
        :class:`~privfed.privacy.randomness.SecureNoise` per round; seeded: from the
        generator passed to :meth:`fit`.
    backend : {"auto", "fast", "opacus"}, default "auto"
        "fast": per-example clipping in closed form (:mod:`privfed.privacy.fastclip`);
        "opacus": Opacus's ghost clipping, the reference; "auto": "fast" when the model
        qualifies (every trainable parameter in a Linear or Conv2d layer, see
        :func:`~privfed.privacy.fastclip.fast_path_obstacles`), else "opacus". Both compute
        the same update (to float rounding) from the same random draws.
    count_clipped : bool, default False
        Count the examples whose gradient norm exceeds ``max_grad_norm``, from the norms
        the clipping computes anyway (``privacy.diagnostics = "exact"``; one comparison
        and sum per step, left out otherwise).

    Raises
    ------
    ValueError
        ``backend`` is not one of :data:`BACKENDS`.
    """

    def __init__(
        self, params: DPSGDParams, training: LocalTraining, noise: NoisePolicy,
        backend: str = "auto", *, count_clipped: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"DP-SGD backend must be one of {list(BACKENDS)}, got {backend!r}")
        self.params = params
        self.training = training
        self.noise = noise
        self.backend = backend
        self.count_clipped = count_clipped

    def fit(
        self,
        client: Client,
        workspace: FlatParameters,
        global_params: torch.Tensor,
        generator: torch.Generator,
    ) -> ClientUpdate:
        """Run ``params.steps_per_round`` DP-SGD steps from ``global_params``.

        Each step's batch holds every record independently with probability
        ``params.sample_rate`` (batches may be empty); the noisy sum of clipped gradients is
        divided by ``params.normaliser``. FedProx's proximal gradient, which does not depend
        on the data, is added after the noise.

        Parameters
        ----------
        client : Client
        workspace : FlatParameters
            The model to train in, on its device (on the Opacus path hooked on first use,
            see :meth:`DPWorkspace.of`; the fast path's hooks live only inside this call);
            the client's data is moved there. Afterwards its gradient buffer is zero and
            the parameters' gradients are views of it.
        global_params : torch.Tensor
            Flat float32 global model (not modified), on the CPU.
        generator : torch.Generator
            Source of the batches, and of the noise when the noise is seeded.

        Returns
        -------
        ClientUpdate
            ``delta`` a flat float32 CPU tensor; ``train_loss`` is NaN when every batch was
            empty; with ``count_clipped``, ``examples_seen`` and ``examples_clipped`` (the
            examples whose gradient norm exceeded ``max_grad_norm``).

        Raises
        ------
        ValueError
            ``backend="fast"`` and the model does not qualify; the message names the layer.
        """
        anchor = global_params.to(workspace.device)
        x, y = client.x.to(workspace.device), client.y.to(workspace.device)
        clipper = self._fast_clipper(workspace.module, x)
        workspace.load(anchor)
        workspace.module.train()
        source = self.noise.around(generator)
        if clipper is None:
            loss_sum, seen, clipped = self._opacus_steps(workspace, anchor, x, y, source)
        else:
            loss_sum, seen, clipped = self._fast_steps(clipper, workspace, anchor, x, y, source)
        return ClientUpdate(
            client_id=client.client_id,
            delta=(workspace.data - anchor).cpu(),
            num_samples=client.num_samples,
            train_loss=loss_sum / seen if seen else math.nan,
            steps=self.params.steps_per_round,
            examples_seen=seen if self.count_clipped else None,
            examples_clipped=clipped if self.count_clipped else None,
        )

    def _fast_clipper(self, module: nn.Module, x: torch.Tensor) -> PerExampleClipper | None:
        """The fast path's clipper for ``module`` on inputs like ``x``; None for Opacus."""
        if self.backend == "opacus":
            return None
        try:
            clipper = PerExampleClipper.of(module)
            clipper.check_forward(x)
        except FastPathError:
            if self.backend == "fast":
                raise
            return None
        return clipper

    def _fast_steps(
        self, clipper: PerExampleClipper, workspace: FlatParameters, anchor: torch.Tensor,
        x: torch.Tensor, y: torch.Tensor, source: NoiseSource,
    ) -> tuple[float, int, int]:
        """The steps on the fast path: ``w -= lr / normaliser * (Σ clipped + noise [+ prox])``
        as one flat update; the noise is one draw of ``NoiseSource.normal`` per step, split
        over the parameters in spec order (as the Opacus path draws it). Returns the summed
        loss, the examples seen and those clipped."""
        params, training = self.params, self.training
        criterion = nn.CrossEntropyLoss(reduction="sum")
        views = list(workspace.spec.unflatten(workspace.grad).values())
        std = params.noise_multiplier * params.max_grad_norm
        loss_sum, seen, clipped = 0.0, 0, 0
        with clipper.recording() as tape:
            for _ in range(params.steps_per_round):
                index = source.subsample(len(x), params.sample_rate)
                loss = criterion(workspace.module(x[index]), y[index])
                grads = tape.gradients(loss)
                norms = grads.sq_norms.sqrt()
                if self.count_clipped:
                    clipped += int((norms > params.max_grad_norm).sum())
                factors = clip_factors(norms, params.max_grad_norm)
                grads.sums(factors, out=views)
                if std:
                    noise = source.normal(std, workspace.spec.numel)
                    workspace.grad.add_(noise.to(workspace.device))
                if training.mu:
                    workspace.grad.add_(workspace.data - anchor,
                                        alpha=training.mu * params.normaliser)
                workspace.data.add_(workspace.grad, alpha=-training.lr / params.normaliser)
                loss_sum += loss.item()
                seen += len(index)
        workspace.grad.zero_()
        return loss_sum, seen, clipped

    def _opacus_steps(
        self, workspace: FlatParameters, anchor: torch.Tensor, x: torch.Tensor,
        y: torch.Tensor, source: NoiseSource,
    ) -> tuple[float, int, int]:
        """The steps through Opacus's ghost clipping (the reference path); returns what
        :meth:`_fast_steps` returns (the clipped count from the per-example norms Opacus
        computed for its clipping coefficients)."""
        dp, params, training = DPWorkspace.of(workspace), self.params, self.training
        optimizer = _SourcedNoiseOptimizer(
            torch.optim.SGD(dp.params, lr=training.lr / params.normaliser),
            noise_multiplier=params.noise_multiplier,
            max_grad_norm=params.max_grad_norm,
            expected_batch_size=params.normaliser,
            loss_reduction="sum",
            noise=source,
        )
        if training.mu:
            optimizer.attach_step_hook(_proximal_hook(dp, training.mu * params.normaliser, anchor))
        criterion = DPLossFastGradientClipping(
            dp.hooks, optimizer, nn.CrossEntropyLoss(reduction="sum"), loss_reduction="sum"
        )
        loss_sum, seen, clipped = 0.0, 0, 0
        with dp.active(params.max_grad_norm):
            for _ in range(params.steps_per_round):
                index = source.subsample(len(x), params.sample_rate)
                optimizer.zero_grad()
                loss = criterion(workspace.module(x[index]), y[index])
                loss.backward()
                if self.count_clipped and len(index):  # an empty batch sets no norms
                    norms = dp.hooks.per_sample_gradient_norms
                    clipped += int((norms > params.max_grad_norm).sum())
                optimizer.step()
                loss_sum += loss.item()
                seen += len(index)
        return loss_sum, seen, clipped

    def fit_cohort(
        self,
        model: StackedModel,
        clients: Sequence[Client],
        starts: torch.Tensor,
        generators: Sequence[torch.Generator],
    ) -> list[ClientUpdate]:
        """:meth:`fit` for every client at once
        (:class:`~privfed.federated.trainer.CohortTrainer`): each client's batches and
        noise come from its own source, as in :meth:`fit`
        (:func:`~privfed.privacy.cohort.fit_cohort_dpsgd`)."""
        sources = [self.noise.around(generator) for generator in generators]
        return fit_cohort_dpsgd(model, self.params, self.training, clients, starts, sources,
                                count_clipped=self.count_clipped)

    @property
    def expected_batch_size(self) -> int:
        """The public normaliser, rounded up (a client's Poisson batch varies around it)."""
        return math.ceil(self.params.normaliser)

    @property
    def supports_cohort(self) -> bool:
        """False where ``backend="opacus"`` asks for Opacus's reference computation."""
        return self.backend != "opacus"


def _proximal_hook(
    dp: DPWorkspace, prox: float, global_params: torch.Tensor
) -> Callable[[DPOptimizerFastGradientClipping], None]:
    """FedProx's gradient ``prox * (w - w_global)`` (post-processing of the noisy step)."""
    anchors = list(dp.workspace.spec.unflatten(global_params).values())

    def hook(optimizer: DPOptimizerFastGradientClipping) -> None:
        for param, anchor in zip(dp.params, anchors, strict=True):
            param.grad.add_(param.detach() - anchor, alpha=prox)

    return hook
