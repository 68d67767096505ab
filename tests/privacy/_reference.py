"""Independent references for privfed's epsilons.

* :func:`pld_epsilon`: Google's dp-accounting PLD accountant, built here from its own
  ``DpEvent``s at its default (finest) discretisation, not through privfed's code.
* :func:`wor_rdp_epsilon`: dp-accounting's RDP accountant on its own
  ``SampledWithoutReplacementDpEvent`` (REPLACE_ONE; Wang, Balle & Kasiviswanathan 2019),
  an upper bound (its PLD accountant does not take that event).
* :func:`wor_exact_delta`: the exact delta(eps) of one round of a fixed-size cohort under
  replace-one, from the dataset pair that attains it (closed form).
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


def wor_rdp_epsilon(noise: float, cohort: int, clients: int, count: int, delta: float) -> float:
    """Epsilon of ``count`` rounds of the Gaussian of noise multiplier ``noise`` (relative
    to the replace-one sensitivity) on ``cohort`` of ``clients`` sampled without
    replacement, by dp-accounting's RDP accountant (REPLACE_ONE)."""
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        clients, cohort, dp_accounting.GaussianDpEvent(noise)), count)
    accountant = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    return accountant.compose(event).get_epsilon(delta)


def wor_exact_delta(z: float, rate: float, eps: float) -> float:
    """Exact delta(eps) of one round of a cohort of ``rate * K`` clients drawn without
    replacement, clipped updates (S = 1) summed with N(0, z^2) noise, replace-one.

    The pair ``P = (1 - q) N(0, z^2) + q N(2, z^2)``, ``Q = N(0, z^2)`` (one dimension) is
    attained: the replaced client sends +1 in D and -1 in D', every other client -1; so D
    gives ``-m + 2`` when the client is sampled (probability q) and ``-m`` otherwise, and D'
    always ``-m``. Its likelihood ratio ``(1 - q) + q exp(2 (x - 1) / z^2)`` is increasing,
    so both hockey-stick divergences have closed forms; delta is the larger.
    """
    q, e = rate, math.exp(eps)
    cut = 1 + z**2 / 2 * math.log((e - 1 + q) / q)  # P/Q > e^eps right of it
    forward = (1 - q) * norm.sf(cut / z) + q * norm.sf((cut - 2) / z) - e * norm.sf(cut / z)
    backward = 0.0
    if 1 / e > 1 - q:  # Q/P > e^eps left of cut2
        cut2 = 1 + z**2 / 2 * math.log((1 / e - 1 + q) / q)
        backward = norm.cdf(cut2 / z) - e * ((1 - q) * norm.cdf(cut2 / z)
                                             + q * norm.cdf((cut2 - 2) / z))
    return max(forward, backward)
