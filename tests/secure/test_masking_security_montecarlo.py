"""The masking graph's share privacy and correctness by Monte-Carlo over random corrupt and
dropped sets on the protocol's own graph, against the exact bounds (masking_exact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from privfed.secure.masking import neighbours
from privfed.secure.masking.security import ThreatModel, round_parameters
from tests.secure.masking_exact import tails, window_bound

DEFAULT = ThreatModel()


def adjacency(n: int, k: int, round_id: int) -> np.ndarray:
    graph = neighbours(range(n), round_id, k)
    a = np.zeros((n, n))
    for c, nbrs in graph.items():
        a[c, list(nbrs)] = 1.0
    assert (a == a.T).all() and (a.sum(axis=1) == k).all()
    return a


def random_subsets(rng: np.random.Generator, trials: int, n: int, size: int) -> np.ndarray:
    keys = rng.random((trials, n))
    out = np.zeros((trials, n), dtype=bool)
    np.put_along_axis(out, np.argsort(keys, axis=1)[:, :size], True, axis=1)
    return out


def disconnected(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per trial (row of ``keep``): is the subgraph of ``a`` on the kept nodes disconnected?

    All trials at once: one block-diagonal graph, one call to ``connected_components``.
    """
    trials, n = keep.shape
    i, j = np.nonzero(np.triu(a))
    offset = (np.arange(trials) * n)[:, None]
    both = keep[:, i] & keep[:, j]
    rows, cols = (offset + i)[both], (offset + j)[both]
    graph = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(trials * n, trials * n))
    labels = connected_components(graph, directed=False)[1].reshape(trials, n)
    first = labels[np.arange(trials), keep.argmax(axis=1)]
    return ((labels != first[:, None]) & keep).any(axis=1)


def test_disconnected_helper_matches_csgraph():
    rng = np.random.default_rng(5)
    a = adjacency(60, 4, round_id=1)
    keep = ~random_subsets(rng, 200, 60, 12)
    expected = [
        connected_components(csr_matrix(a[np.ix_(row, row)]), directed=False)[0] > 1 for row in keep
    ]
    assert (disconnected(a, keep) == np.array(expected)).all()
    assert 0 < np.mean(expected) < 1


def test_monte_carlo_share_privacy_and_correctness():
    n, trials = 200, 4000
    model = ThreatModel(0.1, 0.1, security_bits=3, correctness_bits=3)
    r = round_parameters(n, model, degree="secagg+")
    k, t, g = r.degree, r.threshold, r.group_size
    assert not r.complete
    n_c, n_d = 20, 20
    a = adjacency(n, k, round_id=7)
    rng = np.random.default_rng(20240607)
    corrupt = random_subsets(rng, trials, n, n_c)
    dropped = random_subsets(rng, trials, n, n_d)
    c_u = corrupt.astype(float) @ a  # corrupt neighbours of each client
    d_u = dropped.astype(float) @ a  # dropped neighbours of each client

    leaky = (c_u >= 2 * t - g) & ~corrupt  # honest clients whose shares could be rebuilt
    stuck = d_u >= k - t + 1  # clients with fewer than t surviving holders (besides self)
    cut = disconnected(a, ~(corrupt | dropped))

    # exact expectations of the counts (union-bound sums before bounding)
    p_c = tails(n - 1, n_c, k)[2 * t - g]
    exp_leaky = (n - n_c) * p_c
    exp_stuck = (n - n_d) * tails(n - 1, n_d, k)[k - t + 1] + n_d * tails(n - 1, n_d - 1, k)[
        k - t + 1
    ]
    for counts, expected in ((leaky.sum(axis=1), exp_leaky), (stuck.sum(axis=1), exp_stuck)):
        stderr = max(counts.std(), 0.5) / math.sqrt(trials)
        assert abs(counts.mean() - float(expected)) < 5 * stderr, (counts.mean(), expected)
        assert counts.mean() > 0  # the relaxed model makes failures frequent enough to see

    def below(rate: float, bound: float) -> bool:
        return rate <= bound + 4 * math.sqrt(bound * (1 - min(bound, 0.5)) / trials)

    privacy_rate = float((leaky.any(axis=1) | cut).mean())
    correctness_rate = float(stuck.any(axis=1).mean())
    assert below(privacy_rate, 2**r.privacy_log2)
    assert below(correctness_rate, 2**r.correctness_log2)
    assert privacy_rate > 0 and correctness_rate > 0


def test_monte_carlo_connectivity_bound():
    # 40 corrupt, no dropouts, k = 8: the window term P2 dominates and is large enough to see.
    n, k, trials, removed = 200, 8, 3000, 40
    model = ThreatModel(0.2, 0.0, security_bits=1, correctness_bits=1)
    r = round_parameters(n, model, degree=k, threshold=8)
    assert (r.degree, r.threshold) == (8, 8)
    p1 = n * tails(n - 1, removed, k)[2 * 8 - 9]
    p2_module = 2**r.privacy_log2 - float(p1)
    p2_exact = window_bound(n, removed, k // 2)
    assert p2_module == pytest.approx(float(p2_exact), rel=1e-9)

    rng = np.random.default_rng(99)
    gone = random_subsets(rng, trials, n, removed)
    # identity cyclic order: count windows of k/2 consecutive removed positions, and check
    # that a disconnection never happens without two of them (the argument of condition 2)
    ring = np.zeros((n, n))
    for d in range(1, k // 2 + 1):
        ring[np.arange(n), (np.arange(n) + d) % n] = ring[(np.arange(n) + d) % n, np.arange(n)] = 1
    windows = np.ones((trials, n), dtype=bool)
    for d in range(k // 2):
        windows &= np.roll(gone, -d, axis=1)
    count = windows.sum(axis=1)
    stderr = count.std() / math.sqrt(trials)
    assert abs(count.mean() - float(p2_exact)) < 5 * stderr  # |R| = m: the bound is exact here
    ring_cut = disconnected(ring, ~gone)
    assert ring_cut.any()
    assert (count[ring_cut] >= 2).all()
    # the protocol's own (hashed-order) graph: disconnection rate within the bound
    a = adjacency(n, k, round_id=3)
    cut = disconnected(a, ~gone)
    assert cut.mean() <= p2_module + 4 * math.sqrt(p2_module / trials)
    p = ring_cut.mean()
    assert cut.mean() == pytest.approx(p, abs=5 * math.sqrt(2 * p * (1 - p) / trials))
