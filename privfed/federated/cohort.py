"""A round's clients trained as one batched computation.

A round of K clients that share a model runs, one after another, K sequences of small
matrix products. :class:`StackedModel` holds the K clients' parameters as the rows of one
``(K, P)`` float32 buffer (each row is a client's flat parameter vector, in the
:class:`~privfed.federated.params.ParamSpec` order) and runs their forward passes as batched
matrix products (``torch.baddbmm``), so one optimiser step of every client is one pass of a
few large kernels. A model qualifies when it is a (possibly nested) ``nn.Sequential`` of
``Linear`` layers, ``Flatten`` and parameter-free elementwise activations (privfed's
logistic regression and MLP; any user model of that shape); for any other model the clients
train one after another.

:class:`CohortBatches` lays out the clients' batches, padded to a common size with a mask,
and :func:`fit_cohort_sgd` is :class:`~privfed.federated.trainer.SGDTrainer`'s local training
for the whole cohort: each client takes exactly the steps, on exactly the batches, the
sequential trainer takes (the same generators, drawn in the same order), so the updates agree
to float32 rounding (the batched kernels sum in another order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from privfed.federated.client import Client, ClientUpdate, LocalTraining
from privfed.federated.params import FlatParameters

__all__ = ["ACCELERATOR_MEMORY_BUDGET", "CPU_MEMORY_BUDGET", "ELEMENTWISE", "CohortBatches",
           "StackedLinear", "StackedModel", "cohort_chunks", "cross_entropy_grad",
           "default_memory_budget", "fit_cohort_sgd", "gather_cohort"]

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU,
               nn.Softplus, nn.Identity)
"""Parameter-free layers that act on each entry alone (so also on a stacked batch)."""

CPU_MEMORY_BUDGET = 8 * 2**20
"""Bytes of a cohort chunk's working set on the CPU (8 MiB): a chunk whose parameters,
gradients and activations stay within the processor's caches runs fastest (measured on the
MNIST MLP: 4 clients of 101,770 parameters per chunk 0.82x the sequential time, 20 clients
1.19x; on the digits MLP 0.4x with 10 to 40 clients; ``benchmarks/fedavg_speed.py``)."""

ACCELERATOR_MEMORY_BUDGET = 512 * 2**20
"""Bytes of a cohort chunk's working set on a GPU (512 MiB): larger chunks keep it busy."""


def default_memory_budget(device: torch.device) -> int:
    """The default working-set budget of a cohort chunk on ``device``."""
    return CPU_MEMORY_BUDGET if device.type == "cpu" else ACCELERATOR_MEMORY_BUDGET


