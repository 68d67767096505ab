"""Per-example gradient norms and clipped gradient sums of single layers, in closed form.

DP-SGD (Abadi et al. 2016) clips each example's gradient to norm C and sums them. For the
layers privfed's models use, the per-example gradient of a layer's parameters is a simple
function of the layer's input activations ``a`` and of the gradient ``g`` of the summed loss
with respect to the layer's output, both captured in one ordinary forward and backward pass:

* Linear, ``y = W a + b``: example i's gradient is ``g_i a_iᵀ`` (and ``g_i`` for the bias),
  so its squared norm is ``‖a_i‖² ‖g_i‖²`` (+ ``‖g_i‖²``) without forming it
  (Goodfellow 2015, "Efficient per-example gradient computations"; the "ghost norm" of
  Li et al. 2022, "Large language models can be strong differentially private learners"),
  and the clipped sum ``Σ_i c_i g_i a_iᵀ`` is one matrix product of ``(c g)`` and ``a``
  (Bu et al. 2023, "Differentially private optimization on large model at small cost", the
  book-keeping trick: no second backward pass).
* Conv2d: example i's weight gradient is a convolution of its input by its output gradient;
  all B of them are one grouped convolution (Rochette et al. 2019, "Efficient per-example
  gradient computations in convolutional neural networks"), small enough for privfed's CNN
  to materialise.

The Linear functions accept any leading dimensions ``(*lead, B, features)``: a leading
dimension may stack independent problems (e.g. the K clients of a round), each with its own
batch of B examples and its own clip factors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "clip_factors",
    "conv2d_per_example_grads",
    "linear_clipped_grads",
    "linear_sq_norms",
    "per_example_sq_norms",
    "weighted_per_example_sum",
]

CLIP_EPSILON = 1e-6
"""Added to the norm before dividing, as Opacus does (``get_clipping_coef``)."""


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Per-example clip factors ``min(1, C / (norm + 1e-6))``, Opacus's formula.

    Parameters
    ----------
    norms : torch.Tensor
        Per-example gradient L2 norms, any shape (e.g. ``(*lead, B)``), float.
    max_grad_norm : float
        The clip norm C > 0.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``norms``, values in ``(0, 1]``; example i's clipped gradient
        ``factors_i * grad_i`` has norm at most C.
    """
    # ``C / x`` as PyTorch evaluates it for a float C (``x.reciprocal() * C``), in place.
    return (norms + CLIP_EPSILON).reciprocal_().mul_(max_grad_norm).clamp_(max=1.0)


def linear_sq_norms(a: torch.Tensor, g: torch.Tensor, bias: bool) -> torch.Tensor:
    """Per-example squared gradient norms of a Linear layer's weight (and bias).

    Example i's weight gradient ``g_i a_iᵀ`` has squared Frobenius norm
    ``‖a_i‖² ‖g_i‖²``; the bias gradient ``g_i`` adds ``‖g_i‖²`` (Goodfellow 2015): in all
    ``(‖a_i‖² + 1) ‖g_i‖²``.

    Parameters
    ----------
    a : torch.Tensor
        Input activations, shape ``(*lead, B, in)``, float.
    g : torch.Tensor
        Gradient of the summed loss w.r.t. the layer's output, shape ``(*lead, B, out)``,
        same dtype.
    bias : bool
        Whether the layer has a (trainable) bias.

    Returns
    -------
    torch.Tensor
        Shape ``(*lead, B)``.

    Raises
    ------
    ValueError
        ``a`` and ``g`` differ in their leading or batch dimensions.
    """
    _check_pair(a, g)
    a_sq = torch.linalg.vecdot(a, a)
    return (a_sq + 1 if bias else a_sq) * torch.linalg.vecdot(g, g)


