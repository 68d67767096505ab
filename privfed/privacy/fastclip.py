"""Per-example clipping in one forward and one backward pass, for Linear and Conv2d models.

:class:`PerExampleClipper` records each supported layer's input and output during the
forward pass (forward hooks, attached only inside :meth:`PerExampleClipper.recording`); one
``torch.autograd.grad`` of the summed loss w.r.t. those outputs gives every layer's output
gradients, from which :mod:`privfed.privacy.perexample` computes the per-example gradient
norms over all trainable parameters and the clipped gradient sums (Bu et al. 2023's
book-keeping: no second backward pass, unlike Opacus's ghost clipping).

A model qualifies when every trainable parameter is the weight or bias of an
``nn.Linear`` or of a ``groups=1``, zero-padded ``nn.Conv2d`` (exact types: a subclass may
compute something else), each layer is called at most once per forward on a batched input
(``(B, in)``, ``(B, C, H, W)``), and nothing mixes examples (no BatchNorm). Any other
parametrised layer (GroupNorm, LayerNorm, Embedding, a user's own) is an obstacle that
:func:`fast_path_obstacles` names; :class:`~privfed.privacy.trainer.DPSGDTrainer` then
trains through Opacus.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from privfed.privacy.perexample import (
    conv2d_per_example_grads,
    linear_clipped_grads,
    linear_sq_norms,
    per_example_sq_norms,
    weighted_per_example_sum,
)

__all__ = ["FastPathError", "PerExampleClipper", "PerExampleGradients", "fast_path_obstacles"]

_INPUT_DIMS: dict[type[nn.Module], int] = {nn.Linear: 2, nn.Conv2d: 4}
"""The supported layer types and the dimension of the batched input each accepts."""

_CLIPPERS: weakref.WeakKeyDictionary[nn.Module, PerExampleClipper] = (
    weakref.WeakKeyDictionary()
)


class FastPathError(ValueError):
    """A model, or one of its forward passes, that the fast path cannot clip per example."""


def fast_path_obstacles(module: nn.Module) -> list[str]:
    """Why the fast path cannot train ``module``: one ``"path (Type): reason"`` per layer.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    list of str
        Empty when every trainable parameter belongs to a supported layer; the path of the
        root module itself is ``"(root)"``.
    """
    found = []
    owners: dict[int, str] = {}
    for path, sub in module.named_modules(remove_duplicate=False):
        name = f"{path or '(root)'} ({type(sub).__name__})"
        own = [p for p in sub.parameters(recurse=False) if p.requires_grad]
        if isinstance(sub, _BatchNorm):
            found.append(f"{name}: BatchNorm mixes the examples of a batch")
        elif own and type(sub) not in _INPUT_DIMS:
            found.append(f"{name}: no per-example rule for this layer type")
        elif own and len(own) != len(list(sub.parameters(recurse=False))):
            found.append(f"{name}: only some of its parameters are trainable")
        elif isinstance(sub, nn.Conv2d) and (sub.groups != 1 or sub.padding_mode != "zeros"):
            found.append(f"{name}: groups={sub.groups}, padding_mode={sub.padding_mode!r} "
                         f"(needs groups=1, 'zeros')")
        for param in own:
            if id(param) in owners:
                found.append(f"{name}: shares a parameter with {owners[id(param)]}")
            owners[id(param)] = name
    return found


@dataclass(frozen=True)
class _Layer:
    """One supported layer with trainable parameters."""

    name: str
    module: nn.Linear | nn.Conv2d

    @property
    def bias(self) -> bool:
        """Whether the layer has a bias."""
        return self.module.bias is not None

    @property
    def params(self) -> list[nn.Parameter]:
        """Its parameters, in ``parameters()`` order (weight, then bias)."""
        return [self.module.weight] + ([self.module.bias] if self.bias else [])


@dataclass
class _LayerGrads:
    """One layer's per-example gradients in factored form: Linear keeps its input ``a`` and
    output gradient ``g``; Conv2d its materialised ``(B, out, C k k)`` weight and ``(B, out)``
    bias gradients; a layer the loss did not reach keeps nothing."""

    layer: _Layer
    a: torch.Tensor | None = None
    g: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def sums(self, factors: torch.Tensor, out: list[torch.Tensor]) -> None:
        """Write ``Σ_i factors_i grad_i`` of the layer's weight and (if any) bias into
        ``out`` (tensors of their shapes)."""
        if self.a is not None:
            linear_clipped_grads(self.a, self.g, factors, self.layer.bias, out=out)
        elif self.weight is not None:
            weighted_per_example_sum(self.weight, factors, out=out[0].view(out[0].shape[0], -1))
            if self.bias is not None:
                weighted_per_example_sum(self.bias, factors, out=out[1])
        else:
            for tensor in out:
                tensor.zero_()


@dataclass
class PerExampleGradients:
    """The per-example gradients of one batch, kept in the form that makes them cheap.

    Attributes
    ----------
    sq_norms : torch.Tensor
        ``(B,)`` squared L2 norms of each example's gradient over all trainable parameters.
    layers : list of _LayerGrads
    """

    sq_norms: torch.Tensor
    layers: list[_LayerGrads]

    def sums(
        self, factors: torch.Tensor, out: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """``Σ_i factors_i grad_i`` for every trainable parameter, in ``parameters()`` order.

        Parameters
        ----------
        factors : torch.Tensor
            ``(B,)``, e.g. :func:`~privfed.privacy.perexample.clip_factors` of the norms; a
            one-hot vector gives one example's gradient.
        out : list of torch.Tensor, optional
            Contiguous tensors of the parameters' shapes to write the sums into (e.g. views
            of a flat gradient buffer); default: new tensors.

        Returns
        -------
        list of torch.Tensor
            ``out`` (or the new tensors), each of its parameter's shape (zeros for a layer
            the loss did not reach).
        """
        if out is None:
            out = [torch.empty_like(p) for part in self.layers for p in part.layer.params]
        start = 0
        for part in self.layers:
            stop = start + len(part.layer.params)
            part.sums(factors, out[start:stop])
            start = stop
        return out


@dataclass
class _Tape:
    """The inputs and outputs of the supported layers in one forward pass."""

    layers: list[_Layer]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def gradients(self, loss: torch.Tensor) -> PerExampleGradients:
        """Per-example gradients of the summed ``loss`` (one backward pass) of the forward
        pass just recorded; the tape is then empty for the next one.

        Raises
        ------
        FastPathError
            No supported layer ran in the forward pass.
        """
        seen, self.seen = self.seen, {}
        if not seen:
            raise FastPathError("no Linear or Conv2d layer ran in the forward pass")
        outputs = [output for _, output in seen.values()]
        grads = dict(zip(seen, torch.autograd.grad(loss, outputs, allow_unused=True),
                         strict=True))
        sq_norms = None
        parts = []
        for i, layer in enumerate(self.layers):
            g = grads.get(i)
            if g is None:
                parts.append(_LayerGrads(layer))
                continue
            if isinstance(layer.module, nn.Linear):
                part = _LayerGrads(layer, a=seen[i][0], g=g)
                sq = linear_sq_norms(part.a, g, layer.bias)
            else:
                weight, bias = conv2d_per_example_grads(seen[i][0], g, layer.module)
                part = _LayerGrads(layer, weight=weight, bias=bias)
                sq = per_example_sq_norms(weight)
                if bias is not None:
                    sq = sq + per_example_sq_norms(bias)
            sq_norms = sq if sq_norms is None else sq_norms + sq
            parts.append(part)
        if sq_norms is None:  # the loss reached no layer
            sq_norms = loss.new_zeros(next(iter(seen.values()))[0].shape[0])
        return PerExampleGradients(sq_norms, parts)


class PerExampleClipper:
    """The supported layers of one model, and the hooks that record them.

    Use :meth:`of` (one clipper per model, checked once per example shape).

    Parameters
    ----------
    module : torch.nn.Module

    Raises
    ------
    FastPathError
        The model has obstacles (see :func:`fast_path_obstacles`); the message names them.
    """

    def __init__(self, module: nn.Module) -> None:
        obstacles = fast_path_obstacles(module)
        if obstacles:
            raise FastPathError("the fast DP-SGD path cannot clip per example: "
                                + "; ".join(obstacles))
        self.module = module
        self.layers = [_Layer(path or "(root)", sub) for path, sub in module.named_modules()
                       if type(sub) in _INPUT_DIMS and sub.weight.requires_grad]
        self._checked: set[tuple[tuple[int, ...], torch.dtype]] = set()

    @classmethod
    def of(cls, module: nn.Module) -> PerExampleClipper:
        """The clipper of ``module``, created on first use.

        Raises
        ------
        FastPathError
            As the constructor.
        """
        clipper = _CLIPPERS.get(module)
        if clipper is None:
            clipper = _CLIPPERS[module] = cls(module)
        return clipper

    def check_forward(self, example: torch.Tensor) -> None:
        """Run ``module`` on one batch of ``example``'s shape (no gradients, eval mode, the
        caller's RNG untouched) and check that every layer sees a batched input once.

        Parameters
        ----------
        example : torch.Tensor
            ``(n, ...)`` inputs; only ``example[:1]`` runs, once per example shape and dtype.

        Raises
        ------
        FastPathError
            A layer ran twice in one forward pass or on an input of the wrong dimension.
        """
        key = (tuple(example.shape[1:]), example.dtype)
        if key in self._checked:
            return
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad(), self.recording():
                self.module(example[:1])
        finally:
            self.module.train(was_training)
        self._checked.add(key)

    @contextmanager
    def recording(self) -> Iterator[_Tape]:
        """Hooks that record the layers' inputs and outputs of forward passes run inside.

        Yields
        ------
        _Tape
            Call its ``gradients(loss)`` after each forward pass.

        Raises
        ------
        FastPathError
            (During the forward pass) a layer ran twice or on an unbatched input.
        """
        tape = _Tape(self.layers)
        handles = [layer.module.register_forward_hook(_recorder(tape, i))
                   for i, layer in enumerate(self.layers)]
        try:
            yield tape
        finally:
            for handle in handles:
                handle.remove()


def _recorder(tape: _Tape, index: int) -> Callable[..., None]:
    """The forward hook that records layer ``index``'s input and output on ``tape``."""
    layer = tape.layers[index]
    dims = _INPUT_DIMS[type(layer.module)]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if index in tape.seen:
            raise FastPathError(f"{layer.name} ({type(module).__name__}) ran twice in one "
                                f"forward pass; its per-example gradient is not one product")
        if inputs[0].dim() != dims:
            raise FastPathError(f"{layer.name} ({type(module).__name__}) got an input of "
                                f"shape {tuple(inputs[0].shape)}; the fast path needs "
                                f"{dims} dimensions (batch first)")
        tape.seen[index] = (inputs[0].detach(), output)

    return hook
