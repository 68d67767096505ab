"""``privacy.noise_cohort_size``: a simulated cohort c carries the per-client noise of a
deployed cohort C (pfl-research's ``noise_cohort_size``), and says so.

Tolerances: the sample standard deviation of n i.i.d. normal draws has relative standard
error ``1 / sqrt(2 (n - 1))``. With n = 80,000 that is 0.25%, so the 5% tolerance is 20
standard errors (false-failure probability below 1e-80); the bit-sum check draws n =
20,000 (0.5%: 10 standard errors, below 1e-22).
"""

from __future__ import annotations

import math

import pytest
import torch

from privfed.config import ConfigError, load_config
from privfed.config.privacy import PrivacyConfig
from privfed.experiment import build_simulation
from privfed.federated import LocalTraining
from privfed.federated.stages import Pipeline, ServerAggregate
from privfed.privacy import NoisePolicy
from privfed.privacy.factory import PrivacyParts, build_privacy
from privfed.privacy.noise_cohort import NoiseCohort
from privfed.run_summary import describe_epsilon, summarize
from tests.privacy._helpers import release
from tests.privacy._reference import pld_epsilon

SEEDED = NoisePolicy(secure=False, seed=5)
Z, S, Q, DELTA = 1.3, 0.7, 0.25, 1e-6
K = 40
"""The simulation: c = qK = 10 expected clients per round."""
C = 1000
"""The deployed cohort."""
C_ACCOUNTED = 20
"""The deployed cohort of the epsilon checks: the run's noise multiplier z c / C = z / 2
keeps dp-accounting's reference (interval 1e-4) under a second."""
DIM, ROUNDS = 20_000, 4
"""Draws of the noise std checks: 4 rounds of 20,000 coordinates (n = 80,000)."""


def _parts(num_clients: int = K, poisson: bool = True, **privacy) -> PrivacyParts:
    config = PrivacyConfig(**{"mechanism": "central", "noise_multiplier": Z, "clip_norm": S,
                              "delta": DELTA, **privacy})
    return build_privacy(config, num_clients=num_clients, sample_rate=Q, poisson=poisson,
                         num_params=DIM, rounds=50, training=LocalTraining(), noise=SEEDED,
                         reference_size=None, module=torch.nn.Linear(2, 2))


def _released_noise(parts: PrivacyParts, clients: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean update and the sum of ROUNDS rounds of ``clients`` zero updates: pure
    noise."""
    pipeline = Pipeline(parts.stages)
    zeros = {k: torch.zeros(DIM) for k in range(clients)}
    expected = Q * parts.policy.num_clients
    means = torch.cat([release(pipeline, expected, r, zeros, DIM) for r in range(ROUNDS)])
    return means, means * expected


def _std(draws: torch.Tensor) -> float:
    return float(draws.double().std())


def test_the_simulated_sum_and_mean_carry_the_documented_noise():
    c = Q * K
    means, sums = _released_noise(_parts(noise_cohort_size=C), int(c))
    assert _std(sums) == pytest.approx(Z * S * c / C, rel=0.05)
    assert _std(means) == pytest.approx(Z * S / C, rel=0.05)


def test_the_simulated_mean_carries_the_deployments_noise():
    """A deployment of C = qK' clients (K' = C / q) without the field: its mean has the same
    noise as the simulation's of c = 10 with noise_cohort_size = C."""
    simulated, _ = _released_noise(_parts(noise_cohort_size=C), 10)
    deployed, _ = _released_noise(_parts(num_clients=int(C / Q)), 0)
    assert _std(simulated) == pytest.approx(_std(deployed), rel=0.05)
    without, _ = _released_noise(_parts(), 10)  # the simulation's own noise: C/c times more
    assert _std(without) == pytest.approx(Z * S / (Q * K), rel=0.05)


def test_adaptive_clipping_scales_the_count_noise_too():
    """The bit sum's std is sigma_b c / C, sigma_b the deployment's (default C / 20), so
    the estimated unclipped fraction carries the deployment's noise 1/20."""
    parts = _parts(noise_cohort_size=C, adaptive_clipping=True)
    noise_stage = parts.stages[1]
    bits = torch.stack([noise_stage.server(r, ServerAggregate(torch.zeros(2), 1.0, ())).sum
                        for r in range(20_000)])
    c = Q * K
    assert _std(bits[:, 1]) == pytest.approx(C / 20 * c / C, rel=0.05)
    assert _std(bits[:, 1] / c) == pytest.approx(1 / 20, rel=0.05)


def test_both_epsilons_are_dp_accountings():
    policy = _parts(noise_cohort_size=C_ACCOUNTED).policy
    for r in range(30):
        policy.record_release(r)
    metrics = policy.metrics()
    deployment = pld_epsilon(Z, Q, 30, DELTA)
    own = pld_epsilon(Z * Q * K / C_ACCOUNTED, Q, 30, DELTA)
    assert deployment <= metrics["epsilon_deployment"] <= 1.01 * deployment
    assert own <= metrics["epsilon"] <= 1.01 * own
    assert metrics["epsilon_outsider"] == metrics["epsilon"]
    assert metrics["epsilon"] > 2 * metrics["epsilon_deployment"]
    assert (metrics["cohort_size"], metrics["noise_cohort_size"]) == (Q * K, C_ACCOUNTED)
    assert metrics["noise_multiplier_run"] == pytest.approx(Z / 2)


