"""ChaChaRandom: keystream conventions and distributions against scipy / numpy.

Every statistical test uses a fixed key (reproducible stream) and fails only below a
p-value of ``ALPHA`` (or beyond 6 standard errors), so a correct sampler fails with
probability ~1e-5 per check while real bugs give p-values many orders smaller.
"""

from __future__ import annotations

import copy
import math
import os
import pickle

import mpmath
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

from privfed.privacy import csprng, poisson
from privfed.privacy.csprng import ChaChaRandom

ALPHA = 1e-5
N = 200_000

# RFC 8439, Appendix A.1, test vector #1: all-zero key and nonce, block counter 0.
RFC8439_ZERO_KEY_BLOCK0 = bytes.fromhex(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
)


def _key(tag: int) -> bytes:
    return bytes((tag + i) % 256 for i in range(32))


def _chacha(key: bytes, n: int) -> bytes:
    """The first ``n`` bytes of the ChaCha20 keystream of ``key``, counter 0, zero nonce."""
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(n))


def _binned_pvalue(x: np.ndarray, dist, edges: np.ndarray) -> float:
    """Chi-square p-value of integer samples ``x`` against a frozen scipy distribution.

    Bins are ``(-inf, e_1], (e_1, e_2], ..., (e_m, inf)``; neighbouring bins are merged
    until each expects at least 5 samples.
    """
    edges = np.unique(np.asarray(edges, dtype=np.int64))
    cdf = dist.cdf(edges)
    probs = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    expected = probs * x.size
    merged, acc = [], 0.0
    for i, e in enumerate(expected[:-1]):  # keep right edge i when the bin is full
        acc += e
        if acc >= 5:
            merged.append(i)
            acc = 0.0
    if acc + expected[-1] < 5:
        merged.pop()  # fold the thin right tail into the previous bin
    keep = edges[merged]
    cdf = dist.cdf(keep)
    exp = np.diff(np.concatenate(([0.0], cdf, [1.0]))) * x.size
    obs = np.bincount(np.searchsorted(keep, x, side="left"), minlength=keep.size + 1)
    assert exp.min() >= 5 and keep.size >= 3
    return stats.chisquare(obs, exp * (x.size / exp.sum())).pvalue


def _integer_edges(dist) -> np.ndarray:
    return np.arange(dist.ppf(1e-12), dist.ppf(1 - 1e-12) + 1)


# ---------------------------------------------------------------- keystream


def test_same_key_same_stream_and_urandom_keys_differ():
    a, b = ChaChaRandom(_key(1)), ChaChaRandom(_key(1))
    assert a.random_bytes(1000) == b.random_bytes(1000)
    np.testing.assert_array_equal(a.standard_normal(7), b.standard_normal(7))
    assert ChaChaRandom(_key(2)).random_bytes(64) != ChaChaRandom(_key(1)).random_bytes(64)
    assert ChaChaRandom().random_bytes(32) != ChaChaRandom().random_bytes(32)


def test_stream_is_continuous_and_is_the_chacha20_keystream():
    a = ChaChaRandom(_key(3))
    assert a.random_bytes(10) + a.random_bytes(6) == ChaChaRandom(_key(3)).random_bytes(16)
    # requests that straddle blocks and the module's 1 MiB encryption chunks
    sizes = [0, 1, 63, 64, 65, (1 << 20) + 5, 3, 2 * (1 << 20) - 7]
    b = ChaChaRandom(_key(4))
    assert b"".join(b.random_bytes(n) for n in sizes) == _chacha(_key(4), sum(sizes))


def test_zero_key_matches_rfc8439_test_vector():
    assert ChaChaRandom(bytes(32)).random_bytes(64) == RFC8439_ZERO_KEY_BLOCK0


def test_uniforms_are_top_53_bits_of_little_endian_words():
    ks = _chacha(_key(5), 8 * 5)
    words = [int.from_bytes(ks[8 * i : 8 * i + 8], "little") for i in range(5)]
    expected = np.array([(w >> 11) * 2.0**-53 for w in words])
    np.testing.assert_array_equal(ChaChaRandom(_key(5)).random(5), expected)


def test_rekeys_from_the_stream_before_the_counter_limit():
    """With a 128-byte budget per key: 96 output bytes, then the next 32 are the new key."""
    r = ChaChaRandom(_key(6))
    r._key_bytes = 128
    k1 = _chacha(_key(6), 128)
    k2 = _chacha(k1[96:], 128)
    k3 = _chacha(k2[96:], 128)
    assert r.random_bytes(50) + r.random_bytes(150) == k1[:96] + k2[:96] + k3[:8]
    assert csprng._KEY_BYTES == 64 * 2**32


