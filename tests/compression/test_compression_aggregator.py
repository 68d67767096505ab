"""CompressedAggregator and SharedIndexAggregator: decoded means, bytes, error feedback."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.compression import (
    CompressedAggregator,
    RandomK,
    SharedIndexAggregator,
    StochasticQuantizer,
    TopK,
)
from privfed.secure import make_aggregator
from privfed.secure.wire import HEADER_SIZE

DIM = 40_000


def _round(seed=0, n=5):
    rng = np.random.default_rng(seed)
    vectors = {c: rng.normal(size=DIM).astype(np.float32) for c in range(n)}
    weights = {c: float(c + 1) for c in range(n)}
    return vectors, weights


def _mean(vectors, weights):
    total = sum(weights.values())
    return sum(weights[c] * vectors[c].astype(np.float64) for c in vectors) / total


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantised_bytes_fall_by_32_over_bits(bits):
    vectors, weights = _round()
    plain = make_aggregator("none").aggregate(1, vectors, weights)
    comp = CompressedAggregator(StochasticQuantizer(bits)).aggregate(1, vectors, weights)
    for c in vectors:  # header + one float32 scale + dim * bits / 8
        assert comp.bytes_up[c] == HEADER_SIZE + 4 + DIM * bits // 8
        assert plain.bytes_up[c] / comp.bytes_up[c] == pytest.approx(32 / bits, rel=0.01)
    # The mean's error: each coordinate's rounding noise has std <= spacing / 2 per client.
    spacing = max(2 * np.abs(v).max() / (2**bits - 1) for v in vectors.values())
    bound = spacing / 2 * np.sqrt(sum(w**2 for w in weights.values())) / sum(weights.values())
    assert np.sqrt(np.mean((comp.mean - plain.mean) ** 2)) < 1.2 * bound


@pytest.mark.parametrize("density", [0.01, 0.1])
def test_sparsified_bytes_fall_by_density_plus_index_cost(density):
    vectors, weights = _round()
    plain = make_aggregator("none").aggregate(1, vectors, weights)
    top = CompressedAggregator(TopK(density)).aggregate(1, vectors, weights)
    rand = CompressedAggregator(RandomK(density, seed=3)).aggregate(1, vectors, weights)
    k = int(np.ceil(density * DIM))
    for c in vectors:
        index_bytes = min(DIM // 8, 2 * k)  # uint16 indices or a bitmap
        assert top.bytes_up[c] == HEADER_SIZE + 1 + index_bytes + 4 * k
        assert rand.bytes_up[c] == HEADER_SIZE + 4 * k  # indices regenerated from the seed
        assert plain.bytes_up[c] / rand.bytes_up[c] == pytest.approx(1 / density, rel=0.05)


def test_lossless_settings_reproduce_the_plain_mean():
    vectors, weights = _round(1)
    plain = make_aggregator("none").aggregate(2, vectors, weights)
    for codec in (TopK(1.0), RandomK(1.0, seed=0)):
        res = CompressedAggregator(codec).aggregate(2, vectors, weights)
        np.testing.assert_allclose(res.mean, plain.mean, rtol=0, atol=1e-12)
        assert res.included == plain.included and res.total_weight == plain.total_weight


def test_dropouts_and_observed_messages():
    vectors, weights = _round(2)
    seen = []
    res = CompressedAggregator(StochasticQuantizer(4)).aggregate(
        3, vectors, weights, dropouts={"upload": [1]},
        on_server_message=lambda c, stage, data: seen.append((c, stage, len(data))),
    )
    assert res.included == (0, 2, 3, 4) and res.dropped == (1,)
    assert seen == [(c, "upload", res.bytes_up[c]) for c in (0, 2, 3, 4)]
    assert res.bytes_up[1] == 0
    assert set(res.seconds) == {"encode", "aggregate", "decode"}


def test_error_feedback_sends_what_was_dropped_later():
    # A constant update: with error feedback the running sum of what was sent tracks
    # t * x (the residual stays bounded); without it, small coordinates are never sent.
    # In steady state the 10 coordinates sent per round carry the inflow sum |x| = 75, so a
    # residual is sent once it reaches about 7.5 (plus at most one update, 1).
    x = (np.linspace(0.5, 1, 100) * np.tile([1, -1], 50)).astype(np.float32)
    ef = CompressedAggregator(TopK(0.1), error_feedback=True)
    no = CompressedAggregator(TopK(0.1))
    sent_ef, sent_no = np.zeros(100), np.zeros(100)
    for r in range(1, 41):
        sent_ef += ef.aggregate(r, {0: x}, {0: 1.0}).mean
        sent_no += no.aggregate(r, {0: x}, {0: 1.0}).mean
    residual = ef.feedback.residual(0)
    np.testing.assert_allclose(sent_ef + residual, 40 * x.astype(np.float64), atol=1e-9)
    assert np.abs(residual).max() < 7.5 + 1 + 1  # bounded: a coordinate is sent once it grows large
    assert np.count_nonzero(sent_ef) == 100 and np.count_nonzero(sent_no) == 10


def test_shared_random_k_through_masking_matches_the_restricted_sum():
    rng = np.random.default_rng(4)
    vectors = {c: rng.uniform(-1, 1, size=3000) for c in range(4)}
    weights = dict.fromkeys(range(4), 1.0)
    codec = RandomK(0.1, seed=5, rescale=False)
    masked = make_aggregator("masking")
    res = SharedIndexAggregator(masked, codec).aggregate(1, vectors, weights)
    idx = codec.indices(3000, 1)
    expected = np.zeros(3000)
    expected[idx] = _mean(vectors, weights)[idx]
    np.testing.assert_allclose(res.mean, expected, atol=1e-6)  # masking's fixed-point error
    full = make_aggregator("masking").aggregate(1, vectors, weights)
    assert sum(res.bytes_up.values()) < 0.2 * sum(full.bytes_up.values())
