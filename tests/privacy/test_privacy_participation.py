"""Participation-aware user-level accounting: Poisson, fixed-size cohorts (replace-one) and
cyclic groups, each against dp-accounting computed here from its own events."""

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant

from privfed.config.privacy import PrivacyConfig
from privfed.federated import ClientSampler, LocalTraining
from privfed.privacy import DistributedPolicy, UserLevelPolicy, build_privacy
from privfed.privacy.participation import Participation
from tests.privacy._helpers import SEEDED, distributed
from tests.privacy._reference import (
    exact_gaussian_epsilon,
    pld_epsilon,
    wor_exact_delta,
    wor_rdp_epsilon,
)

K, M, Q, B, T, DELTA = 100, 10, 0.1, 4, 50, 1e-5
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


def released(participation: Participation, z: float, rounds: int) -> UserLevelPolicy:
    """Central DP's policy after ``rounds`` released rounds."""
    policy = UserLevelPolicy(noise_multiplier=z, sample_rate=participation.rate,
                             num_clients=K, delta=DELTA, noise=SEEDED,
                             participation=participation)
    for r in range(1, rounds + 1):
        policy.record_release(r)
    return policy


def gaussian_pld_epsilon(z: float, count: int) -> float:
    """dp-accounting's PLD of ``count`` Gaussian releases, no sampling (add/remove)."""
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), count)
    return pld_privacy_accountant.PLDAccountant().compose(event).get_epsilon(DELTA)


def reference(scheme: str, z: float, rounds: int) -> float:
    """dp-accounting's PLD epsilon of each scheme's event, built here."""
    if scheme == "poisson":
        return pld_epsilon(z, Q, rounds, DELTA)
    if scheme == "fixed":  # replace-one: the clipped sum moves by 2S, sampled w/o replacement
        return pld_epsilon(z / 2, Q, rounds, DELTA)
    return gaussian_pld_epsilon(z, math.ceil(rounds / B))


PARTICIPATIONS = {"poisson": Participation.of(K, Q, poisson=True),
                  "fixed": Participation.of(K, Q, poisson=False),
                  "cyclic": Participation.of(K, 1 / B, poisson=False, groups=B)}


@pytest.mark.parametrize("scheme", ["poisson", "fixed", "cyclic"])
@pytest.mark.parametrize("z", [1.0, 2.5])
def test_reported_epsilon_is_dp_accountings_pld_for_the_scheme(scheme, z):
    policy = released(PARTICIPATIONS[scheme], z, T)
    metrics = policy.metrics()
    assert metrics["epsilon"] == pytest.approx(reference(scheme, z, T), rel=0.02)
    assert metrics["neighbouring"] == PARTICIPATIONS[scheme].relation
    assert metrics["accounting"].startswith("pld: ")


@pytest.mark.parametrize("z", [1.0, 2.5, 6.0])
def test_fixed_size_epsilon_is_replace_one_and_not_the_poisson_one(z):
    fixed = released(PARTICIPATIONS["fixed"], z, T).epsilon()
    assert fixed <= wor_rdp_epsilon(z / 2, M, K, T, DELTA)  # dp-accounting's own WOR bound
    assert fixed >= pld_epsilon(z, Q, T, DELTA, relation=REPLACE_ONE)  # Poisson, replace one
    assert fixed > 1.5 * pld_epsilon(z, Q, T, DELTA)  # Poisson, add/remove: the headline's
    assert PARTICIPATIONS["fixed"].relation == "replace one client"


@pytest.mark.parametrize(("z", "rate"), [(1.0, 0.1), (2.0, 0.05), (0.7, 0.3), (4.0, 0.5)])
def test_one_fixed_size_round_is_the_exact_epsilon_of_the_attaining_pair(z, rate):
    participation = Participation.of(K, rate, poisson=False)
    epsilon = participation.epsilon(z, 1, DELTA)
    assert wor_exact_delta(z, rate, epsilon) <= DELTA * 1.001  # not below the truth
    assert wor_exact_delta(z, rate, 0.98 * epsilon) > DELTA  # and within 2% of it


def test_cyclic_epsilon_counts_only_the_rounds_a_client_can_take_part_in():
    cyclic = PARTICIPATIONS["cyclic"]
    assert [cyclic.participations(t) for t in (1, 4, 5, 8, 9, 50)] == [1, 1, 2, 2, 3, 13]
    policy = released(cyclic, 2.0, T)
    assert policy.epsilon() == pytest.approx(exact_gaussian_epsilon(2.0, 13, DELTA), rel=0.01)
    assert policy.epsilon() < released(Participation("full", K), 2.0, T).epsilon() / 1.5


@pytest.mark.parametrize("scheme", ["poisson", "fixed", "cyclic"])
@pytest.mark.parametrize("target", [1.0, 4.0])
def test_a_target_epsilon_calibrates_the_noise_for_the_scheme(scheme, target):
    participation = PARTICIPATIONS[scheme]
    parts = build_privacy(
        PrivacyConfig(mechanism="central", epsilon=target, delta=DELTA), num_clients=K,
        sample_rate=participation.rate, poisson=scheme == "poisson", num_params=10, rounds=T,
        training=LocalTraining(), noise=SEEDED, reference_size=30,
        module=torch.nn.Linear(2, 2), cyclic_groups=B if scheme == "cyclic" else None)
    assert parts.policy.participation == participation
    reached = reference(scheme, parts.policy.noise_multiplier, T)
    assert 0.98 * target <= reached <= target * 1.002


