"""Independent references for privfed's epsilons.

* :func:`pld_epsilon`: Google's dp-accounting PLD accountant, built here from its own
  ``DpEvent``s at its default (finest) discretisation, not through privfed's code.
* :func:`exact_gaussian_epsilon`: the exact epsilon of T compositions of the Gaussian
  mechanism without subsampling (Balle & Wang 2018, Theorem 8: the composition is the
  Gaussian mechanism with ``mu = sqrt(T) / z`` and
  ``delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)``), solved for eps.
"""

from __future__ import annotations

import math

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from scipy.optimize import brentq
from scipy.stats import norm


def pld_epsilon(noise: float, rate: float, count: int, delta: float,
                relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) -> float:
    """Epsilon of ``count`` Poisson-subsampled Gaussian releases by dp-accounting's PLD."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise)), count)
    accountant = pld_privacy_accountant.PLDAccountant(relation)
    return accountant.compose(event).get_epsilon(delta)


def exact_gaussian_epsilon(noise: float, count: int, delta: float) -> float:
    """Exact epsilon of ``count`` Gaussian releases with noise multiplier ``noise``."""
    mu = math.sqrt(count) / noise

    def excess(eps: float) -> float:
        second = math.exp(eps + norm.logcdf(-eps / mu - mu / 2))
        return norm.cdf(-eps / mu + mu / 2) - second - delta

    if excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 2
    return brentq(excess, 0.0, high, xtol=1e-12)
