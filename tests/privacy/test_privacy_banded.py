"""DP-FTRL with banded matrix-factorisation noise: the factorisation, its sensitivity, its
accounting against dp-accounting and the noise the stage adds."""

import math

import numpy as np
import pytest
import torch

from privfed.config.privacy import PrivacyConfig
from privfed.federated import LocalTraining
from privfed.federated.stages import ServerAggregate
from privfed.privacy import ClipStage, NoisePolicy
from privfed.privacy.banded import (
    _BANDED_NOISE_STREAM,
    BandedNoiseStage,
    banded_sensitivity,
    sqrt_coefficients,
)
from privfed.privacy.ftrl import ftrl_epsilon
from tests.privacy._helpers import private_server, split
from tests.privacy._reference import exact_gaussian_epsilon, pld_epsilon

SEEDED = NoisePolicy(secure=False, seed=5)
Z, S, DIM = 1.1, 0.6, 40_000


def _matrix(rounds, bands):
    """C: lower-triangular Toeplitz, b bands of the square root's coefficients."""
    c = sqrt_coefficients(bands)
    return sum(c[k] * np.eye(rounds, k=-k) for k in range(min(bands, rounds)))


def _stage(bands, noise=SEEDED, z=Z):
    return BandedNoiseStage(ClipStage(S, 4.0), z, bands, noise)


def _increments(stage, rounds, dim=DIM):
    return [stage.server(t, ServerAggregate(torch.zeros(dim), 1.0, ())).sum
            for t in range(1, rounds + 1)]


def test_all_bands_square_to_the_prefix_sum_matrix():
    c = _matrix(12, 12)
    assert np.allclose(c @ c, np.tril(np.ones((12, 12))))


@pytest.mark.parametrize(("rounds", "period", "bands"),
                         [(12, 3, 3), (12, 3, 5), (20, 1, 4), (9, 9, 9), (16, 5, 2)])
def test_sensitivity_is_the_norm_of_the_columns_a_client_enters(rounds, period, bands):
    c = _matrix(rounds, bands)
    worst = max(np.linalg.norm(c[:, b - 1::period].sum(axis=1)) for b in range(1, period + 1))
    assert banded_sensitivity(rounds, period, bands) == pytest.approx(worst, rel=1e-12)
    if period >= bands:  # columns b apart do not overlap (Choquette-Choo et al. 2023, Thm 2)
        norms = np.linalg.norm(c, axis=0) ** 2
        orthogonal = max(norms[b - 1::period].sum() for b in range(1, period + 1))
        assert banded_sensitivity(rounds, period, bands) ** 2 == pytest.approx(orthogonal)


def test_one_band_is_the_unamplified_gaussian_composition():
    assert banded_sensitivity(30, 10, 1) == pytest.approx(math.sqrt(3))
    assert banded_sensitivity(30, 1, 1) == pytest.approx(math.sqrt(30))


@pytest.mark.parametrize(("z", "rounds", "period", "bands"),
                         [(2.0, 30, 10, 10), (5.0, 60, 10, 4), (20.0, 40, 1, 1)])
def test_epsilon_is_dp_accountings_pld_and_exact_gaussian_for_the_sensitivity(
        z, rounds, period, bands):
    delta = 1e-5
    sensitivity = banded_sensitivity(rounds, period, bands)
    ours = ftrl_epsilon(z, sensitivity, delta)
    assert ours == pytest.approx(pld_epsilon(z / sensitivity, 1.0, 1, delta), rel=0.02)
    assert ours == pytest.approx(exact_gaussian_epsilon(z / sensitivity, 1, delta), rel=0.02)


def test_the_stage_adds_c_inverse_of_the_rounds_seeded_gaussians():
    """C w = z exactly (to float32 rounding), z_t the stream (banded stream, t)'s draw."""
    bands, rounds, dim = 4, 9, 50
    w = torch.stack(_increments(_stage(bands), rounds, dim)).double().numpy()
    z = np.stack([SEEDED.source(_BANDED_NOISE_STREAM, t).normal(Z * S, dim).double().numpy()
                  for t in range(1, rounds + 1)])
    assert np.allclose(_matrix(rounds, bands) @ w, z, atol=1e-5)


@pytest.mark.parametrize("t", [1, 4, 9])
def test_prefix_noise_has_the_variance_of_a_c_inverse(t):
    """Var((A C^-1 z)_t) = ||(A C^-1)[t]||^2 (z S)^2; relative std of the sample variance
    of DIM coordinates sqrt(2 / DIM), allowed 5 of them."""
    bands = 3
    prefix = torch.stack(_increments(_stage(bands), t)).sum(0)
    b = np.tril(np.ones((t, t))) @ np.linalg.inv(_matrix(t, bands))
    expected = float(b[-1] @ b[-1]) * (Z * S) ** 2
    assert prefix.var().item() == pytest.approx(expected, rel=5 * math.sqrt(2 / DIM))


def test_a_restored_stage_continues_bit_for_bit():
    straight, first = _stage(4), _stage(4)
    expected = _increments(straight, 7, dim=10)
    _increments(first, 3, dim=10)
    resumed = _stage(4)
    resumed.load_server_state(first.server_state())
    rest = [resumed.server(t, ServerAggregate(torch.zeros(10), 1.0, ())).sum for t in range(4, 8)]
    assert all(torch.equal(a, b) for a, b in zip(rest, expected[3:], strict=True))
    with pytest.raises(ValueError, match="holds 3 vectors, more than bands - 1 = 1"):
        _stage(2).load_server_state(first.server_state())


def test_banded_end_to_end_and_without_noise_equals_central(blobs):
    x, y = blobs
    parts = split(x, y, [30] * 4)
    training = LocalTraining(epochs=1, batch_size=8, lr=0.1)
    banded = PrivacyConfig(mechanism="ftrl", factorization="banded", bands=2,
                           noise_multiplier=0.0, clip_norm=0.5)
    central = PrivacyConfig(mechanism="central", noise_multiplier=0.0, clip_norm=0.5)
    servers = [private_server(parts, (x, y), c, rounds=3, training=training)
               for c in (banded, central)]
    for server in servers:
        server.fit(3)
    assert torch.equal(servers[0].weights, servers[1].weights)
    private = private_server(parts, (x, y), PrivacyConfig(
        mechanism="ftrl", factorization="banded", epsilon=4.0), rounds=5)
    last = private.fit(5).rounds[-1].extra
    assert 0.99 * 4.0 <= last["epsilon"] <= 4.0
    assert last["ftrl_sensitivity"] == pytest.approx(banded_sensitivity(5, 1, 1))
