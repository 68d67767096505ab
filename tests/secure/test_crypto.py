"""Building blocks: Shamir chunking, PRG, AEAD, fixed-point ring."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privfed.secure import AuthenticationError
from privfed.secure.masking.crypto import MaskSum, open_share, prg, seal_share
from privfed.secure.masking.quantize import Ring
from privfed.secure.masking.shamir import combine_secret, split_secret


def test_shamir_32_byte_secret_in_16_byte_chunks():
    secret = os.urandom(32)
    shares = split_secret(secret, 3, 5)
    assert all(len(s) == 32 for s in shares)
    assert combine_secret({2: shares[1], 4: shares[3], 5: shares[4]}, 3) == secret
    # Two shares of a 3-of-5 sharing interpolate a different (degree-1) polynomial.
    assert combine_secret({1: shares[0], 2: shares[1]}, 2) != secret


def test_prg_is_deterministic_per_key():
    key = os.urandom(32)
    a, b = prg(key, 1000, np.uint32), prg(key, 1000, np.uint32)
    np.testing.assert_array_equal(a, b)
    assert (a != prg(os.urandom(32), 1000, np.uint32)).mean() > 0.99


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_mask_sum_equals_the_signed_sum_of_prg_streams(dtype):
    """One reused keystream buffer gives the ring sum of the separate streams, wrapping."""
    keys = [os.urandom(32) for _ in range(5)]
    signs = [1, -1, -1, 1, -1]
    acc = np.arange(1001).astype(dtype)
    expected = acc.copy()
    for key, sign in zip(keys, signs, strict=True):
        stream = prg(key, acc.size, dtype)
        expected = expected + stream if sign > 0 else expected - stream
    masks = MaskSum(acc)
    for key, sign in zip(keys, signs, strict=True):
        masks.add(key, sign)
    np.testing.assert_array_equal(acc, expected)
    for key, sign in zip(keys, signs, strict=True):
        masks.add(key, -sign)
    np.testing.assert_array_equal(acc, np.arange(1001).astype(dtype))


def test_aead_binds_associated_data():
    key = os.urandom(32)
    blob = seal_share(key, b"share", b"round 1")
    assert open_share(key, blob, b"round 1", "x") == b"share"
    with pytest.raises(AuthenticationError, match="share from x failed authentication"):
        open_share(key, blob, b"round 2", "x")


def test_stochastic_rounding_is_unbiased_and_within_one_step():
    ring = Ring(16, 1.0, 2)
    z = np.full(200_000, 0.3 * ring.step + 0.5)
    decoded = ring.dequantize(ring.quantize(z))
    assert np.abs(decoded - z).max() < ring.step
    # Mean of 2e5 coin flips: sd <= step * sqrt(0.25 / 2e5); allow 6 sd.
    assert abs(decoded.mean() - z[0]) < 6 * ring.step * np.sqrt(0.25 / 200_000)
    negative = ring.dequantize(ring.quantize(np.array([-0.75])))[0]
    assert negative == pytest.approx(-0.75, abs=ring.step)
