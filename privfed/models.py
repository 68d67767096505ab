"""Small Opacus-compatible models behind one registry, and users' own models by import path.

Every model here uses only layers that Opacus can compute per-sample gradients for
(no BatchNorm), so the same architecture serves plain and DP-SGD training. A model name of
the form ``"package.module:factory"`` names a user's factory instead (see
:func:`build_model`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["MODELS", "build_model", "is_import_path", "parse_import_path",
           "LogisticRegression", "MLP", "CNN"]

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH = re.compile(rf"({_DOTTED}):({_DOTTED})")


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
    """Build a registered model, or a user's, with deterministic initial weights.

    The initialisation runs under ``torch.manual_seed(seed)`` inside a forked RNG, so it is
    reproducible and leaves the caller's global RNG untouched; a user's factory gets the same.

    Parameters
    ----------
    name : str
        One of ``MODELS`` ("logistic", "mlp", "cnn"), or an import path
        ``"package.module:factory"``: the module is imported and
        ``factory(input_shape, num_classes, **options)`` must return a ``torch.nn.Module``.
    input_shape : tuple of int
        Shape of one example, e.g. ``(1, 28, 28)`` or ``(30,)``.
    num_classes : int
        Number of output classes.
    seed : int
        Seed of the initial weights.
    **options
        Model-specific options (``hidden`` for "mlp"; any keyword of a user's factory).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        Naming ``model.name``: an unknown name, bad options, or for an import path a bad
        form, a module that cannot be imported, a missing or non-callable attribute, a
        factory that raised or that returned something other than an ``nn.Module``.
    """
    if is_import_path(name):
        return _build_user_model(name, tuple(input_shape), num_classes, seed, options)
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; allowed: {sorted(MODELS)} or "
                         f"an import path 'package.module:factory'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return MODELS[name](tuple(input_shape), num_classes, **options)
        except TypeError as err:
            raise ValueError(f"model {name!r}: bad options {sorted(options)}: {err}") from None


def is_import_path(name: str) -> bool:
    """Whether ``name`` is meant as an import path (it contains ``":"``), not a registered
    model."""
    return ":" in name


def parse_import_path(name: str) -> tuple[str, str]:
    """Split ``"package.module:factory"`` into the module and the attribute (dotted) path.

    Raises
    ------
    ValueError
        Naming ``model.name``, when ``name`` is not of that form.
    """
    match = _IMPORT_PATH.fullmatch(name)
    if match is None:
        raise ValueError(
            f"model.name = {name!r}: an import path must have the form "
            f"'package.module:factory' (dotted Python identifiers on both sides of one ':'); "
            f"registered models: {sorted(MODELS)}"
        )
    return match.group(1), match.group(2)


def _import_factory(name: str) -> Callable[..., object]:
    """The callable that the import path ``name`` points to."""
    module_name, attr_path = parse_import_path(name)
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model.name = {name!r}: cannot import module {module_name!r} "
                         f"({err}); is it on sys.path / PYTHONPATH?") from err
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ValueError(f"model.name = {name!r}: module {module_name!r} has no "
                             f"attribute {attr_path!r}")
        target = getattr(target, attr)
    if not callable(target):
        raise ValueError(f"model.name = {name!r}: {attr_path!r} in {module_name!r} is a "
                         f"{type(target).__name__}, not callable")
    return target


def _build_user_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, seed: int,
    options: dict[str, object],
) -> nn.Module:
    """Call the user's factory under the seeded RNG; check that it returns a module."""
    factory = _import_factory(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            module = factory(input_shape, num_classes, **options)
        except Exception as err:
            raise ValueError(
                f"model.name = {name!r}: the factory raised {type(err).__name__}: {err} "
                f"(called as factory({input_shape}, {num_classes}, **{options!r}))"
            ) from err
    if not isinstance(module, nn.Module):
        raise ValueError(f"model.name = {name!r}: the factory returned a "
                         f"{type(module).__name__}, not a torch.nn.Module")
    return module


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n
