"""Exact failure probabilities of a SecAgg+ graph, and the search for its smallest safe degree.

The graph, the three conditions and the argument for each are in
:mod:`privfed.secure.masking.security`, which calls this module; natural logs inside, log2
at the interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .security import ThreatModel

__all__ = ["LN2", "Found", "Graph", "fit_threshold", "log_disconnection", "log_tails",
           "smallest_degree"]

LN2 = math.log(2.0)
Found = tuple[int, int, float, float]
"""``(k, t, log2 privacy failure, log2 correctness failure)``."""


def log_tails(population: int, successes: int, draws: int) -> np.ndarray:
    """``a[s] = ln P[X >= s]``, ``s = 0 .. draws + 1``, ``X ~ Hypergeometric``.

    ``population`` objects, ``successes`` of them marked, ``draws`` drawn without replacement.
    Summed from the top in log space so tiny tails keep their relative precision.
    """
    from scipy.stats import hypergeom  # lazily: only SecAgg+ graphs need it

    logpmf = hypergeom.logpmf(np.arange(draws + 1), population, successes, draws)
    tails = np.logaddexp.accumulate(logpmf[::-1])[::-1]
    return np.append(np.minimum(tails, 0.0), -np.inf)


def log_comb(a: int, b: int) -> float:
    """``ln C(a, b)`` through ``lgamma``."""
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def log_disconnection(n: int, removed: int, k: int) -> float:
    """``ln(n * C(m, k/2) / C(n, k/2))``: some ``k/2`` consecutive positions all removed."""
    j = k // 2
    m = min(removed, n)
    if m < j:
        return -math.inf
    return math.log(n) + log_comb(m, j) - log_comb(n, j)


@dataclass(frozen=True)
class Graph:
    """Exact tails for one sparse degree ``k``."""

    n: int
    k: int
    log_p2: float
    corrupt_tails: np.ndarray  # ln P[C_u >= s]
    dropout_tails: np.ndarray  # ln P[D_u >= d]

    @classmethod
    def build(cls, n: int, k: int, n_corrupt: int, n_dropped: int, log_p2: float) -> Graph:
        return cls(n, k, log_p2, log_tails(n - 1, n_corrupt, k), log_tails(n - 1, n_dropped, k))

    def privacy_log2(self, t: int) -> float:
        """``log2(P1 + P2)`` at threshold ``t``."""
        s = min(max(2 * t - (self.k + 1), 0), self.k + 1)
        log_p1 = math.log(self.n) + float(self.corrupt_tails[s])
        return float(np.logaddexp(log_p1, self.log_p2)) / LN2

    def correctness_log2(self, t: int) -> float:
        """``log2(P3) = log2(n * P[D_u >= k - t + 1])`` at threshold ``t``."""
        d = min(max(self.k - t + 1, 0), self.k + 1)
        return (math.log(self.n) + float(self.dropout_tails[d])) / LN2

    def smallest_private_threshold(self, security_bits: int) -> int | None:
        """Smallest ``t`` in ``1 .. g`` with ``P1 + P2 <= 2**-security_bits`` (None if none)."""
        g = self.k + 1
        t = np.arange(1, g + 1)
        s = np.clip(2 * t - g, 0, g)
        log2_priv = np.logaddexp(math.log(self.n) + self.corrupt_tails[s], self.log_p2) / LN2
        ok = np.flatnonzero(log2_priv <= -security_bits)
        return int(t[ok[0]]) if ok.size else None


def fit_threshold(
    graph: Graph, model: ThreatModel, threshold: int | None, min_clients: int
) -> tuple[int | None, float, float]:
    """Threshold for ``graph`` (or None) and the log2 failure probabilities it reaches.

    ``threshold=None`` picks the smallest private ``t``, raised to ``min(min_clients, g)``;
    an explicit ``threshold`` is raised the same way and then checked.
    """
    g = graph.k + 1
    floor_t = min(min_clients, g)
    if threshold is None:
        private_t = graph.smallest_private_threshold(model.security_bits)
        if private_t is None:  # report the best privacy any t reaches (t = g)
            return None, graph.privacy_log2(g), graph.correctness_log2(g)
        t = max(private_t, floor_t)
    else:
        t = max(threshold, floor_t)
        if t > g:
            return None, graph.privacy_log2(g), graph.correctness_log2(g)
    privacy, correctness = graph.privacy_log2(t), graph.correctness_log2(t)
    ok = privacy <= -model.security_bits and correctness <= -model.correctness_bits
    return (t if ok else None), privacy, correctness


def _log_pmf(population: int, successes: int, draws: int, x: int) -> float:
    """``ln P[X = x]`` for ``X ~ Hypergeometric(population, successes, draws)`` (lgamma)."""
    if not max(0, draws - (population - successes)) <= x <= min(draws, successes):
        return -math.inf
    return (
        log_comb(successes, x)
        + log_comb(population - successes, draws - x)
        - log_comb(population, draws)
    )


def _pmf_cutoff(population: int, successes: int, draws: int, log_level: float) -> int:
    """Smallest ``x`` above the mode with ``ln P[X = x'] <= log_level`` for every ``x' >= x``.

    ``P[X >= x] >= max_{x' >= x} P[X = x']`` and the pmf is unimodal, so no ``x`` below the
    result has ``P[X >= x] <= exp(log_level)`` when ``exp(log_level) < P[X = mode]`` (always so
    for ``log_level <= ln(1 / (2n))``, as ``P[X = mode] >= 1 / (draws + 1) > 1 / n``).
    """
    lo = (draws + 1) * (successes + 1) // (population + 2)  # a mode
    hi = min(draws, successes) + 1  # pmf is 0 from here on
    while lo < hi:
        mid = (lo + hi) // 2
        if _log_pmf(population, successes, draws, mid) <= log_level:
            hi = mid
        else:
            lo = mid + 1
    return lo


def smallest_degree(
    n: int, model: ThreatModel, threshold: int | None, min_clients: int
) -> Found | None:
    """Smallest even ``k < n - 1`` (with its ``t``) meeting both bounds, or None.

    The even ``k`` are scanned upwards; cheap necessary conditions (each a rigorous
    implication, so no valid ``k`` is skipped or passed over) avoid computing the exact tails
    for most of them and let the scan jump over runs of ``k`` that certainly fail. The result
    is the same as evaluating every ``k`` (the tests compare it with an exact scan); about
    5 ms for ``n = 10 000`` with the default model.
    """
    n_corrupt, n_dropped = model.corrupt_clients(n), model.dropped_clients(n)
    # Necessary condition (prunes hopeless models without evaluating any tail): conditions
    # 1 and 3 need integers s = 2t - g and d = k - t + 1 (so s + 2d = k + 1) with
    # P[C_u >= s] <= 1/(2n) and P[D_u >= d] <= 1/(2n). For X in [0, k] with mean mu,
    # mu <= (s - 1) + (k - s + 1) P[X >= s], so P[X >= s] <= 1/(2n) forces
    # s >= mu + 1 - (k + 1)/(2n) > mu + 1/2; likewise d > mu_D + 1/2. Hence
    # k + 1 > k (nC + 2 nD) / (n - 1) + 3/2, impossible once nC + 2 nD >= n - 1.
    if n_corrupt + 2 * n_dropped >= n - 1:
        return None
    removed = n_corrupt + n_dropped
    # Lower bounds s_lb, d_lb on the tail quantiles s*(k) = min{s : n P[C_u >= s] <= 2^-sigma}
    # and d*(k) = min{d : n P[D_u >= d] <= 2^-eta}, which any valid t needs (2t - g >= s*,
    # k - t + 1 >= d*). Both quantiles grow with k (C_u, D_u grow stochastically with the
    # number of draws: draw k + 2, drop two), so a bound found at k holds for every larger k.
    # Sources: the pmf (P[X >= s] >= P[X = s'] for s' >= s), cheap, then the exact tails
    # whenever they are computed. The slack absorbs rounding (it only loosens the bounds).
    slack = 1e-9
    log_a = -model.security_bits * LN2 - math.log(n) + slack
    log_b = -model.correctness_bits * LN2 - math.log(n) + slack
    s_lb = d_lb = 0

    def gap(k: int) -> int:
        """How many steps of 2 past ``k`` certainly fail: the empty t-interval's shortfall.

        Valid ``t`` at ``k' = k + 2j`` needs ``ceil((k' + 1 + s_lb) / 2) <= k' + 1 - d_lb``,
        i.e. ``j >= gap(k)``.
        """
        return (k + 2 + s_lb) // 2 - (k + 1 - d_lb)

    k = 0
    while (k := k + 2) < n - 1:
        log_p2 = log_disconnection(n, removed, k)
        if log_p2 / LN2 > -model.security_bits:  # P2 alone too large; it falls with k
            continue
        # the mean condition above, per k, in integers: k + 1 > mu_C + 2 mu_D + 3/2
        if 2 * (k + 1) * (n - 1) <= 2 * k * (n_corrupt + 2 * n_dropped) + 3 * (n - 1):
            continue
        if gap(k) <= 0:
            s_lb = max(s_lb, _pmf_cutoff(n - 1, n_corrupt, k, log_a))
            d_lb = max(d_lb, _pmf_cutoff(n - 1, n_dropped, k, log_b))
        if gap(k) <= 0:
            graph = Graph.build(n, k, n_corrupt, n_dropped, log_p2)
            t, privacy, correctness = fit_threshold(graph, model, threshold, min_clients)
            if t is not None:
                return k, t, privacy, correctness
            s_lb = max(s_lb, int(np.argmax(graph.corrupt_tails <= log_a)))
            d_lb = max(d_lb, int(np.argmax(graph.dropout_tails <= log_b)))
        k += 2 * max(gap(k) - 1, 0)
    return None
