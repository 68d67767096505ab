"""Exact reference computations for the masking threat model's bounds: integers and
fractions only, independent of privfed.secure.masking.security (shared by its tests)."""

from __future__ import annotations

import math
from fractions import Fraction

from privfed.secure.masking.security import ThreatModel


def tails(population: int, successes: int, draws: int) -> list[Fraction]:
    """``[P[X >= s] for s in 0..draws+1]``, X ~ Hypergeometric, exact."""
    den = math.comb(population, draws)
    pmf = [
        math.comb(successes, x) * math.comb(population - successes, draws - x)
        for x in range(draws + 1)
    ]
    out = [Fraction(0)] * (draws + 2)
    acc = 0
    for x in range(draws, -1, -1):
        acc += pmf[x]
        out[x] = Fraction(acc, den)
    return out


def window_bound(n: int, m: int, j: int) -> Fraction:
    """``n * C(m, j) / C(n, j)``: union bound on j consecutive removed positions."""
    return Fraction(n * math.comb(min(m, n), j), math.comb(n, j))


def exact_probabilities(n: int, k: int, t: int, model: ThreatModel) -> tuple[Fraction, Fraction]:
    """(P1 + P2, P3) of the module docstring, exactly."""
    n_c = math.floor(Fraction(repr(model.corrupt_fraction)) * n)
    n_d = math.floor(Fraction(repr(model.dropout_fraction)) * n)
    g = k + 1
    tc, td = tails(n - 1, n_c, k), tails(n - 1, n_d, k)
    p1 = n * tc[min(max(2 * t - g, 0), k + 1)]
    p2 = window_bound(n, n_c + n_d, k // 2)
    p3 = n * td[min(max(k - t + 1, 0), k + 1)]
    return p1 + p2, p3


def at_most_2_pow(p: Fraction, bits: int) -> bool:
    return p * 2**bits <= 1


def log2(p: Fraction) -> float:
    return -math.inf if p == 0 else math.log2(p.numerator) - math.log2(p.denominator)


def some_threshold_works(n: int, k: int, model: ThreatModel) -> bool:
    n_c = math.floor(Fraction(repr(model.corrupt_fraction)) * n)
    n_d = math.floor(Fraction(repr(model.dropout_fraction)) * n)
    tc, td = tails(n - 1, n_c, k), tails(n - 1, n_d, k)
    p2 = window_bound(n, n_c + n_d, k // 2)
    g = k + 1
    for t in range(2, g + 1):
        private = at_most_2_pow(n * tc[max(2 * t - g, 0)] + p2, model.security_bits)
        correct = at_most_2_pow(n * td[k - t + 1], model.correctness_bits)
        if private and correct:
            return True
    return False