@dataclass(frozen=True)
class StackedLinear:
    """Where one ``nn.Linear``'s parameters lie in a flat parameter vector.

    Attributes
    ----------
    in_features, out_features : int
    weight_offset : int
        Offset of the ``(out, in)`` weight, row-major.
    bias_offset : int or None
        Offset of the ``(out,)`` bias; None for a layer without one.
    """

    in_features: int
    out_features: int
    weight_offset: int
    bias_offset: int | None

    def weight(self, rows: torch.Tensor) -> torch.Tensor:
        """The ``(K, out, in)`` view of the weights in the ``(K, P)`` buffer ``rows``."""
        size = self.out_features * self.in_features
        piece = rows[:, self.weight_offset : self.weight_offset + size]
        return piece.unflatten(1, (self.out_features, self.in_features))

    def bias(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The ``(K, out)`` view of the biases in ``rows``; None without a bias."""
        if self.bias_offset is None:
            return None
        return rows[:, self.bias_offset : self.bias_offset + self.out_features]


class StackedModel:
    """K copies of one Linear/elementwise ``nn.Sequential``, run as batched products.

    Build with :meth:`of`, which returns None for a model that does not qualify.

    Attributes
    ----------
    layers : list
        The model's leaves in order: :class:`StackedLinear`, ``nn.Flatten`` or an
        :data:`ELEMENTWISE` module.
    numel : int
        P, the length of one client's flat parameter vector.
    """

    def __init__(self, layers: list[StackedLinear | nn.Module], numel: int) -> None:
        self.layers = layers
        self.numel = numel

    @classmethod
    def of(cls, workspace: FlatParameters) -> StackedModel | None:
        """The stacked form of ``workspace``'s model, or None where it does not qualify: a
        leaf other than Linear, Flatten (from dim 1 on) or :data:`ELEMENTWISE`, a buffer, or
        a parameter that is not trainable."""
        module = workspace.module
        if any(True for _ in module.buffers()) or not all(
                p.requires_grad for p in module.parameters()):
            return None
        offsets, offset = {}, 0
        for param, size in zip(module.parameters(), workspace.spec.sizes, strict=True):
            offsets[id(param)] = offset
            offset += size
        layers: list[StackedLinear | nn.Module] = []
        for leaf in _leaves(module):
            if isinstance(leaf, nn.Linear):
                layers.append(StackedLinear(
                    leaf.in_features, leaf.out_features, offsets[id(leaf.weight)],
                    None if leaf.bias is None else offsets[id(leaf.bias)]))
            elif isinstance(leaf, ELEMENTWISE) or (
                    isinstance(leaf, nn.Flatten) and leaf.start_dim >= 1):
                layers.append(leaf)
            else:
                return None
        stacked = cls(layers, workspace.spec.numel)
        rows = torch.arange(stacked.numel).unsqueeze(0)
        if not layers or not torch.equal(stacked.stack(stacked.views(rows))[0], rows[0]):
            return None  # shared (tied) or reordered parameters: rows are not one layout
        return stacked

    @property
    def linears(self) -> list[StackedLinear]:
        """The Linear layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, StackedLinear)]

    def views(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Each Linear layer's ``(K, out, in)`` weight and ``(K, out)`` bias (if any), in
        layer order, as views of the ``(K, P)`` buffer ``rows``."""
        views = []
        for layer in self.linears:
            views.append(layer.weight(rows))
            bias = layer.bias(rows)
            if bias is not None:
                views.append(bias)
        return views

    def unstack(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`views` copied into contiguous tensors, one per parameter (the layout the
        batched kernels and in-place updates run fastest on)."""
        return [view.clone(memory_format=torch.contiguous_format) for view in self.views(rows)]

    def stack(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ``(K, P)`` rows of per-parameter tensors laid out as :meth:`views` (the
        inverse of :meth:`unstack`)."""
        return torch.cat([p.flatten(1) for p in params], dim=1)

    def forward(
        self, views: Sequence[torch.Tensor], x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Every client's model on its own batch.

        Parameters
        ----------
        views : sequence of torch.Tensor
            The parameters as :meth:`views` gives them.
        x : torch.Tensor
            ``(K, B, *example_shape)`` float32 batches, client k's in ``x[k]``.

        Returns
        -------
        logits : torch.Tensor
            ``(K, B, classes)``.
        tape : list of torch.Tensor
            Each layer's input, in layer order (what :meth:`output_grads` needs).
        """
        tape = []
        params = iter(views)
        for layer in self.layers:
            tape.append(x)
            if isinstance(layer, StackedLinear):
                weight = next(params).transpose(1, 2)
                x = (torch.bmm(x, weight) if layer.bias_offset is None
                     else torch.baddbmm(next(params).unsqueeze(1), x, weight))
            elif isinstance(layer, nn.Flatten):
                end = layer.end_dim + 1 if layer.end_dim >= 0 else layer.end_dim
                x = x.flatten(layer.start_dim + 1, end)
            else:
                x = layer(x)
        tape.append(x)
        return x, tape

    def output_grads(
        self, views: Sequence[torch.Tensor], tape: Sequence[torch.Tensor], grad: torch.Tensor
    ) -> list[torch.Tensor]:
        """Backpropagate ``grad``, the loss's gradient w.r.t. the logits, to every Linear
        layer's output.

        Parameters
        ----------
        views : sequence of torch.Tensor
            The parameters of the :meth:`forward` pass.
        tape : sequence of torch.Tensor
            Its tape.
        grad : torch.Tensor
            ``(K, B, classes)``.

        Returns
        -------
        list of torch.Tensor
            Each Linear layer's ``(K, B, out)`` output gradient, in layer order.
        """
        grads: list[torch.Tensor] = []
        weights = [v for v in views if v.dim() == 3]
        first = next(i for i, layer in enumerate(self.layers) if isinstance(layer, StackedLinear))
        for i in range(len(self.layers) - 1, first - 1, -1):
            layer, before, after = self.layers[i], tape[i], tape[i + 1]
            if isinstance(layer, StackedLinear):
                grads.append(grad)
                weight = weights.pop()
                if i > first:
                    grad = torch.bmm(grad, weight)
            elif isinstance(layer, nn.Flatten):
                grad = grad.view_as(before)
            else:
                grad = _activation_grad(layer, before, after, grad)
        return grads[::-1]

    def linear_inputs(self, tape: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each Linear layer's ``(K, B, in)`` input from a :meth:`forward` tape."""
        return [x for layer, x in zip(self.layers, tape[:-1], strict=True)
                if isinstance(layer, StackedLinear)]

    def param_grads(
        self, inputs: Sequence[torch.Tensor], out_grads: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The parameters' gradients, laid out as :meth:`views`: ``g^T a`` per weight and
        ``sum_b g`` per bias, summed over each client's batch (weight the examples through
        ``out_grads``)."""
        grads = []
        for layer, a, g in zip(self.linears, inputs, out_grads, strict=True):
            grads.append(torch.bmm(g.transpose(1, 2), a))
            if layer.bias_offset is not None:
                grads.append(g.sum(1))
        return grads

    def bytes_per_client(self, batch_size: int, example_numel: int) -> int:
        """An upper estimate of one client's memory in a batched step: its parameters,
        gradient, anchor and update rows, and its batch's activations and their
        gradients (float32)."""
        widths = sum(layer.in_features + layer.out_features for layer in self.linears)
        return 4 * (4 * self.numel + batch_size * (example_numel + 3 * widths))


def _activation_grad(
    layer: nn.Module, before: torch.Tensor, after: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """``grad`` (w.r.t. an elementwise layer's output) taken back through the layer, whose
    input was ``before`` and output ``after``; closed forms for the common ones."""
    if isinstance(layer, nn.ReLU):
        return grad * (after > 0)
    if isinstance(layer, nn.Identity):
        return grad
    if isinstance(layer, nn.Tanh):
        return grad * (1 - after * after)
    if isinstance(layer, nn.Sigmoid):
        return grad * (after * (1 - after))
    with torch.enable_grad():
        leaf = before.detach().requires_grad_()
        (back,) = torch.autograd.grad(layer(leaf), leaf, grad)
    return back


def cross_entropy_grad(
    logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted cross-entropy of a stacked batch and its gradient w.r.t. the logits.

    Parameters
    ----------
    logits : torch.Tensor
        ``(K, B, classes)``.
    y : torch.Tensor
        ``(K, B)`` int64 labels.
    weights : torch.Tensor
        ``(K, B)`` float32 weight of each example's loss (0 for padding).

    Returns
    -------
    losses : torch.Tensor
        ``(K, B)`` weighted losses ``-w log softmax(logits)[y]``.
    grad : torch.Tensor
        ``(K, B, classes)``: ``w (softmax(logits) - onehot(y))``.
    """
    log_probs = logits.log_softmax(-1)
    picked = log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    grad = log_probs.exp_()
    grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(picked, -1.0).unsqueeze(-1))
    return -picked * weights, grad.mul_(weights.unsqueeze(-1))


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The leaves of nested ``nn.Sequential`` containers, in order (a non-Sequential module
    with children is returned as one leaf, so it disqualifies the model)."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def cohort_chunks(count: int, per_client_bytes: int, budget: int) -> list[range]:
    """Split ``count`` clients into consecutive chunks of at most ``budget`` bytes each
    (at least one client per chunk)."""
    size = max(1, budget // max(1, per_client_bytes))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


@dataclass(frozen=True)
class CohortBatches:
    """The cohort's data in one tensor and its batches as padded indices into it.

    Attributes
    ----------
    x : torch.Tensor
        ``(sum n_k, *example_shape)``: the clients' examples, client after client.
    y : torch.Tensor
        ``(sum n_k,)`` int64 labels.
    offsets : torch.Tensor
        ``(K,)`` int64: where client k's examples start in ``x``.
    """

    x: torch.Tensor
    y: torch.Tensor
    offsets: torch.Tensor

    def batch(self, local: torch.Tensor, mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples and labels of a padded ``(K, B)`` batch of local indices; padded
        slots (``mask`` False) hold each client's first example (weighted 0 by the caller).
        """
        index = torch.where(mask, local + self.offsets.unsqueeze(1), self.offsets.unsqueeze(1))
        return self.x[index], self.y[index]


def gather_cohort(clients: Sequence[Client], device: torch.device) -> CohortBatches:
    """The clients' training data as one :class:`CohortBatches` on ``device``."""
    sizes = torch.tensor([c.num_samples for c in clients])
    offsets = torch.cumsum(sizes, 0) - sizes
    shared = [c.shared_rows for c in clients]
    if all(s is not None and s[0] is shared[0][0] and s[1] is shared[0][1] for s in shared):
        rows = torch.cat([s[2] for s in shared])  # one gather from the shared arrays
        x, y = shared[0][0][rows], shared[0][1][rows]
    else:
        x, y = torch.cat([c.x for c in clients]), torch.cat([c.y for c in clients])
    return CohortBatches(x.to(device), y.to(device), offsets.to(device))


def shuffled_schedule(
    sizes: Sequence[int], training: LocalTraining, generators: Sequence[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every client's local SGD batches, as :class:`~privfed.federated.trainer.SGDTrainer`
    draws them: per epoch ``torch.randperm(n_k, generator_k)`` cut into consecutive batches
    (the last one dropped where smaller than the batch size under ``training.drop_last``).

    Returns
    -------
    local : torch.Tensor
        ``(S, K, B)`` int64 local indices (0 where padded), S the most steps of any client.
    mask : torch.Tensor
        ``(S, K, B)`` bool: which slots hold an example. A client with fewer steps has
        all-False rows after its last step.
    """
    batch = min(training.batch_size, max(sizes))  # a batch past every client's data: all of it
    per_epoch = [n // training.batch_size if training.drop_last else -(-n // batch)
                 for n in sizes]
    steps = max(training.epochs * count for count in per_epoch)
    local = torch.zeros(steps, len(sizes), batch, dtype=torch.int64)
    mask = torch.zeros(steps, len(sizes), batch, dtype=torch.bool)
    for k, (n, count, generator) in enumerate(zip(sizes, per_epoch, generators, strict=True)):
        used = min(n, count * batch)
        for epoch in range(training.epochs):
            padded = torch.zeros(count * batch, dtype=torch.int64)
            padded[:used] = torch.randperm(n, generator=generator)[:used]
            rows = slice(epoch * count, (epoch + 1) * count)
            local[rows, k] = padded.view(count, batch)
            filled = torch.zeros(count * batch, dtype=torch.bool)
            filled[:used] = True
            mask[rows, k] = filled.view(count, batch)
    return local, mask


@torch.no_grad()
def fit_cohort_sgd(
    model: StackedModel,
    training: LocalTraining,
    clients: Sequence[Client],
    starts: torch.Tensor,
    generators: Sequence[torch.Generator],
) -> list[ClientUpdate]:
    """Local mini-batch SGD (FedProx's term if ``mu``) of every client at once.

    Parameters
    ----------
    model : StackedModel
    training : LocalTraining
    clients : sequence of Client
        The K clients (any sizes; a client with fewer steps stops early).
    starts : torch.Tensor
        ``(K, P)`` float32: the model each client starts from, on the device to train on.
    generators : sequence of torch.Generator
        Client k's batch order, as :meth:`SGDTrainer.fit` would use it.

    Returns
    -------
    list of ClientUpdate
        Client k's delta (a flat float32 CPU vector), loss and steps, as
        :meth:`SGDTrainer.fit` computes them up to float32 rounding.
    """
    device = starts.device
    data = gather_cohort(clients, device)
    local, mask = shuffled_schedule([c.num_samples for c in clients], training, generators)
    local, mask = local.to(device), mask.to(device)
    views = model.unstack(starts)
    anchors = model.views(starts)
    loss_sum = torch.zeros(len(clients), device=device)
    for step in range(local.shape[0]):
        step_mask = mask[step]
        x, y = data.batch(local[step], step_mask)
        counts = step_mask.sum(1)
        weights = step_mask / counts.clamp(min=1).unsqueeze(1)
        logits, tape = model.forward(views, x)
        losses, grad = cross_entropy_grad(logits, y, weights)
        grads = model.param_grads(model.linear_inputs(tape),
                                  model.output_grads(views, tape, grad))
        for view, anchor, grad in zip(views, anchors, grads, strict=True):
            if training.mu:
                active = (counts > 0).float().view(-1, *[1] * (grad.dim() - 1))
                grad.add_((view - anchor) * active, alpha=training.mu)
            view.sub_(grad, alpha=training.lr)
        loss_sum += losses.sum(1)
    deltas = (model.stack(views) - starts).cpu()
    steps = mask.any(2).sum(0).tolist()
    losses = (loss_sum.cpu() / torch.tensor(steps)).tolist()
    return [
        ClientUpdate(client_id=c.client_id, delta=delta, num_samples=c.num_samples,
                     train_loss=loss, steps=s)
        for c, delta, loss, s in zip(clients, deltas, losses, steps, strict=True)
    ]
