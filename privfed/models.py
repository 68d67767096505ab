"""Small Opacus-compatible models behind one registry.

Every model here uses only layers that Opacus can compute per-sample gradients for
(no BatchNorm), so the same architecture serves plain and DP-SGD training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["MODELS", "build_model", "LogisticRegression", "MLP", "CNN"]


class LogisticRegression(nn.Sequential):
    """Multinomial logistic regression: flatten, then one linear layer.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one example (without the batch dimension).
    num_classes : int
        Number of output classes (logits).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__(nn.Flatten(), nn.Linear(_numel(input_shape), num_classes))


class MLP(nn.Sequential):
    """Fully connected ReLU network; the default is McMahan et al.'s "2NN" (2 x 200 units).

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one example (without the batch dimension).
    num_classes : int
        Number of output classes (logits).
    hidden : sequence of int, default (200, 200)
        Width of each hidden layer, in order.
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (200, 200)
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = _numel(input_shape)
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """McMahan et al.'s CNN: two 5x5 convolutions (32, 64 channels) each with 2x2 max-pool,
    a 512-unit dense layer, and the output layer.

    With 'same' padding the MNIST version has 1,663,370 parameters, as in the paper.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one image; height and width must be at least 4.
    num_classes : int
        Number of output classes (logits).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        if len(input_shape) != 3 or min(input_shape[1:]) < 4:
            raise ValueError(
                f"model 'cnn' needs image input of shape (channels, height>=4, width>=4), "
                f"got {tuple(input_shape)}; use 'mlp' or 'logistic' for tabular data"
            )
        channels, height, width = input_shape
        flat = 64 * (height // 2 // 2) * (width // 2 // 2)
        super().__init__(
            nn.Conv2d(channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )


MODELS: dict[str, Callable[..., nn.Module]] = {
    "logistic": LogisticRegression,
    "mlp": MLP,
    "cnn": CNN,
}


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int,
    **options: object,
) -> nn.Module:
    """Build a registered model with deterministic initial weights.

    The initialisation uses PyTorch's default initialisers under ``torch.manual_seed(seed)``
    inside a forked RNG, so it is reproducible and leaves the caller's global RNG untouched.

    Parameters
    ----------
    name : str
        One of ``MODELS`` ("logistic", "mlp", "cnn").
    input_shape : tuple of int
        Shape of one example, e.g. ``(1, 28, 28)`` or ``(30,)``.
    num_classes : int
        Number of output classes.
    seed : int
        Seed of the initial weights.
    **options
        Model-specific options (``hidden`` for "mlp").

    Returns
    -------
    torch.nn.Module
    """
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; allowed: {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return MODELS[name](tuple(input_shape), num_classes, **options)
        except TypeError as err:
            raise ValueError(f"model {name!r}: bad options {sorted(options)}: {err}") from None


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n
