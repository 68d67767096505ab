"""The Skellam mechanism (Agarwal, Kairouz and Liu, NeurIPS 2021): integer noise and its RDP.

Opacus has no Skellam accountant, so this module holds the one piece of hand-written
privacy math in privfed: the RDP bound of the multi-dimensional Skellam mechanism,
Agarwal et al. 2021, Theorem 3.5 (noise ``Sk(mu) = Poisson(mu) - Poisson(mu)`` per
coordinate, variance ``2 mu``; integer inputs of L1 / L2 sensitivity ``Delta_1``,
``Delta_2``)::

    eps(alpha) <= alpha Delta_2^2 / (4 mu)
                  + min( ((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (16 mu^2),  3 Delta_1 / (4 mu) )

The first term is the RDP of a Gaussian of the same variance. The theorem is stated for
integer orders alpha >= 2 (its proof expands the Renyi divergence as a binomial sum), so
only integer orders are searched. The conversion to (epsilon, delta) is Opacus's
:func:`opacus.accountants.analysis.rdp.get_privacy_spent` (imported on first use). Client
subsampling is *not* credited (no amplification bound for Skellam is used), so the epsilon
is an upper bound whatever the sample rate, against the server as against an outsider.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from privfed.privacy.randomness import NoiseSource

__all__ = ["SKELLAM_ORDERS", "add_skellam_noise", "skellam_epsilon", "skellam_rdp",
           "skellam_sensitivity", "skellam_sum_epsilon"]

SKELLAM_ORDERS = tuple(range(2, 257)) + (320, 384, 448, 512, 768, 1024)
"""Integer Renyi orders, the only ones Theorem 3.5 covers."""


def skellam_rdp(orders: np.ndarray, mu: float, l1: float, l2: float) -> np.ndarray:
    """RDP of one release of the Skellam mechanism (Agarwal et al. 2021, Thm. 3.5).

    Parameters
    ----------
    orders : numpy.ndarray
        RDP orders alpha > 1.
    mu : float
        Skellam parameter of the noise in the released sum (variance ``2 mu``).
    l1, l2 : float
        L1 and L2 sensitivity of the integer sum.
    """
    alpha = np.asarray(orders, dtype=np.float64)
    extra = np.minimum(((2 * alpha - 1) * l2**2 + 6 * l1) / (16 * mu**2), 3 * l1 / (4 * mu))
    return alpha * l2**2 / (4 * mu) + extra


def skellam_sensitivity(clip_norm: float, step: float, dim: int) -> tuple[float, float]:
    """L1 and L2 sensitivity of a clipped update after stochastic rounding to ``step``.

    Rounding moves each of the ``dim`` coordinates by less than one unit, so
    ``Delta_2 <= S / step + sqrt(dim)`` and ``Delta_1 <= min(Delta_2^2, sqrt(dim) Delta_2)``.
    """
    l2 = clip_norm / step + math.sqrt(dim)
    return min(l2 * l2, math.sqrt(dim) * l2), l2


def add_skellam_noise(
    vector: torch.Tensor, step: float, mu: float, source: NoiseSource
) -> torch.Tensor:
    """Round ``vector / step`` stochastically to integers and add ``Sk(mu)`` noise.

    Returns the integer lattice point times ``step`` (float32), i.e. a vector on the grid
    ``step * Z^d`` that an integer (masking) aggregator can carry exactly.
    """
    scaled = vector.double().numpy() / step
    low = np.floor(scaled)
    rounded = low + (source.uniform(scaled.size).reshape(scaled.shape) < scaled - low)
    noise = source.skellam(mu, scaled.size).reshape(scaled.shape)
    return torch.from_numpy((rounded + noise) * step).float()


@functools.lru_cache(maxsize=1024)
def skellam_epsilon(mu: float, l1: float, l2: float, releases: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``releases`` Skellam releases with noise ``Sk(mu)`` per
    coordinate of the released sum and sensitivities ``l1``, ``l2`` (0 before the first)."""
    if releases == 0:
        return 0.0
    from opacus.accountants.analysis.rdp import get_privacy_spent

    orders = np.array(SKELLAM_ORDERS, dtype=np.float64)
    rdp = releases * skellam_rdp(orders, mu, l1, l2)
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)


def skellam_sum_epsilon(
    noise_multiplier: float,
    clip_norm: float,
    step: float,
    dim: int,
    releases: int,
    delta: float,
    *,
    replace_one: bool = False,
) -> float:
    """Epsilon of ``releases`` sums of updates clipped to ``clip_norm``, rounded to the
    lattice ``step * Z^dim`` and carrying Skellam noise of total variance ``(z S)^2``
    (``Sk(mu)`` with ``mu = (z S / step)^2 / 2``, however the shares were split).

    ``replace_one``: one update replaced by another rather than added or removed, so both
    sensitivities double.
    """
    if releases == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    l1, l2 = skellam_sensitivity(clip_norm, step, dim)
    factor = 2 if replace_one else 1
    mu = (noise_multiplier * clip_norm / step) ** 2 / 2
    return skellam_epsilon(mu, factor * l1, factor * l2, releases, delta)
