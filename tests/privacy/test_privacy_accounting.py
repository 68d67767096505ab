"""privfed's epsilons against Google's independent dp-accounting (within 2%)."""

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import rdp

from privfed.federated import ClientUpdate
from privfed.privacy import (
    CentralDP,
    SkellamAccountant,
    calibrate_noise,
    spent_epsilon,
    user_level_epsilon,
)
from privfed.privacy.skellam import skellam_rdp


def _reference(noise: float, rate: float, count: int, delta: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise)), count
    )
    return rdp.RdpAccountant().compose(event).get_epsilon(delta)


@pytest.mark.parametrize(("z", "q", "rounds"), [(1.1, 0.1, 100), (0.8, 0.3, 40), (2.0, 1.0, 5)])
def test_user_level_dp_fedavg_epsilon_matches_dp_accounting(z, q, rounds):
    """Run the central mechanism itself for T rounds and read its accountant."""
    mech = CentralDP(noise_multiplier=z, clip_norm=1.0, sample_rate=q, num_clients=50,
                     delta=1e-5, seed=0)
    for r in range(1, rounds + 1):
        mech.server_finalize(r, torch.zeros(3), 0.0, ())
    ours = mech.round_metrics(rounds, [])["epsilon"]
    assert ours == pytest.approx(_reference(z, q, rounds, 1e-5), rel=0.02)
    assert ours == pytest.approx(user_level_epsilon(z, q, rounds, 1e-5), rel=1e-9)


def test_other_opacus_accountants_are_ordered():
    """PRV is tighter than RDP (within 15% here); GDP's CLT approximation is lower still."""
    eps = {a: user_level_epsilon(1.0, 0.05, 200, 1e-5, a) for a in ("rdp", "prv", "gdp")}
    assert 0 < eps["gdp"] < eps["prv"] < eps["rdp"] < 1.15 * eps["prv"]


def test_calibration_reaches_the_target_from_below():
    sigma = calibrate_noise(2.0, 1e-5, 0.05, 300)
    eps = user_level_epsilon(sigma, 0.05, 300, 1e-5)
    assert 0.99 * 2.0 <= eps <= 2.0
    assert _reference(sigma, 0.05, 300, 1e-5) == pytest.approx(eps, rel=0.02)


def test_zero_noise_is_infinite_epsilon():
    mech = CentralDP(noise_multiplier=0.0, clip_norm=1.0, sample_rate=1.0, num_clients=4,
                     delta=1e-5, seed=0)
    assert mech.epsilon() == 0.0
    mech.server_finalize(1, torch.zeros(2), 4.0, (0, 1, 2, 3))
    assert mech.epsilon() == float("inf")


def test_adaptive_clipping_accounts_the_combined_noise():
    """Update noise z_u and count noise sigma_b combine to the accounted z (Andrew et al.)."""
    from privfed.privacy import AdaptiveClipping

    mech = CentralDP(noise_multiplier=1.0, clip_norm=1.0, sample_rate=1.0, num_clients=40,
                     delta=1e-5, seed=0, adaptive=AdaptiveClipping(0.5, 0.2, 2.0))
    combined = (mech.update_noise**-2 + (2 * 2.0) ** -2) ** -0.5
    assert combined == pytest.approx(1.0)
    assert mech.update_noise > 1.0


def test_skellam_rdp_approaches_the_gaussian_for_large_mu():
    """For large mu the Skellam bound tends to the Gaussian RDP alpha * D^2 / (2 var)."""
    orders = np.array([2.0, 8.0, 32.0])
    mu, l2 = 1e6, 1000.0
    gaussian = orders * l2**2 / (2 * 2 * mu)
    ours = skellam_rdp(orders, mu, l1=l2**2, l2=l2)
    np.testing.assert_allclose(ours, gaussian, rtol=0.01)
    assert np.all(ours >= gaussian)
    acc = SkellamAccountant(mu, l2**2, l2)
    acc.step()
    acc.step()
    reference = rdp.RdpAccountant().compose(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(np.sqrt(2 * mu) / l2), 2)
    ).get_epsilon(1e-5)
    assert spent_epsilon(acc, 1e-5) == pytest.approx(reference, rel=0.05)


def test_clip_is_applied_before_noise():
    mech = CentralDP(noise_multiplier=0.0, clip_norm=1.0, sample_rate=1.0, num_clients=1,
                     delta=1e-5, seed=0)
    update = ClientUpdate(cid=0, delta=torch.tensor([3.0, 4.0]), num_samples=10,
                          train_loss=0.0, steps=1)
    torch.testing.assert_close(mech.client_transform(1, update), torch.tensor([0.6, 0.8]))
    assert mech.weight(update) == 1.0
