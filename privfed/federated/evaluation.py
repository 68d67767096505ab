"""Evaluation of a model on held-out data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from privfed.federated.engine import TrainingDivergedError

__all__ = ["evaluate", "predict_logits"]


@torch.no_grad()
def evaluate(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``module`` on ``(x, y)``.

    Returns
    -------
    (loss, accuracy) : tuple of float

    Raises
    ------
    TrainingDivergedError
        The model's outputs are NaN or infinite (its weights overflow float32 arithmetic).
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty test set")
    module.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = finite_logits(module(x[start : start + batch_size]))
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == target).sum())
    return loss_sum / len(y), correct / len(y)


@torch.no_grad()
def predict_logits(module: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The ``(N, C)`` float32 logits of ``module`` on ``x``, in eval mode, computed on the
    module's device and returned on the CPU.

    Raises
    ------
    TrainingDivergedError
        The model's outputs are NaN or infinite (its weights overflow float32 arithmetic).
    """
    module.eval()
    device = next(module.parameters()).device
    return torch.cat([finite_logits(module(x[start : start + batch_size].to(device))).cpu()
                      for start in range(0, len(x), batch_size)])


def finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits``, checked finite: a model whose outputs overflow has diverged, whatever its
    weights look like.

    Raises
    ------
    TrainingDivergedError
        ``logits`` holds NaN or infinite values.
    """
    if not torch.isfinite(logits).all():
        raise TrainingDivergedError(
            "the global model's outputs are NaN/Inf, so training diverged; lower "
            "federation.server_lr (or server_momentum, federation.lr)")
    return logits
