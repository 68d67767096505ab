"""Threshold t and SecAgg+ degree k derived from the threat model (privfed.secure.masking.security).

Probabilities are re-derived with exact integer arithmetic (math.comb, Fraction: masking_exact);
the Monte-Carlo over random corrupt/dropped sets on the protocol's own graph is in
test_masking_security_montecarlo.py.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest

from privfed.secure.errors import InvalidInputError
from privfed.secure.masking import (
    FULL_GRAPH_MAX_COHORT,
    MaskingParams,
    default_neighbourhood,
)
from privfed.secure.masking.security import (
    ThreatModel,
    min_threshold,
    round_parameters,
)
from tests.secure.masking_exact import (
    at_most_2_pow,
    exact_probabilities,
    log2,
    some_threshold_works,
)

DEFAULT = ThreatModel()



# --------------------------------------------------------------------------------------------
# Complete graph


def test_min_threshold_matches_share_counting():
    # Brute force: c corrupt members give both shares; each of the g - c honest ones gives one
    # of the two. The adversary wins iff some split reaches t shares of both seeds.
    for g in range(1, 40):
        for c in range(g):
            safe = [
                t
                for t in range(1, g + 2)
                if all(min(c + x, c + (g - c - x)) < t for x in range(g - c + 1))
            ]
            assert min_threshold(g, c) == min(safe)


@pytest.mark.parametrize(("n", "expected_t"), [(2, 2), (3, 3), (10, 7), (100, 67)])
def test_complete_graph_default_thresholds(n, expected_t):
    for degree in (None, "full", n - 1, n + 4 - n % 2):
        if isinstance(degree, int) and degree % 2:
            continue
        r = round_parameters(n, DEFAULT, degree=degree)
        assert (r.cohort_size, r.degree, r.threshold) == (n, n - 1, expected_t)
        assert r.complete and r.group_size == n and r.neighbourhood == "full"
        assert r.privacy_log2 == -math.inf and r.correctness_log2 == -math.inf
    n_c = n_d = n // 10  # floor(0.1 n)
    assert 2 * expected_t > n + n_c
    assert expected_t <= n - n_d


def test_complete_graph_matches_closed_form():
    models = [
        DEFAULT,
        ThreatModel(0.0, 0.0),
        ThreatModel(0.3, 0.05),
        ThreatModel(0.2, 0.3),
        ThreatModel(0.45, 0.0),
    ]
    for model in models:
        for n in range(2, 300):
            n_c = math.floor(Fraction(repr(model.corrupt_fraction)) * n)
            n_d = math.floor(Fraction(repr(model.dropout_fraction)) * n)
            feasible = [t for t in range(2, n + 1) if 2 * t > n + n_c and t <= n - n_d]
            if not feasible:
                with pytest.raises(InvalidInputError, match="corrupt_fraction") as err:
                    round_parameters(n, model)
                assert "dropout_fraction" in str(err.value) and f"n={n}" in str(err.value)
                continue
            t = round_parameters(n, model).threshold
            assert t in feasible
            assert t == min(max(2 * n // 3 + 1, feasible[0]), feasible[-1])


def test_complete_graph_drops_to_n_minus_nd_when_still_private():
    # n = 100, 30 corrupt, 20 dropped: 2n/3 + 1 = 67 is not correct, 80 is; t in 66..80.
    r = round_parameters(100, ThreatModel(0.3, 0.2))
    assert r.threshold == 67
    # 40 dropped: correctness needs t <= 60, privacy t >= 66: nothing works.
    with pytest.raises(InvalidInputError, match="cohort_size n=100"):
        round_parameters(100, ThreatModel(0.3, 0.4))
    # 35 dropped: t <= 65 < 67 but privacy needs t >= 66 -> still infeasible
    with pytest.raises(InvalidInputError, match="t <= n - nD = 65"):
        round_parameters(100, ThreatModel(0.3, 0.35))
    # 34 dropped: 2n/3 + 1 = 67 > n - nD = 66, and 66 is still private: lowered to 66
    assert round_parameters(100, ThreatModel(0.3, 0.34)).threshold == 66


@pytest.mark.parametrize("n", [4, 10, 11, 100, 1000])
def test_explicit_threshold_below_privacy_minimum_is_refused(n):
    n_c = math.floor(Fraction(1, 10) * n)
    lowest = (n + n_c) // 2 + 1
    for bad in range(max(2, lowest - 3), lowest):
        with pytest.raises(InvalidInputError, match=rf"threshold={bad}\b") as err:
            round_parameters(n, DEFAULT, threshold=bad)
        assert str(lowest) in str(err.value) and "both shares" in str(err.value)
    if lowest <= n - math.floor(Fraction(1, 10) * n):
        assert round_parameters(n, DEFAULT, threshold=lowest).threshold == lowest


def test_explicit_threshold_out_of_range():
    with pytest.raises(InvalidInputError, match="threshold=91") as err:
        round_parameters(100, DEFAULT, threshold=91)  # n - nD = 90
    assert "dropout_fraction" in str(err.value)
    assert round_parameters(100, DEFAULT, threshold=90).threshold == 90
    for bad in (1, 0, -5, 101):
        with pytest.raises(InvalidInputError, match="threshold"):
            round_parameters(100, DEFAULT, threshold=bad)
    with pytest.raises(InvalidInputError, match="threshold"):
        round_parameters(100, DEFAULT, threshold=60.0)


def test_min_clients_raises_the_threshold():
    assert round_parameters(10, DEFAULT, min_clients=9).threshold == 9
    # min_clients is a privacy floor: above n - nD = 9 it wins, fewer dropouts are tolerated.
    assert round_parameters(10, DEFAULT, min_clients=10).threshold == 10
    assert round_parameters(3, ThreatModel(0, 0), min_clients=50).threshold == 3
    r = round_parameters(1000, DEFAULT, degree="secagg+", min_clients=90)
    assert r.threshold >= 90 and not r.complete
    exact_priv, exact_corr = exact_probabilities(1000, r.degree, r.threshold, DEFAULT)
    assert at_most_2_pow(exact_priv, 40) and at_most_2_pow(exact_corr, 20)
    with pytest.raises(InvalidInputError, match="min_clients"):
        round_parameters(100, DEFAULT, min_clients=1)


# --------------------------------------------------------------------------------------------
# SecAgg+ degree


@pytest.mark.parametrize("n", [10, 11, 50, 100, 1000])
def test_degree_two_threshold_two_is_refused(n):
    with pytest.raises(InvalidInputError) as err:
        round_parameters(n, DEFAULT, degree=2, threshold=2)
    msg = str(err.value)
    for word in (
        "neighbourhood",
        "degree",
        "threshold=2",
        "corrupt_fraction",
        "dropout_fraction",
        "security_bits",
        "log2",
    ):
        assert word in msg
    with pytest.raises(InvalidInputError, match="degree"):
        round_parameters(n, DEFAULT, degree=2)


def test_degree_two_refused_at_n4_once_a_client_is_corrupt():
    with pytest.raises(InvalidInputError, match="log2 P"):
        round_parameters(4, ThreatModel(corrupt_fraction=0.25), degree=2, threshold=2)


@pytest.mark.parametrize("n", [100, 1000, 10000])
def test_secagg_plus_defaults_meet_the_bounds_exactly(n):
    r = round_parameters(n, DEFAULT, degree="secagg+")
    k, t = r.degree, r.threshold
    assert k < n - 1 and k % 2 == 0 and not r.complete and r.neighbourhood == k
    assert min_threshold(k + 1, 0) <= t <= k
    priv, corr = exact_probabilities(n, k, t, DEFAULT)
    assert at_most_2_pow(priv, 40) and at_most_2_pow(corr, 20)
    assert r.privacy_log2 == pytest.approx(log2(priv), abs=1e-6)
    assert r.correctness_log2 == pytest.approx(log2(corr), abs=1e-6)
    # t is the smallest private threshold, k the smallest workable degree
    assert not at_most_2_pow(exact_probabilities(n, k, t - 1, DEFAULT)[0], 40)
    for smaller in range(2, k, 2):
        assert not some_threshold_works(n, smaller, DEFAULT), smaller
    # an explicit degree / threshold equal to the derived ones is accepted unchanged
    assert round_parameters(n, DEFAULT, degree=k) == r
    assert round_parameters(n, DEFAULT, degree=k, threshold=t) == r
    with pytest.raises(InvalidInputError, match=f"threshold={t - 1}"):
        round_parameters(n, DEFAULT, degree=k, threshold=t - 1)


@pytest.mark.parametrize(
    "model",
    [
        DEFAULT,
        ThreatModel(0.2, 0.1, 20, 10),
        ThreatModel(0.05, 0.3, 30, 15),
        ThreatModel(0.3, 0.05, 10, 10),
        ThreatModel(0.0, 0.2, 3, 3),
        ThreatModel(0.3, 0.2),  # complete graph at n = 12 and 30
    ],
)
def test_secagg_plus_search_matches_an_exact_scan(model):
    for n in (12, 30, 64, 101, 150):
        expected = next((k for k in range(2, n - 1, 2) if some_threshold_works(n, k, model)), None)
        r = round_parameters(n, model, degree="secagg+")
        if expected is None:
            assert r.complete
            continue
        assert r.degree == expected
        priv, corr = exact_probabilities(n, r.degree, r.threshold, model)
        assert at_most_2_pow(priv, model.security_bits)
        assert at_most_2_pow(corr, model.correctness_bits)
        below = exact_probabilities(n, r.degree, r.threshold - 1, model)[0]
        assert not at_most_2_pow(below, model.security_bits)


def test_secagg_plus_falls_back_to_the_complete_graph():
    for n in (2, 3):
        assert round_parameters(n, DEFAULT, degree="secagg+").complete
    # 40% corrupt, 0 dropped: no sparse k at n = 20, the complete graph works (t = 15)
    r = round_parameters(20, ThreatModel(0.45, 0.0), degree="secagg+")
    assert r.complete and r.threshold == round_parameters(20, ThreatModel(0.45, 0.0)).threshold
    with pytest.raises(InvalidInputError, match="cohort_size n=100"):
        round_parameters(100, ThreatModel(0.3, 0.4), degree="secagg+")


def test_larger_security_parameter_never_gives_a_smaller_degree():
    for n in (200, 1000, 10000):
        for eta in (10, 20, 40):
            ks = [
                round_parameters(n, ThreatModel(0.1, 0.1, s, eta), degree="secagg+").degree
                for s in range(5, 121, 5)
            ]
            assert ks == sorted(ks), (n, eta, ks)
        ks = [
            round_parameters(n, ThreatModel(0.1, 0.1, 40, e), degree="secagg+").degree
            for e in range(5, 61, 5)
        ]
        assert ks == sorted(ks), (n, ks)


def test_fast_for_ten_thousand_clients():
    best = math.inf
    for extra in (0, 1, 2):  # distinct models: nothing cached
        model = ThreatModel(0.1, 0.1, 40 + extra, 23)
        start = time.perf_counter()
        r = round_parameters(10000, model, degree="secagg+")
        best = min(best, time.perf_counter() - start)
        assert not r.complete
    assert best < 0.05


# --------------------------------------------------------------------------------------------
# The default graph: complete up to FULL_GRAPH_MAX_COHORT clients, SecAgg+ above


@pytest.mark.parametrize("n", [2, 10, 100, FULL_GRAPH_MAX_COHORT])
def test_default_graph_is_complete_up_to_the_cutoff(n):
    assert MaskingParams().neighbourhood == "auto"
    assert default_neighbourhood(n) == "full"
    plan = MaskingParams(cohort_size=n).planned()
    assert plan.complete and plan == round_parameters(n, DEFAULT)


@pytest.mark.parametrize("n", [FULL_GRAPH_MAX_COHORT + 1, 500, 2000])
def test_default_graph_above_the_cutoff_is_secagg_plus_within_the_bounds(n):
    assert default_neighbourhood(n) == "secagg+"
    plan = MaskingParams(cohort_size=n).planned()
    assert not plan.complete and plan == round_parameters(n, DEFAULT, degree="secagg+")
    priv, corr = exact_probabilities(n, plan.degree, plan.threshold, DEFAULT)
    assert at_most_2_pow(priv, DEFAULT.security_bits)
    assert at_most_2_pow(corr, DEFAULT.correctness_bits)


def test_default_graph_is_chosen_for_the_planned_cohort():
    """min_clients raises the planned cohort; more adverts than planned never switch the
    graph (a server cannot choose it by showing more clients)."""
    cutoff = FULL_GRAPH_MAX_COHORT
    assert MaskingParams(cohort_size=cutoff - 50, min_clients=cutoff + 50).graph == "secagg+"
    assert MaskingParams(cohort_size=cutoff).for_view(cutoff + 50).complete
    assert not MaskingParams(cohort_size=cutoff + 1).for_view(cutoff + 50).complete
    with pytest.raises(InvalidInputError, match="neighbourhood='auto' needs"):
        _ = MaskingParams().graph
