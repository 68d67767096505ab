"""Privacy accounting: thin wrappers over Opacus's accountants (RDP, PRV, GDP).

Every epsilon privfed reports for a Gaussian mechanism comes from
:mod:`opacus.accountants`; nothing here re-derives the subsampled-Gaussian RDP.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from opacus.accountants import IAccountant, RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as privacy_analysis
from opacus.accountants.utils import get_noise_multiplier

from privfed.privacy.settings import ACCOUNTANTS

__all__ = [
    "make_accountant",
    "spent_epsilon",
    "user_level_epsilon",
    "calibrate_noise",
    "adaptive_update_noise",
]


RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [
    64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]
"""Renyi orders searched: Opacus's defaults extended to 1024, so that small epsilons (high
noise, few steps) are not limited by the largest order."""


def make_accountant(name: str) -> IAccountant:
    """A fresh Opacus accountant.

    Parameters
    ----------
    name : {"rdp", "prv", "gdp"}

    Returns
    -------
    opacus.accountants.IAccountant
    """
    if name not in ACCOUNTANTS:
        raise ValueError(
            f"privacy.accountant: unknown value {name!r}; allowed: {list(ACCOUNTANTS)}"
        )
    return create_accountant(mechanism=name)


def spent_epsilon(accountant: IAccountant, delta: float) -> float:
    """Epsilon spent so far by ``accountant`` at ``delta`` (0 before the first step).

    A step with noise multiplier 0 releases data without noise: the epsilon is infinite.
    """
    if not accountant.history:
        return 0.0
    if any(entry[0] == 0 for entry in accountant.history):
        return math.inf
    if isinstance(accountant, RDPAccountant):
        return _rdp_epsilon(accountant.history, delta)
    return float(accountant.get_epsilon(delta=delta))


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """What ``RDPAccountant.get_epsilon(delta, alphas=RDP_ORDERS)`` computes, with the
    per-step RDP curve of each (noise, rate) pair computed once per process.

    Opacus recomputes the curve on every query (about 0.1 s for the fractional orders);
    privfed queries every client's epsilon after every round, so the cache matters.
    """
    rdp = sum(steps * _rdp_per_step(noise, rate) for noise, rate, steps in history)
    epsilon, _ = privacy_analysis.get_privacy_spent(orders=RDP_ORDERS, rdp=rdp, delta=delta)
    return float(epsilon)


@functools.lru_cache(maxsize=1024)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    return np.asarray(privacy_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDP_ORDERS))


def user_level_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """Epsilon of ``rounds`` rounds of the Poisson-subsampled Gaussian mechanism.

    The user-level guarantee of DP-FedAvg (McMahan et al. 2018): each round every client
    takes part with probability ``sample_rate`` and the clipped sum gets Gaussian noise of
    std ``noise_multiplier`` times the clip norm.

    Parameters
    ----------
    noise_multiplier : float
        z (for adaptive clipping, the combined multiplier of update and count noise).
    sample_rate : float
        q, the probability that a client takes part in a round.
    rounds : int
        T, the number of rounds (0 gives 0).
    delta : float
    accountant : {"rdp", "prv", "gdp"}

    Returns
    -------
    float
    """
    acc = make_accountant(accountant)
    if rounds > 0:
        acc.history = [(noise_multiplier, sample_rate, rounds)]
    return spent_epsilon(acc, delta)


@functools.lru_cache(maxsize=256)
def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier whose epsilon after ``steps`` steps is <= the target.

    Opacus's own calibration (:func:`opacus.accountants.utils.get_noise_multiplier`), with a
    tolerance of 1% of the target, so the reached epsilon is in ``[0.99, 1] * target``.

    Parameters
    ----------
    target_epsilon : float
    delta : float
    sample_rate : float
        Poisson sampling rate of one step.
    steps : int
        Number of steps (>= 1).
    accountant : {"rdp", "prv", "gdp"}

    Returns
    -------
    float
    """
    if steps < 1:
        raise ValueError(f"noise calibration needs at least one step, got {steps}")
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=0.01 * target_epsilon,
            **({"alphas": RDP_ORDERS} if accountant == "rdp" else {}),
        )
    )


def adaptive_update_noise(noise_multiplier: float, count_stddev: float) -> float:
    """Noise multiplier of the update when part of the budget goes to the clipped count.

    Andrew et al. 2021 (Theorem 1): releasing the clipped sum with noise multiplier z_u and
    the sum of centred bits ``b - 1/2`` (sensitivity 1/2) with noise std sigma_b is the
    Gaussian mechanism with ``z = (z_u^-2 + (2 sigma_b)^-2)^(-1/2)``; so for an accounted
    ``z`` the update needs ``z_u = (z^-2 - (2 sigma_b)^-2)^(-1/2)``.

    Raises
    ------
    ValueError
        If ``2 * count_stddev <= noise_multiplier`` (the count alone would spend the budget).
    """
    if noise_multiplier == 0:
        return 0.0
    if 2 * count_stddev <= noise_multiplier:
        raise ValueError(
            f"privacy.clipped_count_stddev must be > noise_multiplier / 2 = "
            f"{noise_multiplier / 2:.4g} for adaptive clipping, got {count_stddev!r}"
        )
    return (noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5