def linear_clipped_grads(
    a: torch.Tensor, g: torch.Tensor, factors: torch.Tensor, bias: bool,
    out: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The clipped gradient sums ``Σ_i c_i g_i a_iᵀ`` and ``Σ_i c_i g_i`` of a Linear layer.

    One batched matrix product of ``(c g)ᵀ`` and ``a`` (Bu et al. 2023); with ``factors`` a
    one-hot vector it is one example's scaled gradient.

    Parameters
    ----------
    a : torch.Tensor
        Input activations, shape ``(*lead, B, in)``, float.
    g : torch.Tensor
        Output gradients, shape ``(*lead, B, out)``, same dtype.
    factors : torch.Tensor
        Per-example factors (e.g. :func:`clip_factors`), shape ``(*lead, B)``.
    bias : bool
        Also return the bias's sum.
    out : list of torch.Tensor, optional
        Write the weight's (and the bias's) sum into these contiguous tensors, of shapes
        ``(*lead, out, in)`` (and ``(*lead, out)``), e.g. views of a flat gradient buffer.

    Returns
    -------
    weight : torch.Tensor
        Shape ``(*lead, out, in)``, the layout of ``nn.Linear.weight``.
    bias : torch.Tensor or None
        Shape ``(*lead, out)``; None when ``bias`` is False.

    Raises
    ------
    ValueError
        ``a`` and ``g`` differ in their leading or batch dimensions, or ``factors`` is not
        of shape ``(*lead, B)``.
    """
    _check_pair(a, g)
    if factors.shape != g.shape[:-1]:
        raise ValueError(f"factors have shape {tuple(factors.shape)}, expected "
                         f"{tuple(g.shape[:-1])} (*lead, B)")
    scaled = g * factors.unsqueeze(-1)
    if out is None:
        return scaled.mT @ a, (scaled.sum(-2) if bias else None)
    weight = torch.matmul(scaled.mT, a, out=out[0])
    return weight, (torch.sum(scaled, -2, out=out[1]) if bias else None)


def conv2d_per_example_grads(
    a: torch.Tensor, g: torch.Tensor, conv: torch.nn.Conv2d
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-example weight (and bias) gradients of a 2-D convolution, as one convolution.

    Example i's weight gradient ``∂L/∂W[o, c, u, v] = Σ_{y,x} g_i[o, y, x]
    a_i[c, s y + d u, s x + d v]`` (stride s, dilation d, ``a`` zero-padded) is itself a
    convolution of ``a_i`` by ``g_i``; with the batch as B groups, one ``conv2d`` (stride d,
    dilation s) gives all B of them (Rochette et al. 2019, "Efficient per-example gradient
    computations in convolutional neural networks"; Opacus's
    ``convolution2d_backward_as_a_convolution``).

    Why this form: it measured fastest for privfed's CNN (one thread, B = 32, 5 x 5,
    median of 15): 1 x 28 x 28 -> 32 channels 0.9 ms and 32 x 14 x 14 -> 64 channels
    13-16 ms, against 1.5 ms and 20-24 ms for unfolding (``im2col``, then one batched
    matrix product per example, which materialises ``B C k² L`` patch values); the ghost
    norm ``Σ_{l,l'} (g_iᵀ g_i)_{ll'} (U_iᵀ U_i)_{ll'}`` of Li et al. 2022 / Bu et al. 2023
    grows with L² (L output positions: 784 for 28 x 28) and measured 106 ms and 24 ms. The
    materialised gradients (at most ``B x 64 x 800`` values here) then give the norms and
    the clipped sum for ``B out C k²`` multiply-adds each.

    Parameters
    ----------
    a : torch.Tensor
        The layer's input, shape ``(B, C, H, W)``, float.
    g : torch.Tensor
        Gradient of the summed loss w.r.t. the layer's output, shape ``(B, out, H', W')``.
    conv : torch.nn.Conv2d
        The layer: ``groups == 1`` and ``padding_mode == "zeros"``.

    Returns
    -------
    weight : torch.Tensor
        Shape ``(B, out, C k_h k_w)`` (example i's gradient of ``conv.weight``, flattened).
    bias : torch.Tensor or None
        Shape ``(B, out)``; None when the layer has no bias.

    Raises
    ------
    ValueError
        The layer has ``groups != 1`` or a padding mode other than zeros, or the shapes
        disagree.
    """
    if conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError(f"per-example Conv2d gradients need groups=1 and padding_mode="
                         f"'zeros', got groups={conv.groups}, {conv.padding_mode!r}")
    if a.dim() != 4 or g.dim() != 4 or a.shape[0] != g.shape[0]:
        raise ValueError(f"expected a (B, C, H, W) and g (B, out, H', W'), got "
                         f"{tuple(a.shape)} and {tuple(g.shape)}")
    (batch, channels), out_channels = a.shape[:2], g.shape[1]
    bias = g.sum((2, 3)) if conv.bias is not None else None
    if batch == 0:
        return a.new_zeros(0, out_channels, conv.weight[0].numel()), bias
    kernel_h, kernel_w = conv.kernel_size
    grads = F.conv2d(
        F.pad(a, _zero_padding(conv)).transpose(0, 1),  # (C, B, H + pads, W + pads)
        g.reshape(batch * out_channels, 1, *g.shape[2:]),
        stride=conv.dilation, dilation=conv.stride, groups=batch,
    )  # (C, B out, >= k_h, >= k_w): the first k_h x k_w positions are the gradient
    grads = grads[:, :, :kernel_h, :kernel_w].reshape(channels, batch, out_channels, -1)
    return grads.permute(1, 2, 0, 3).reshape(batch, out_channels, -1), bias


def per_example_sq_norms(grads: torch.Tensor) -> torch.Tensor:
    """Squared L2 norms of materialised per-example gradients.

    Parameters
    ----------
    grads : torch.Tensor
        Shape ``(B, ...)``.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``.
    """
    return grads.flatten(1).square().sum(1)


def weighted_per_example_sum(
    grads: torch.Tensor, factors: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``Σ_i factors_i grads_i`` of materialised per-example gradients.

    Parameters
    ----------
    grads : torch.Tensor
        Shape ``(B, ...)``.
    factors : torch.Tensor
        Shape ``(B,)``.
    out : torch.Tensor, optional
        A contiguous tensor of shape ``grads.shape[1:]`` to write into.

    Returns
    -------
    torch.Tensor
        Shape ``grads.shape[1:]``.
    """
    return torch.tensordot(factors, grads, dims=1, out=out)


def _zero_padding(conv: torch.nn.Conv2d) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` zero padding of ``conv``, for ``F.pad``; ``'same'``
    puts the odd extra row or column at the end, as ``torch.nn.Conv2d`` does."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        pads = []
        for size, dilation in zip(reversed(conv.kernel_size), reversed(conv.dilation),
                                  strict=True):
            total = dilation * (size - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    height, width = conv.padding
    return (width, width, height, height)


def _check_pair(a: torch.Tensor, g: torch.Tensor) -> None:
    """Raise ValueError unless ``a`` and ``g`` share every dimension but the last."""
    if a.dim() < 2 or a.shape[:-1] != g.shape[:-1]:
        raise ValueError(f"activations {tuple(a.shape)} and output gradients "
                         f"{tuple(g.shape)} must be (*lead, B, in) and (*lead, B, out)")