def test_a_fixed_size_cohort_accounts_both_epsilons_as_its_participation_does():
    """Fixed-size cohorts (replace one): Poisson-subsampled Gaussian of half the noise
    multiplier at q = m / K, for the deployment's z and for the run's z c / C."""
    policy = _parts(poisson=False, noise_cohort_size=C_ACCOUNTED).policy
    for r in range(30):
        policy.record_release(r)
    metrics = policy.metrics()
    deployment = pld_epsilon(Z / 2, Q, 30, DELTA)
    own = pld_epsilon(Z / 4, Q, 30, DELTA)
    assert deployment <= metrics["epsilon_deployment"] <= 1.01 * deployment
    assert own <= metrics["epsilon"] <= 1.01 * own
    assert metrics["neighbouring"] == "replace one client"


def test_a_target_epsilon_is_the_deployments_and_caps_it():
    policy = _parts(noise_cohort_size=C_ACCOUNTED, noise_multiplier=None, epsilon=2.0).policy
    rounds = 0
    while policy.round_allowed():
        policy.record_release(rounds)
        rounds += 1
    assert rounds == 50
    assert pld_epsilon(policy.noise_multiplier, Q, 50, DELTA) <= 2.0
    assert policy.metrics()["epsilon_deployment"] <= 2.0
    own = pld_epsilon(policy.noise_multiplier / 2, Q, 50, DELTA)
    assert own <= policy.metrics()["epsilon"] <= 1.01 * own


def test_without_the_field_nothing_changes():
    with_scale_one = _parts(noise_cohort_size=int(Q * K))
    without = _parts()
    a, _ = _released_noise(without, 10)
    b, _ = _released_noise(with_scale_one, 10)
    assert torch.equal(a, b)  # c / C = 1 multiplies by exactly one
    for r in range(5):
        without.policy.record_release(r)
    assert set(without.policy.metrics()) == {
        "epsilon", "epsilon_against", "accounting", "neighbouring", "epsilon_outsider", "delta",
        "noise_multiplier", "noise"}
    assert without.policy.metrics()["epsilon"] == pytest.approx(pld_epsilon(Z, Q, 5, DELTA),
                                                                rel=0.01)


def test_a_noise_cohort_smaller_than_the_simulated_one_is_refused():
    with pytest.raises(ConfigError, match=r"privacy.noise_cohort_size \(9\).*10 expected.*"
                                          r"federation.fraction.*data.num_clients"):
        load_config(overrides=["data.num_clients=40", "federation.fraction=0.25",
                               "federation.client_sampling='poisson'",
                               "privacy.mechanism='central'", "privacy.noise_multiplier=1.0",
                               "privacy.noise_cohort_size=9"])
    with pytest.raises(ValueError, match="noise_cohort_size"):
        NoiseCohort(10.0, 9)


@pytest.mark.parametrize("mechanism", ["local", "distributed"])
def test_other_mechanisms_refuse_the_field(mechanism):
    with pytest.raises(ConfigError, match=r"noise_cohort_size applies only to mechanism "
                                          rf"'central', not '{mechanism}'"):
        PrivacyConfig(mechanism=mechanism, noise_multiplier=1.0, noise_cohort_size=100)


def test_the_field_keeps_other_configs_identity_and_changes_its_own():
    base = ["data.num_clients=40", "federation.fraction=0.25",
            "federation.client_sampling='poisson'", "privacy.mechanism='central'",
            "privacy.noise_multiplier=1.0"]
    assert load_config().short_hash() == "e22b83ea"
    plain = load_config(overrides=base).short_hash()
    assert load_config(overrides=[*base, "privacy.noise_cohort_size=1000"]).short_hash() != plain


def test_the_summary_states_both_cohorts_and_both_epsilons():
    config = load_config(overrides=[
        "data.num_clients=40", "federation.fraction=0.25", "federation.client_sampling='poisson'",
        "federation.rounds=2", "model.hidden=[8]", "privacy.mechanism='central'",
        "privacy.epsilon=3.0", "privacy.noise_cohort_size=1000"])
    simulation = build_simulation(config)
    history = simulation.run()
    summary = summarize(config, history, num_params=10)
    assert summary["cohort_size"] == 10 and summary["noise_cohort_size"] == 1000
    assert summary["epsilon_deployment"] <= 3.0 < summary["epsilon"]
    text = describe_epsilon(summary)
    assert "deployed cohort of 1000 clients per round (NOT this run's)" in text
    assert "this run's cohort of 10" in text
    assert f"its own model has epsilon {summary['epsilon']:.2f}" in text
    assert math.isfinite(summary["epsilon"])
