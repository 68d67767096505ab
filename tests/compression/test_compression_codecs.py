"""Codecs: unbiasedness, exact round trips, payload sizes and malformed payloads."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.compression import (
    MalformedPayloadError,
    RandomK,
    StochasticQuantizer,
    TopK,
)
from privfed.compression.quantize import pack_bits, unpack_bits


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_pack_bits_round_trip(bits):
    codes = np.random.default_rng(bits).integers(0, 1 << bits, size=37, dtype=np.uint8)
    data = pack_bits(codes, bits)
    assert len(data) == -(-37 * bits // 8)
    np.testing.assert_array_equal(unpack_bits(data, 37, bits), codes)


@pytest.mark.parametrize(("bits", "block"), [(1, None), (2, 16), (4, None), (8, 7)])
def test_quantizer_is_unbiased_with_error_falling_as_one_over_sqrt_draws(bits, block):
    rng = np.random.default_rng(0)
    x = rng.normal(size=200).astype(np.float32)
    q = StochasticQuantizer(bits, block)
    draws = np.stack([q.decode(q.encode(x, rng), x.size) for _ in range(1600)])
    # Each decoded coordinate is x plus zero-mean noise of std <= spacing / 2.
    spacing = 2 * np.abs(x).max() / (2**bits - 1)
    for n in (100, 1600):
        err = draws[:n].mean(axis=0) - x
        rms = np.sqrt(np.mean(err**2))
        assert rms < 1.3 * (spacing / 2) / np.sqrt(n)  # bound holds for the RMS over 200 coords
    # 16x the draws: the error shrinks by about 4 (1/sqrt(draws)), not stuck at a bias.
    ratio = np.sqrt(np.mean((draws[:100].mean(0) - x) ** 2) / np.mean((draws.mean(0) - x) ** 2))
    assert 2.5 < ratio < 6.5


def test_quantizer_levels_and_extremes():
    q = StochasticQuantizer(2)
    x = np.array([-3.0, -1.0, 1.0, 3.0, 0.0], dtype=np.float32)
    y = q.decode(q.encode(x, np.random.default_rng(0)), 5)
    # Levels are -3, -1, 1, 3: the first four are exact, 0 lies midway between -1 and 1.
    np.testing.assert_allclose(y[:4], x[:4], rtol=1e-12)
    assert np.isclose(abs(y[4]), 1.0, rtol=1e-12)
    zeros = np.zeros(10, dtype=np.float32)
    np.testing.assert_array_equal(q.decode(q.encode(zeros, np.random.default_rng(0)), 10), zeros)


def test_quantizer_block_scales_bound_each_block():
    q = StochasticQuantizer(8, block_size=4)
    x = np.array([100, -50, 1, 2, 1e-3, -2e-3, 0, 1e-3], dtype=np.float32)
    y = q.decode(q.encode(x, np.random.default_rng(1)), 8)
    # The second block has scale 2e-3: its error is below one level spacing of that scale.
    assert np.abs(y[4:] - x[4:]).max() <= 2 * 2e-3 / 255 + 1e-9
    assert np.abs(y[:4] - x[:4]).max() <= 2 * 100 / 255 + 1e-6


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantizer_payload_is_bits_per_coordinate_plus_scales(bits):
    dim = 1000
    q = StochasticQuantizer(bits, block_size=100)
    data = q.encode(np.ones(dim, dtype=np.float32), np.random.default_rng(0))
    assert len(data) == q.payload_size(dim) == 4 * 10 + dim * bits // 8


def test_quantizer_rejects_bad_bits_and_malformed_payloads():
    with pytest.raises(ValueError, match=r"compression\.bits must be one of \[1, 2, 4, 8\]"):
        StochasticQuantizer(3)
    q = StochasticQuantizer(4)
    data = q.encode(np.ones(10, dtype=np.float32), np.random.default_rng(0))
    with pytest.raises(MalformedPayloadError, match="expected"):
        q.decode(data[:-1], 10)
    with pytest.raises(MalformedPayloadError, match="scale"):
        q.decode(np.float32(np.nan).tobytes() + data[4:], 10)


@pytest.mark.parametrize(("dim", "density"), [(100, 0.1), (1000, 0.5), (70_000, 0.01)])
def test_topk_keeps_the_largest_and_picks_the_smaller_index_encoding(dim, density):
    rng = np.random.default_rng(dim)
    x = rng.normal(size=dim).astype(np.float32)
    codec = TopK(density)
    data = codec.encode(x, rng)
    y = codec.decode(data, dim)
    k = int(np.ceil(density * dim))
    kept = np.flatnonzero(y)
    assert kept.size == k
    np.testing.assert_array_equal(y[kept], x[kept])
    assert np.abs(x[np.flatnonzero(y == 0)]).max() <= np.abs(x[kept]).min()
    index_bytes = min(-(-dim // 8), k * (2 if dim <= 65536 else 4))
    assert len(data) == 1 + index_bytes + 4 * k


def test_topk_rejects_corrupt_indices():
    codec = TopK(0.05)
    data = bytearray(codec.encode(np.arange(100, dtype=np.float32), np.random.default_rng(0)))
    data[1:3] = (500).to_bytes(2, "little")  # index past the end
    with pytest.raises(MalformedPayloadError, match="distinct indices"):
        codec.decode(bytes(data), 100)


def test_randomk_shares_indices_per_round_and_is_unbiased_when_rescaled():
    codec = RandomK(0.1, seed=7)
    assert np.array_equal(codec.indices(500, 3), codec.indices(500, 3))
    assert not np.array_equal(codec.indices(500, 3), codec.indices(500, 4))
    x = np.random.default_rng(0).normal(size=50).astype(np.float32)
    rng = np.random.default_rng(0)
    decoded = [codec.decode(codec.encode(x, rng, round_id=r), 50, round_id=r) for r in range(4000)]
    # Per coordinate: mean of 4000 draws of (d/k) x_i Bernoulli(k/d), std |x_i| sqrt(d/k - 1).
    err = np.mean(decoded, axis=0) - x
    assert np.all(np.abs(err) < 5 * np.abs(x) * 3 / np.sqrt(4000) + 1e-7)
    assert len(codec.encode(x, rng)) == 4 * 5


def test_randomk_without_rescale_is_a_projection():
    codec = RandomK(0.2, seed=1, rescale=False)
    x = np.random.default_rng(2).normal(size=40).astype(np.float32)
    y = codec.decode(codec.encode(x, np.random.default_rng(0), round_id=9), 40, round_id=9)
    idx = codec.indices(40, 9)
    np.testing.assert_array_equal(y[idx], x[idx])
    assert np.count_nonzero(y) == 8


@pytest.mark.parametrize("density", [0.0, 1.5, -0.1])
def test_sparsifiers_reject_density_outside_unit_interval(density):
    with pytest.raises(ValueError, match=r"compression\.density must be in \(0, 1\]"):
        TopK(density)
    with pytest.raises(ValueError, match=r"compression\.density"):
        RandomK(density, seed=0)


def test_a_block_larger_than_the_vector_is_the_whole_vector():
    from privfed.compression.quantize import StochasticQuantizer

    vector = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    huge, whole = StochasticQuantizer(8, 2**63 - 1), StochasticQuantizer(8, None)
    assert huge.encode(vector, np.random.default_rng(1)) == \
        whole.encode(vector, np.random.default_rng(1))
    assert huge.payload_size(1000) == whole.payload_size(1000) == 4 + 1000