def test_forked_child_rekeys_from_urandom(monkeypatch):
    keys = iter([_key(7), _key(8)])
    monkeypatch.setattr(csprng.os, "urandom", lambda n: next(keys))
    r = ChaChaRandom()  # "urandom" key _key(7)
    fixed = ChaChaRandom(_key(9))  # explicit test key: stays deterministic
    assert r.random_bytes(16) == _chacha(_key(7), 16)
    assert fixed.random_bytes(16) == _chacha(_key(9), 16)
    pid = os.getpid()
    monkeypatch.setattr(csprng.os, "getpid", lambda: pid + 1)
    assert r.random_bytes(16) == _chacha(_key(8), 16)
    assert fixed.random_bytes(16) == _chacha(_key(9), 32)[16:]


def test_state_cannot_be_copied():
    r = ChaChaRandom(_key(10))
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(r)
    with pytest.raises(TypeError, match="pickled"):
        copy.deepcopy(r)


def test_empty_requests():
    r = ChaChaRandom(_key(11))
    assert r.random_bytes(0) == b""
    for out, dtype in [
        (r.random(0), np.float64),
        (r.standard_normal(0), np.float64),
        (r.normal(0, np.ones(0)), np.float64),
        (r.bernoulli(0, 0.5), np.bool_),
        (r.poisson(3.0, 0), np.int64),
        (r.poisson(300.0, 0), np.int64),
        (r.skellam(3.0, 0), np.int64),
    ]:
        assert out.shape == (0,) and out.dtype == dtype


# ---------------------------------------------------------------- continuous


def test_uniform_ks():
    u = ChaChaRandom(_key(20)).random(N)
    assert u.dtype == np.float64 and u.shape == (N,)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > ALPHA


@pytest.mark.parametrize("size", [N, N + 1])
def test_standard_normal_ks(size):
    z = ChaChaRandom(_key(21)).standard_normal(size)
    assert z.dtype == np.float64 and z.shape == (size,)
    assert np.all(np.isfinite(z))
    assert stats.kstest(z, "norm").pvalue > ALPHA


def test_normal_scalar_std_ks():
    x = ChaChaRandom(_key(22)).normal(N, 3.5)
    assert stats.kstest(x, stats.norm(scale=3.5).cdf).pvalue > ALPHA
    assert stats.kstest(x, "norm").pvalue < ALPHA  # the test can see the scale


def test_normal_array_std_is_per_coordinate():
    std = np.geomspace(1e-3, 1e3, N)
    x = ChaChaRandom(_key(23)).normal(N, std)
    assert x.shape == (N,)
    assert stats.kstest(x / std, "norm").pvalue > ALPHA
    assert stats.kstest(x, "norm").pvalue < ALPHA
    np.testing.assert_array_equal(ChaChaRandom(_key(23)).normal(4, np.zeros(4)), np.zeros(4))


# ---------------------------------------------------------------- discrete


@pytest.mark.parametrize("p", [1e-3, 0.3, 0.5, 0.9])
def test_bernoulli_binomial(p):
    b = ChaChaRandom(_key(30)).bernoulli(N, p)
    assert b.dtype == np.bool_ and b.shape == (N,)
    assert stats.binomtest(int(b.sum()), N, p).pvalue > ALPHA


def test_bernoulli_extremes_exact():
    r = ChaChaRandom(_key(31))
    assert not r.bernoulli(N, 0.0).any()
    assert r.bernoulli(N, 1.0).all()


@pytest.mark.parametrize("lam", [0.3, 4.0, 9.99, 10.0, 37.5, 1e4])
def test_poisson_chi_square(lam):
    x = ChaChaRandom(_key(40)).poisson(lam, N)
    assert x.dtype == np.int64 and x.shape == (N,) and x.min() >= 0
    dist = stats.poisson(lam)
    assert _binned_pvalue(x, dist, _integer_edges(dist)) > ALPHA


@pytest.mark.parametrize("lam", [1e9, 1e12])
def test_poisson_huge_lambda(lam):
    x = ChaChaRandom(_key(41)).poisson(lam, N)
    assert x.dtype == np.int64 and x.min() >= 0
    mean_se = math.sqrt(lam / N)
    var_se = math.sqrt((2 * lam**2 + lam) / N)  # Var(s^2) = (mu4 - sigma^4) / n
    assert abs(x.mean() - lam) < 6 * mean_se
    assert abs(x.var(ddof=1) - lam) < 6 * var_se
    # whole shape: 40 bins at normal quantiles, probabilities from the exact Poisson CDF
    edges = np.floor(lam + math.sqrt(lam) * stats.norm.ppf(np.linspace(0, 1, 41)[1:-1]))
    assert _binned_pvalue(x, stats.poisson(lam), edges) > ALPHA


