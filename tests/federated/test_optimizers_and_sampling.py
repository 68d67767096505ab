import numpy as np
import pytest
import torch

from privfed.federated import (
    ClientSampler,
    FedAdam,
    FedAvg,
    FedAvgM,
    derive_seed,
    make_server_optimizer,
)


def test_fedavg_server_lr_scales_the_step():
    w = torch.ones(4)
    FedAvg(lr=0.5).step(w, torch.full((4,), 2.0))
    assert torch.equal(w, torch.full((4,), 2.0))


def test_fedavgm_accumulates_velocity():
    w, opt = torch.zeros(2), FedAvgM(lr=1.0, momentum=0.5)
    opt.step(w, torch.ones(2))  # v = 1
    opt.step(w, torch.ones(2))  # v = 0.5 + 1
    torch.testing.assert_close(w, torch.full((2,), 2.5))


def test_fedadam_matches_reddi_et_al_update():
    w, opt = torch.zeros(3), FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    d1, d2 = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.5, 0.5, 0.5])
    opt.step(w, d1)
    opt.step(w, d2)
    m1, v1 = 0.1 * d1, 0.01 * d1**2
    m2, v2 = 0.9 * m1 + 0.1 * d2, 0.99 * v1 + 0.01 * d2**2
    expected = 0.1 * m1 / (v1.sqrt() + 1e-3) + 0.1 * m2 / (v2.sqrt() + 1e-3)
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedsgd", {}, r"unknown value 'fedsgd'; allowed: \['fedavg', 'fedavgm', 'fedadam'\]"),
        ("fedavg", {"lr": 0.0}, r"server_lr must be in \(0, inf\), got 0.0"),
        ("fedavgm", {"momentum": 1.0}, r"server_momentum must be in \[0, 1\)"),
        ("fedadam", {"beta2": -0.1}, "server_beta2"),
    ],
)
def test_bad_server_optimizer_settings(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_server_optimizer(name, **params)


def test_sampler_draws_m_distinct_clients_reproducibly():
    a, b = ClientSampler(100, 0.1, seed=7), ClientSampler(100, 0.1, seed=7)
    draws = [a.sample() for _ in range(20)]
    assert draws == [b.sample() for _ in range(20)]
    assert all(len(d) == len(set(d)) == 10 and d == sorted(d) for d in draws)
    assert a.rate == 0.1
    # Over many rounds every client is drawn about rate * rounds times.
    counts = np.bincount(np.concatenate([a.sample() for _ in range(2000)]), minlength=100)
    assert abs(counts.mean() - 200) < 1e-9 and counts.min() > 140 and counts.max() < 260


def test_full_participation_and_at_least_one_client():
    assert ClientSampler(5, 1.0, 0).sample() == [0, 1, 2, 3, 4]
    assert len(ClientSampler(5, 0.01, 0).sample()) == 1


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_fraction_outside_unit_interval_is_rejected(fraction):
    with pytest.raises(ValueError, match=r"federation.fraction must be in \(0, 1\]"):
        ClientSampler(10, fraction, 0)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 2, 1, 3) == derive_seed(0, 2, 1, 3)
    seeds = {derive_seed(s, 2, r, c) for s in range(2) for r in range(5) for c in range(5)}
    assert len(seeds) == 50
