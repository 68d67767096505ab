"""Local DP-SGD of a round's clients as one batched computation.

The mechanism is :class:`~privfed.privacy.trainer.DPSGDTrainer`'s, client by client: the
same Poisson batches and the same Gaussian noise, drawn from each client's own
:class:`~privfed.privacy.randomness.NoiseSource` in the same order (batch of step 1, noise of
step 1, batch of step 2, ...), the same per-example clipping (Opacus's factor
``min(1, C / (norm + 1e-6))``, :func:`~privfed.privacy.perexample.clip_factors`) and the
same step. Only the arithmetic is batched: the clients' models run as one
:class:`~privfed.federated.cohort.StackedModel`, and each Linear layer's
per-example gradient norms and clipped sums come from its inputs and output gradients
(:mod:`privfed.privacy.perexample`) without materialising a per-example gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.cohort import StackedModel, cross_entropy_grad, gather_cohort
from privfed.privacy.dpsgd import DPSGDParams
from privfed.privacy.perexample import clip_factors, linear_clipped_grads, linear_sq_norms
from privfed.privacy.randomness import NoiseSource

__all__ = ["fit_cohort_dpsgd"]


@torch.no_grad()
def fit_cohort_dpsgd(
    model: StackedModel,
    params: DPSGDParams,
    training: LocalTraining,
    clients: Sequence[Client],
    starts: torch.Tensor,
    sources: Sequence[NoiseSource],
    *, count_clipped: bool = False,
) -> list[ClientUpdate]:
    """``params.steps_per_round`` DP-SGD steps of every client at once.

    Parameters
    ----------
    model : StackedModel
    params : DPSGDParams
        The public mechanism, the same at every client.
    training : LocalTraining
        The learning rate and FedProx's mu.
    clients : sequence of Client
        K clients.
    starts : torch.Tensor
        ``(K, P)`` float32 starting models, on the device to train on (not modified).
    sources : sequence of NoiseSource
        Client k's batches and noise (its own; no other party can derive a secure one).
    count_clipped : bool, default False
        Count each client's clipped examples (:class:`~privfed.privacy.trainer.DPSGDTrainer`).

    Returns
    -------
    list of ClientUpdate
        What :meth:`DPSGDTrainer.fit` returns for each client, up to float32 rounding.
    """
    device = starts.device
    data = gather_cohort(clients, device)
    sizes = [c.num_samples for c in clients]
    views = model.unstack(starts)
    anchors = model.views(starts)
    std = params.noise_multiplier * params.max_grad_norm
    loss_sum = torch.zeros(len(clients), dtype=torch.float64)
    seen, clipped = torch.zeros(2, len(clients), dtype=torch.int64)  # on the CPU
    for _ in range(params.steps_per_round):
        local, mask = _poisson_batches(sources, sizes, params.sample_rate, device)
        if mask.shape[1]:
            grads, losses, norms = _clipped_sums(model, views, data, local, mask,
                                                 params.max_grad_norm)
            loss_sum += losses.cpu().double()
            seen += mask.sum(1).cpu()
            if count_clipped:
                clipped += ((norms > params.max_grad_norm) & mask).sum(1).cpu()
        else:
            grads = [torch.zeros_like(v) for v in views]
        noise = _noise(sources, std, model.numel, device)
        for view, anchor, grad, draw in zip(views, anchors, grads, model.views(noise),
                                            strict=True):
            grad.add_(draw)
            if training.mu:
                grad.add_(view - anchor, alpha=training.mu * params.normaliser)
            view.sub_(grad, alpha=training.lr / params.normaliser)
    deltas = (model.stack(views) - starts).cpu()
    return _client_updates(clients, deltas, loss_sum, seen, clipped if count_clipped else None,
                           params.steps_per_round)


def _client_updates(
    clients: Sequence[Client], deltas: torch.Tensor, loss_sum: torch.Tensor,
    seen: torch.Tensor, clipped: torch.Tensor | None, steps: int,
) -> list[ClientUpdate]:
    """Each client's update: its delta (row of ``deltas``), its mean loss over the ``seen``
    examples (NaN where none) and, where counted (``clipped`` not None), the examples seen
    and clipped."""
    overs = [None] * len(clients) if clipped is None else clipped.tolist()
    return [
        ClientUpdate(client_id=c.client_id, delta=delta, num_samples=c.num_samples,
                     train_loss=float(total / count) if count else math.nan, steps=steps,
                     examples_seen=None if over is None else count, examples_clipped=over)
        for c, delta, total, count, over in zip(clients, deltas, loss_sum.tolist(),
                                                seen.tolist(), overs, strict=True)
    ]


def _poisson_batches(
    sources: Sequence[NoiseSource], sizes: Sequence[int], rate: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each client's Poisson batch from its own source, padded: ``(K, B)`` local indices
    (0 where padded) and a ``(K, B)`` mask, B the largest batch (possibly 0)."""
    picks = [source.subsample(n, rate) for source, n in zip(sources, sizes, strict=True)]
    width = max(len(p) for p in picks)
    local = torch.zeros(len(picks), width, dtype=torch.int64)
    mask = torch.zeros(len(picks), width, dtype=torch.bool)
    for k, pick in enumerate(picks):
        local[k, : len(pick)] = pick
        mask[k, : len(pick)] = True
    return local.to(device), mask.to(device)


def _noise(sources: Sequence[NoiseSource], std: float, numel: int,
           device: torch.device) -> torch.Tensor:
    """``(K, P)``: client k's draw of N(0, std^2) for every parameter, from its source (one
    draw of P values per step, as :meth:`DPSGDTrainer.fit` draws it)."""
    if not std:
        return torch.zeros(len(sources), numel, device=device)
    return torch.stack([source.normal(std, numel) for source in sources]).to(device)


def _clipped_sums(
    model: StackedModel, views: Sequence[torch.Tensor], data, local: torch.Tensor,
    mask: torch.Tensor, max_grad_norm: float,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each client's sum of clipped per-example gradients (laid out as ``views``), its
    summed loss, ``(K,)``, and the per-example gradient norms, ``(K, B)``."""
    x, y = data.batch(local, mask)
    weights = mask.float()
    logits, tape = model.forward(views, x)
    losses, grad = cross_entropy_grad(logits, y, weights)
    inputs = model.linear_inputs(tape)
    out_grads = model.output_grads(views, tape, grad)
    sq_norms = sum(linear_sq_norms(a, g, layer.bias_offset is not None)
                   for layer, a, g in zip(model.linears, inputs, out_grads, strict=True))
    norms = sq_norms.sqrt()
    factors = clip_factors(norms, max_grad_norm) * weights
    clipped = []
    for layer, a, g in zip(model.linears, inputs, out_grads, strict=True):
        weight, bias = linear_clipped_grads(a, g, factors, layer.bias_offset is not None)
        clipped += [weight] if bias is None else [weight, bias]
    return clipped, losses.sum(1), norms
