"""Model parameters as one flat float32 vector.

Every update in privfed travels as a flat vector plus the :class:`ParamSpec` that says how
to cut it back into named tensors. :func:`bind_flat_parameters` goes one step further for
the simulation's hot loop: it makes a model's parameters (and their gradients) views into one
contiguous buffer, so loading a global model, computing a delta and taking an SGD step are
each a single vector operation instead of one per tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ParamSpec", "FlatParameters", "bind_flat_parameters"]


@dataclass(frozen=True)
class ParamSpec:
    """Names and shapes of a model's parameters, in ``named_parameters()`` order.

    Attributes
    ----------
    names : tuple of str
    shapes : tuple of tuple of int
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamSpec:
        """The spec of ``module``'s trainable parameters."""
        named = [(n, tuple(p.shape)) for n, p in module.named_parameters() if p.requires_grad]
        return cls(tuple(n for n, _ in named), tuple(s for _, s in named))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each parameter."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def numel(self) -> int:
        """Total number of elements, the length of the flat vector."""
        return sum(self.sizes)

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate named tensors into one float32 vector, in spec order.

        Raises
        ------
        ValueError
            If a name is missing or a shape differs from the spec.
        """
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"parameters missing from the state: {missing}")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            tensor = tensors[name]
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(tensor.shape)}, spec {shape}"
                )
            parts.append(tensor.detach().reshape(-1).to(torch.float32))
        return torch.cat(parts)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut a flat vector into named tensors (views of ``vector``).

        Raises
        ------
        ValueError
            If ``vector`` is not 1-D of length :attr:`numel`.
        """
        if vector.dim() != 1 or vector.numel() != self.numel:
            raise ValueError(
                f"flat vector has shape {tuple(vector.shape)}, expected ({self.numel},)"
            )
        pieces = torch.split(vector, self.sizes)
        return {
            n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)
        }


@dataclass(frozen=True)
class FlatParameters:
    """A model whose parameters and gradients live in two flat buffers.

    Attributes
    ----------
    module : torch.nn.Module
        The model; each parameter's ``.data`` is a view of :attr:`data`.
    spec : ParamSpec
    data : torch.Tensor
        Flat float32 vector of all parameters, on the model's :attr:`device`. Writing into
        it changes the model.
    grad : torch.Tensor
        Flat float32 vector that each parameter's ``.grad`` is a view of. Zero it with
        ``grad.zero_()``; never set parameters' grads to ``None`` (that breaks the views).
    """

    module: nn.Module
    spec: ParamSpec
    data: torch.Tensor
    grad: torch.Tensor

    @property
    def device(self) -> torch.device:
        """Where the model and its flat buffers live."""
        return self.data.device

    def load(self, vector: torch.Tensor) -> None:
        """Copy a flat vector (on any device) into the model's parameters."""
        self.data.copy_(vector)


def bind_flat_parameters(
    module: nn.Module, device: torch.device | str | None = None
) -> FlatParameters:
    """Re-home ``module``'s parameters and gradients into two contiguous flat buffers.

    The parameter values are preserved. Afterwards ``module`` trains as usual (autograd
    accumulates into the gradient views in place), and the whole model can be read,
    written or updated as one vector.

    Parameters
    ----------
    module : torch.nn.Module
        A float32 model.
    device : torch.device or str, optional
        Move ``module`` (parameters and buffers) there first; default: where it is.

    Returns
    -------
    FlatParameters
    """
    if device is not None:
        module.to(device)
    spec = ParamSpec.from_module(module)
    params = [p for p in module.parameters() if p.requires_grad]
    data = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in params])
    grad = torch.zeros_like(data)
    for param, value, gradient, shape in zip(
        params, torch.split(data, spec.sizes), torch.split(grad, spec.sizes), spec.shapes,
        strict=True,
    ):
        param.data = value.view(shape)
        param.grad = gradient.view(shape)
    return FlatParameters(module=module, spec=spec, data=data, grad=grad)
