"""Exact Poisson sampling from a stream of uniforms (the samplers of ``ChaChaRandom``).

* ``lam < 10``: inversion by table look-up of the CDF (Devroye 1986, X.3);
* ``lam >= 10``: PTRS, transformed rejection with squeeze (Hörmann 1993), the algorithm
  numpy uses, vectorised, with the acceptance test on log-probabilities computed by Loader's
  (2000) saddle-point form so that it stays exact up to ``lam = 1e12`` and beyond.

Each function takes ``uniform``, a callable ``n -> n`` float64 uniforms in [0, 1), so the
randomness is the caller's (a cryptographically secure one in privfed).

References
----------
L. Devroye, *Non-Uniform Random Variate Generation*, Springer, 1986.
W. Hörmann, "The transformed rejection method for generating Poisson random variables",
Insurance: Mathematics and Economics 12(1):39-45, 1993.
C. Loader, "Fast and accurate computation of binomial probabilities", 2000.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln

__all__ = ["PTRS_MIN_LAM", "poisson_inversion", "poisson_logpmf", "poisson_ptrs"]

Uniform = Callable[[int], npt.NDArray[np.float64]]
"""``n -> n`` float64 uniforms in [0, 1)."""

PTRS_MIN_LAM = 10.0
"""Below it inversion, from it PTRS."""

_CHUNK = 1 << 20  # PTRS candidates per round, bounds temporary memory
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _stirlerr(k: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``log(k!) - (k + 1/2) log k + k - log(2 pi) / 2`` for ``k >= 16`` (Stirling series).

    The five terms leave a truncation error below 1e-16 for ``k >= 16`` (Loader 2000).
    """
    k2 = k * k
    return (
        1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * k2)) / k2) / k2) / k2
    ) / k


def _bd0(k: npt.NDArray[np.float64], d: npt.NDArray[np.float64], lam: float) -> np.ndarray:
    """Deviance ``k log(k / lam) + lam - k`` without cancellation (Loader 2000).

    ``d = k - lam`` is passed in, computed exactly by the caller. Near ``lam`` the series
    ``d v + 2 k sum_j v^(2j+1) / (2j+1)``, ``v = d / (k + lam)``, is summed instead.
    """
    out = np.empty_like(k)
    near = np.abs(d) < 0.1 * (k + lam)
    far = ~near
    kf = k[far]
    out[far] = kf * np.log(kf / lam) - d[far]
    kn, dn = k[near], d[near]
    v = dn / (kn + lam)
    s = dn * v
    ej = 2.0 * kn * v
    v2 = v * v
    for j in range(1, 40):  # |v| < 0.1: converges to 1 ulp in at most ~9 terms
        ej *= v2
        term = ej / (2 * j + 1)
        s += term
        if not np.any(np.abs(term) > 1e-17 * np.abs(s)):
            break
    out[near] = s
    return out


def poisson_logpmf(
    k: npt.NDArray[np.float64], d: npt.NDArray[np.float64], lam: float
) -> npt.NDArray[np.float64]:
    """``log(exp(-lam) lam^k / k!)`` for integer-valued ``k >= 0`` and ``lam > 0``.

    ``d = k - lam`` must be accurate (the caller computes it from small numbers). For
    ``k >= 16`` the saddle-point form ``-stirlerr(k) - bd0(k, lam) - log(2 pi k) / 2``
    (Loader 2000) keeps full relative precision for ``lam`` up to 1e15, where the naive
    ``-lam + k log(lam) - lgamma(k + 1)`` loses ~1e-2 to cancellation at ``lam = 1e12``.
    """
    out = np.empty_like(k)
    small = k < 16
    ks = k[small]
    out[small] = -lam + ks * math.log(lam) - gammaln(ks + 1.0)
    big = ~small
    kb = k[big]
    out[big] = -_stirlerr(kb) - _bd0(kb, d[big], lam) - _HALF_LOG_TWO_PI - 0.5 * np.log(kb)
    return out


def poisson_inversion(lam: float, n: int, uniform: Uniform) -> npt.NDArray[np.int64]:
    """Poisson(lam) variates for ``lam < 10`` by inversion of the tabulated CDF (Devroye
    1986, X.3); a uniform beyond the table (the ~1e-16 rounding gap of F) is redrawn."""
    kmax = int(lam + 20.0 * math.sqrt(lam) + 40.0)
    k = np.arange(kmax + 1, dtype=np.float64)
    cdf = np.cumsum(np.exp(-lam + k * math.log(lam) - gammaln(k + 1.0)))
    out = np.searchsorted(cdf, uniform(n), side="right").astype(np.int64)
    bad = np.flatnonzero(out > kmax)
    while bad.size:  # u >= F(kmax): only inside the float rounding gap of F
        out[bad] = np.searchsorted(cdf, uniform(bad.size), side="right")
        bad = bad[out[bad] > kmax]
    return out

def poisson_ptrs(lam: float, n: int, uniform: Uniform) -> npt.NDArray[np.int64]:
    """Poisson(lam) variates for ``lam >= 10`` by Hörmann's (1993) PTRS, with numpy's
    constants (distributions.c), vectorised: candidates for every pending output at once,
    only the rejected ones redrawn."""
    base = math.floor(lam)
    frac = lam - base  # candidates are k = base + offset, offset from small numbers
    slam = math.sqrt(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_invalpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2.0)
    kmax = float(2**53)  # p(k) underflows long before; keeps k exact in float64
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        need = n - filled
        m = min(need + need // 8 + 64, _CHUNK)
        u = uniform(2 * m)
        big_u = u[:m]
        big_u -= 0.5
        v = u[m:]
        us = 0.5 - np.abs(big_u)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            offset = np.floor((2.0 * a / us + b) * big_u + (frac + 0.43))
        ok = (us > 0.0) & (offset >= -base) & (offset <= kmax - base)
        accept = ok & (us >= 0.07) & (v <= vr)  # squeeze: inside the hat for sure
        test = np.flatnonzero(ok & ~accept & ~((us < 0.013) & (v > us)))
        if test.size:
            off_t, us_t = offset[test], us[test]
            with np.errstate(divide="ignore"):  # log(0) = -inf: accepted, as in numpy
                lhs = np.log(v[test]) + log_invalpha - np.log(a / (us_t * us_t) + b)
            rhs = poisson_logpmf(base + off_t, off_t - frac, lam)
            accept[test] = lhs <= rhs
        idx = np.flatnonzero(accept)[:need]
        out[filled : filled + idx.size] = base + offset[idx].astype(np.int64)
        filled += idx.size
    return out