def test_distributed_dp_under_fixed_size_cohorts_reports_both_relations():
    z, rounds = 1.5, 20
    policy = DistributedPolicy(min_surviving_clients=M, clip_norm=1.0, dim=10,
                               noise_multiplier=z, sample_rate=Q, num_clients=K, delta=DELTA,
                               noise=SEEDED, participation=PARTICIPATIONS["fixed"])
    for r in range(1, rounds + 1):
        policy.record_release(r)
        policy.record_participation(r, range((r % 10) * M, (r % 10 + 1) * M))
    metrics = policy.metrics()
    assert metrics["epsilon"] == pytest.approx(exact_gaussian_epsilon(z, 2, DELTA), rel=0.01)
    assert metrics["neighbouring"].startswith("zero-out")
    assert metrics["epsilon_outsider"] == pytest.approx(reference("fixed", z, rounds), rel=0.02)
    assert metrics["neighbouring_outsider"] == "replace one client"


def test_cyclic_sampler_gives_each_client_exactly_its_groups_rounds():
    clients, groups, rounds = 10, 3, 11
    sampler = ClientSampler(clients, 1.0, seed=0, groups=groups)
    cohorts = [sampler.sample() for _ in range(rounds)]
    for c in range(clients):
        taken = [r for r, cohort in enumerate(cohorts) if c in cohort]
        assert taken == [r for r in range(rounds) if r % groups == c % groups]
        assert len(taken) <= math.ceil(rounds / groups)
        assert all(b - a >= groups for a, b in zip(taken, taken[1:], strict=False))
    assert sampler.rate == 1 / groups and sampler.per_round == 4
    resumed = ClientSampler(clients, 1.0, seed=5, groups=groups)
    resumed.load_state_dict(sampler.state_dict())
    assert resumed.sample() == sampler.sample() == [2, 5, 8]


def test_cyclic_sampler_refuses_an_impossible_schedule():
    with pytest.raises(ValueError, match=r"federation.cyclic_groups \(11\) must be at most "
                                         r"data.num_clients \(10\)"):
        ClientSampler(10, 1.0, seed=0, groups=11)
    with pytest.raises(ValueError, match=r"federation.fraction must be 1 and "
                                         r"federation.client_sampling 'cyclic'"):
        ClientSampler(10, 0.5, seed=0, groups=2)


def test_fixed_size_cohort_from_a_secret_source_is_uniform_without_replacement():
    source = np.random.default_rng(7)
    sampler = ClientSampler(20, 0.25, seed=0, uniform=source.random)
    draws = [sampler.sample() for _ in range(4000)]
    assert all(len(set(d)) == len(d) == 5 for d in draws)
    counts = np.bincount(np.concatenate(draws), minlength=20) / 4000
    assert np.abs(counts - 0.25).max() < 0.03  # 4 standard deviations
    seeded = ClientSampler(20, 0.25, seed=0)
    assert [seeded.sample() for _ in range(3)] != draws[:3]


def test_local_dp_under_cyclic_participation_calibrates_for_its_rounds():
    """Record-level DP-SGD: participation does not amplify it; each client's epsilon covers
    the ceil(T/b) rounds it takes part in."""
    training = LocalTraining(epochs=1, batch_size=8, lr=0.1)
    parts = build_privacy(
        PrivacyConfig(mechanism="local", epsilon=2.0, delta=DELTA), num_clients=8,
        sample_rate=0.25, poisson=False, num_params=6, rounds=12, training=training,
        noise=SEEDED, reference_size=64, module=torch.nn.Linear(2, 3), cyclic_groups=4)
    spend = parts.policy.client_spend
    for r in range(12):
        spend.record(r, range(r % 4, 8, 4))
    assert 0.98 * 2.0 <= spend.max_epsilon() <= 2.0


def test_distributed_dp_under_cyclic_groups_calibrates_each_clients_rounds():
    parts = build_privacy(
        PrivacyConfig(mechanism="distributed", epsilon=3.0, delta=DELTA), num_clients=10,
        sample_rate=1 / 3, poisson=False, num_params=10, rounds=T, training=LocalTraining(),
        noise=SEEDED, reference_size=30, module=torch.nn.Linear(2, 2), cyclic_groups=3)
    policy = parts.policy
    assert policy.min_cohort == 3  # the smallest group, floor(10 / 3)
    reached = exact_gaussian_epsilon(policy.noise_multiplier, math.ceil(T / 3), DELTA)
    assert 0.98 * 3.0 <= reached <= 3.0 * 1.002
    assert policy.metrics()["accounting_outsider"].startswith("pld: cyclic, 3 groups")


def test_each_policy_names_its_own_accountant():
    _, skellam = distributed(2, 4, noise_kind="skellam", quantization_step=0.01)
    metrics = skellam.metrics()
    assert metrics["accounting"].startswith("skellam rdp")
    assert metrics["accounting_outsider"] == metrics["accounting"]
    _, gaussian = distributed(2, 4)
    assert gaussian.metrics()["accounting"].startswith("pld: gaussian without amplification")
    assert gaussian.metrics()["accounting_outsider"].startswith("pld: poisson-subsampled")


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_the_other_accountants_bound_fixed_size_cohorts_from_above(accountant):
    fixed = PARTICIPATIONS["fixed"]
    assert fixed.epsilon(2.0, T, DELTA, accountant) >= 0.99 * reference("fixed", 2.0, T)