def test_poisson_matches_numpy_two_sample():
    ours = ChaChaRandom(_key(42)).poisson(37.5, N)
    theirs = np.random.default_rng(12345).poisson(37.5, N)
    edges = np.unique(np.quantile(np.concatenate([ours, theirs]), np.linspace(0.01, 0.99, 30)))
    table = np.stack(
        [np.bincount(np.searchsorted(edges, s, side="left"), minlength=edges.size + 1)
         for s in (ours, theirs)]
    )
    assert table.min() >= 5
    assert stats.chi2_contingency(table).pvalue > ALPHA


def test_poisson_zero_rate_is_zero():
    x = ChaChaRandom(_key(43)).poisson(0.0, 100)
    assert x.dtype == np.int64
    np.testing.assert_array_equal(x, 0)
    np.testing.assert_array_equal(ChaChaRandom(_key(43)).skellam(0.0, 100), 0)


@pytest.mark.parametrize("lam", [10.0, 37.5, 1e4, 1e9, 1e12])
def test_poisson_log_pmf_is_accurate(lam):
    """The PTRS acceptance test needs log p(k) to ~1e-16 relative; the naive formula
    ``-lam + k log lam - lgamma(k + 1)`` is off by ~1e-3 at lam = 1e12."""
    s = math.sqrt(lam)
    k = np.floor([0, 1, 15, 16, 20, lam - 5 * s, lam - 1, lam, lam + 1, lam + 5 * s, 3 * lam])
    k = np.unique(k[k >= 0])
    got = poisson.poisson_logpmf(k, k - lam, lam)
    mpmath.mp.dps = 40
    ref = np.array([
        float(-mpmath.mpf(lam) + int(kk) * mpmath.log(lam) - mpmath.loggamma(int(kk) + 1))
        for kk in k
    ])
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)


def test_skellam_huge_mu_moments():
    mu = 1e9
    x = ChaChaRandom(_key(50)).skellam(mu, N)
    assert x.dtype == np.int64 and x.shape == (N,)
    var = 2 * mu
    assert abs(x.mean()) < 6 * math.sqrt(var / N)
    var_se = math.sqrt((2 * var**2 + 2 * mu) / N)  # fourth cumulant of Sk(mu) is 2 mu
    assert abs(x.var(ddof=1) - var) < 6 * var_se


def test_skellam_chi_square():
    x = ChaChaRandom(_key(51)).skellam(3.0, N)
    dist = stats.skellam(3.0, 3.0)
    assert _binned_pvalue(x, dist, np.arange(-40, 41)) > ALPHA


# ---------------------------------------------------------------- arguments


def test_bad_key():
    for key in (b"short", bytes(33), "x" * 32):
        with pytest.raises(ValueError, match="key"):
            ChaChaRandom(key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda r: r.random_bytes(-1), "n"),
        (lambda r: r.random(-1), "size"),
        (lambda r: r.standard_normal(-1), "size"),
        (lambda r: r.normal(-1, 1.0), "size"),
        (lambda r: r.bernoulli(-1, 0.5), "size"),
        (lambda r: r.poisson(1.0, -1), "size"),
        (lambda r: r.skellam(1.0, -1), "size"),
        (lambda r: r.normal(3, -1.0), "std"),
        (lambda r: r.normal(3, math.nan), "std"),
        (lambda r: r.normal(3, math.inf), "std"),
        (lambda r: r.normal(3, np.ones(4)), "std"),
        (lambda r: r.normal(3, np.array([1.0, -1.0, 1.0])), "std"),
        (lambda r: r.bernoulli(3, -0.1), "p"),
        (lambda r: r.bernoulli(3, 1.1), "p"),
        (lambda r: r.bernoulli(3, math.nan), "p"),
        (lambda r: r.poisson(-1.0, 3), "lam"),
        (lambda r: r.poisson(math.inf, 3), "lam"),
        (lambda r: r.poisson(math.nan, 3), "lam"),
        (lambda r: r.poisson(1e16, 3), "lam"),
        (lambda r: r.skellam(-1.0, 3), "mu"),
        (lambda r: r.skellam(math.nan, 3), "mu"),
    ],
)
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call(ChaChaRandom(_key(60)))


def test_non_integer_size_is_a_type_error():
    with pytest.raises(TypeError, match="size"):
        ChaChaRandom(_key(61)).random(2.5)  # type: ignore[arg-type]
