"""Gradient inversion: DLG with iDLG label recovery, and inverting gradients.

* DLG (Zhu et al. 2019): optimise a dummy input with L-BFGS so that its gradient matches the
  observed one in squared L2 distance.
* iDLG (Zhao et al. 2020): for a single example under cross-entropy, the gradient of the
  last layer's bias is ``softmax - onehot(y)``: the only negative entry is the label.
* Inverting gradients (Geiping et al. 2020): cosine distance between gradients plus a total
  variation prior, optimised with Adam on the sign of the gradient, inputs kept in the box.

What the server observes is an update ``delta = local - global``; for one local SGD step with
the known learning rate the gradient is ``-delta / lr`` (:func:`gradient_from_update`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from privfed.federated.params import FlatParameters

__all__ = [
    "Reconstruction",
    "gradient_from_update",
    "recover_label",
    "dlg",
    "inverting_gradients",
    "invert",
]


@dataclass
class Reconstruction:
    """A reconstructed example.

    Attributes
    ----------
    x : numpy.ndarray
        The reconstructed input, shape of one example.
    label : int
        The recovered (or assumed) label.
    distance : float
        Final gradient-matching loss.
    """

    x: np.ndarray
    label: int
    distance: float


def gradient_from_update(update: np.ndarray, lr: float, steps: int = 1) -> torch.Tensor:
    """The (average) gradient behind an update of ``steps`` SGD steps at learning rate ``lr``.

    Exact for one step (FedSGD); for several steps it is the average of the gradients along
    the local trajectory, which the attack then treats as one gradient.
    """
    return torch.as_tensor(np.asarray(update), dtype=torch.float32) / (-lr * steps)


def recover_label(workspace: FlatParameters, gradient: torch.Tensor) -> int:
    """iDLG: the label of a single example from its last-layer bias gradient.

    Falls back to the last weight matrix (the row whose gradient sums most negative) when the
    output layer has no bias.
    """
    parts = workspace.spec.unflatten(gradient)
    last_name = workspace.spec.names[-1]
    if last_name.endswith("bias"):
        return int(torch.argmin(parts[last_name]))
    return int(torch.argmin(parts[last_name].sum(dim=1)))


def _model_gradient(
    workspace: FlatParameters, params: dict[str, torch.Tensor], x: torch.Tensor, label: int
) -> list[torch.Tensor]:
    out = functional_call(workspace.module, params, (x,))
    loss = F.cross_entropy(out, torch.tensor([label], device=x.device))
    return list(torch.autograd.grad(loss, list(params.values()), create_graph=True))


def _params(workspace: FlatParameters, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The flat ``weights`` as named leaf tensors on the workspace's device."""
    flat = weights.detach().to(workspace.device, copy=True)
    return {k: v.detach().requires_grad_(True) for k, v in workspace.spec.unflatten(flat).items()}


def _targets(workspace: FlatParameters, gradient: torch.Tensor) -> list[torch.Tensor]:
    """The observed flat ``gradient`` per parameter, on the workspace's device."""
    return list(workspace.spec.unflatten(gradient.to(workspace.device)).values())


def _start(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """The seeded uniform starting point (drawn on the CPU whatever the device)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((1, *shape), generator=gen).to(device).requires_grad_(True)


def dlg(
    workspace: FlatParameters,
    weights: torch.Tensor,
    gradient: torch.Tensor,
    input_shape: tuple[int, ...],
    label: int,
    *,
    iterations: int = 15,
    seed: int = 0,
) -> Reconstruction:
    """Deep leakage from gradients: L-BFGS on the squared L2 gradient distance.

    Parameters
    ----------
    workspace : FlatParameters
        The model architecture.
    weights : torch.Tensor
        Flat global weights at which the gradient was computed.
    gradient : torch.Tensor
        The observed flat gradient.
    input_shape : tuple of int
    label : int
        The label (from :func:`recover_label`).
    iterations : int
        L-BFGS outer iterations (each up to 20 function evaluations).
    seed : int
        Seed of the random starting point, uniform in [0, 1].
    """
    params = _params(workspace, weights)
    targets = _targets(workspace, gradient)
    x = _start(input_shape, seed, workspace.device)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=20, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        grads = _model_gradient(workspace, params, x, label)
        loss = sum(((g - t) ** 2).sum() for g, t in zip(grads, targets, strict=True))
        loss.backward()
        return loss

    loss = torch.tensor(float("inf"))
    for _ in range(iterations):
        loss = opt.step(closure)
        if not torch.isfinite(loss) or loss.item() < 1e-12:
            break
    return Reconstruction(x.detach()[0].cpu().numpy(), label, float(loss.detach()))


def inverting_gradients(
    workspace: FlatParameters,
    weights: torch.Tensor,
    gradient: torch.Tensor,
    input_shape: tuple[int, ...],
    label: int,
    *,
    iterations: int = 200,
    lr: float = 0.1,
    tv_weight: float = 1e-4,
    box: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> Reconstruction:
    """Geiping et al.'s attack: ``1 - cos(grad(x), g) + tv_weight * TV(x)``, signed Adam.

    Parameters
    ----------
    workspace, weights, gradient, input_shape, label, seed
        As in :func:`dlg`.
    iterations : int
        Adam steps (learning rate decayed by 10x at 3/8, 5/8 and 7/8 of them).
    lr : float
    tv_weight : float
        Weight of the anisotropic total variation of the image.
    box : (float, float)
        The input range; the dummy is projected into it after every step.
    """
    params = _params(workspace, weights)
    targets = _targets(workspace, gradient)
    target_norm = torch.sqrt(sum((t**2).sum() for t in targets))
    x = _start(input_shape, seed, workspace.device)
    opt = torch.optim.Adam([x], lr=lr)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    loss = torch.tensor(float("inf"))
    for _ in range(iterations):
        opt.zero_grad()
        grads = _model_gradient(workspace, params, x, label)
        dot = sum((g * t).sum() for g, t in zip(grads, targets, strict=True))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        loss = 1 - dot / (norm * target_norm + 1e-12) + tv_weight * _total_variation(x)
        loss.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(*box)
    return Reconstruction(x.detach()[0].cpu().numpy(), label, float(loss.detach()))


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 4:
        return x.new_zeros(())
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


def invert(
    workspace: FlatParameters,
    weights: torch.Tensor,
    gradient: torch.Tensor,
    input_shape: tuple[int, ...],
    *,
    method: str = "dlg",
    iterations: int | None = None,
    seed: int = 0,
) -> Reconstruction:
    """Recover the label with iDLG, then the input with ``method`` ("dlg" or "geiping")."""
    label = recover_label(workspace, gradient)
    if method == "dlg":
        return dlg(workspace, weights, gradient, input_shape, label,
                   iterations=iterations or 15, seed=seed)
    if method == "geiping":
        return inverting_gradients(workspace, weights, gradient, input_shape, label,
                                   iterations=iterations or 200, seed=seed)
    raise ValueError(f"unknown inversion method {method!r}; allowed: 'dlg', 'geiping'")
