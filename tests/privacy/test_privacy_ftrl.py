"""DP-FTRL with tree aggregation (Kairouz et al. 2021): the tree's noise, its accounting
against dp-accounting, and the FTRL form of the model."""

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant

from privfed.config.privacy import PrivacyConfig
from privfed.federated import LocalTraining
from privfed.federated.stages import ServerAggregate
from privfed.privacy import ClipStage, NoisePolicy
from privfed.privacy.accounting import RDP_ORDERS
from privfed.privacy.ftrl import (
    FTRLPolicy,
    TreeNoiseStage,
    calibrate_ftrl_noise,
    ftrl_epsilon,
    tree_sensitivity,
)
from tests.privacy._helpers import private_server, split
from tests.privacy._reference import exact_gaussian_epsilon, pld_epsilon

SEEDED = NoisePolicy(secure=False, seed=3)
Z, S, DIM = 1.3, 0.7, 40_000


def tree_epsilon(z, rounds, period, delta, accountant="pld"):
    return ftrl_epsilon(z, tree_sensitivity(rounds, period), delta, accountant)


def _stage(noise=SEEDED, z=Z):
    return TreeNoiseStage(ClipStage(S, 4.0), z, noise)


def _prefix_noises(stage, rounds, dim=DIM):
    """``n_t`` for t = 1..rounds: the running sum of the stage's increments on zero sums."""
    total, out = torch.zeros(dim), []
    for t in range(1, rounds + 1):
        released = stage.server(t, ServerAggregate(torch.zeros(dim), 1.0, ()))
        total = total + released.sum
        out.append(total.clone())
    return out


def _brute_sensitivity(rounds, participations):
    """sqrt(sum over complete dyadic nodes of (participations inside)^2)."""
    total, width = 0, 1
    while width <= rounds:
        for start in range(0, rounds - width + 1, width):
            total += sum(start < p <= start + width for p in participations) ** 2
        width *= 2
    return math.sqrt(total)


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 7, 8, 100, 1000])
def test_one_participation_has_the_sensitivity_of_the_trees_levels(rounds):
    """dp-accounting's tree event's depth: ceil(log2(T + 1)) = floor(log2 T) + 1."""
    assert tree_sensitivity(rounds, rounds) ** 2 == pytest.approx(math.ceil(math.log2(rounds + 1)))


@pytest.mark.parametrize(("rounds", "period"), [(7, 1), (8, 1), (12, 3), (16, 5), (9, 2)])
def test_repeated_participation_counts_every_node_a_client_is_in(rounds, period):
    worst = max(_brute_sensitivity(rounds, range(b, rounds + 1, period))
                for b in range(1, period + 1))
    assert tree_sensitivity(rounds, period) == pytest.approx(worst, rel=1e-12)


@pytest.mark.parametrize(("z", "rounds", "period"), [(1.0, 16, 16), (2.5, 100, 100),
                                                     (4.0, 20, 4), (20.0, 50, 1)])
def test_epsilon_is_dp_accountings_pld_and_exact_gaussian_for_the_trees_sensitivity(
        z, rounds, period):
    delta = 1e-5
    ours = tree_epsilon(z, rounds, period, delta)
    effective = z / tree_sensitivity(rounds, period)
    assert ours == pytest.approx(pld_epsilon(effective, 1.0, 1, delta), rel=0.02)
    assert ours == pytest.approx(exact_gaussian_epsilon(effective, 1, delta), rel=0.02)


@pytest.mark.parametrize(("z", "rounds"), [(1.0, 16), (3.0, 100), (8.0, 1000)])
def test_one_participation_is_dp_accountings_tree_event(z, rounds):
    """dp-accounting accounts SingleEpochTreeAggregationDpEvent with its RDP accountant only
    (REPLACE_SPECIAL: a client's contribution replaced by none): its RDP curve is the
    Gaussian's at z / sqrt(depth), the reduction privfed's PLD epsilon uses, and the RDP
    epsilon bounds the PLD one from above (RDP's conversion is looser)."""
    delta = 1e-5
    relation = dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    tree = rdp_privacy_accountant.RdpAccountant(list(RDP_ORDERS), relation)
    tree.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(z, rounds))
    gaussian = rdp_privacy_accountant.RdpAccountant(list(RDP_ORDERS))
    gaussian.compose(dp_accounting.GaussianDpEvent(z / tree_sensitivity(rounds, rounds)))
    assert tree.get_epsilon(delta) == pytest.approx(gaussian.get_epsilon(delta), rel=1e-9)
    ours = tree_epsilon(z, rounds, rounds, delta)
    assert ours <= tree.get_epsilon(delta)
    assert ours == pytest.approx(tree_epsilon(z, rounds, rounds, delta, "rdp"), rel=0.25)
    assert tree_epsilon(z, rounds, rounds, delta, "rdp") == pytest.approx(
        tree.get_epsilon(delta), rel=0.02)


@pytest.mark.parametrize(("target", "rounds", "period"), [(1.0, 50, 10), (8.0, 30, 1)])
def test_calibrated_noise_reaches_the_target_from_below(target, rounds, period):
    z = calibrate_ftrl_noise(target, 1e-5, tree_sensitivity(rounds, period))
    assert 0.99 * target <= tree_epsilon(z, rounds, period, 1e-5) <= target


@pytest.mark.parametrize("t", [1, 3, 6, 7, 8])
def test_prefix_noise_has_one_node_of_variance_per_set_bit(t):
    """Var(n_t) = popcount(t) (z S)^2 per coordinate; the sample variance of DIM iid
    coordinates has relative std sqrt(2 / DIM), allowed 5 of them."""
    noise = _prefix_noises(_stage(), t)[-1]
    expected = bin(t).count("1") * (Z * S) ** 2
    assert noise.var().item() == pytest.approx(expected, rel=5 * math.sqrt(2 / DIM))
    assert abs(noise.mean().item()) < 5 * math.sqrt(expected / DIM)


def test_prefix_noises_share_their_nodes_across_rounds():
    """Node [1-4] is drawn in round 4 and reused, unchanged, by n_4..n_7; n_7 = n_6 +
    node [7]; n_8 is one fresh node, independent of n_7 (covariance 0 within 5 standard
    errors), while n_6 and n_7 share the nodes [1-4] and [5-6] (covariance 2 (z S)^2)."""
    stage, total, noises, node_4 = _stage(), torch.zeros(DIM), [], None
    for t in range(1, 9):
        total = total + stage.server(t, ServerAggregate(torch.zeros(DIM), 1.0, ())).sum
        noises.append(total.clone())
        if t == 4:
            node_4 = stage.nodes[2].clone()
        if 4 <= t < 8:
            assert torch.equal(stage.nodes[2], node_4)
        assert torch.allclose(stage.prefix_noise(), total, atol=1e-5)
    assert set(stage.nodes) == {3}
    node_7 = noises[6] - noises[5]
    assert node_7.var().item() == pytest.approx((Z * S) ** 2, rel=5 * math.sqrt(2 / DIM))
    shared = (noises[6] * noises[5]).mean().item()  # Var(A (A + B)) = 10 (z S)^4
    assert shared == pytest.approx(2 * (Z * S) ** 2, abs=5 * math.sqrt(10 / DIM) * (Z * S) ** 2)
    fresh = (noises[7] * noises[6]).mean().item()
    assert fresh == pytest.approx(0, abs=5 * math.sqrt(3) * (Z * S) ** 2 / math.sqrt(DIM))


def test_the_released_increments_sum_to_the_noisy_prefix_sum():
    stage = _stage()
    generator = torch.Generator().manual_seed(0)
    sums = [torch.randn(50, generator=generator) for _ in range(6)]
    released = [stage.server(t, ServerAggregate(x, 1.0, (0,))).sum
                for t, x in enumerate(sums, 1)]
    expected = torch.stack(sums).sum(0) + stage.prefix_noise()
    assert torch.allclose(torch.stack(released).sum(0), expected, atol=1e-5)


def test_a_restored_stage_continues_the_same_tree():
    straight, first = _stage(), _stage()
    _prefix_noises(first, 5, dim=10)
    resumed = _stage()
    resumed.load_server_state(first.server_state())
    expected = _prefix_noises(straight, 9, dim=10)[-1]
    total = first.prefix_noise() + sum(
        resumed.server(t, ServerAggregate(torch.zeros(10), 1.0, ())).sum for t in range(6, 10))
    assert torch.allclose(total, expected, atol=1e-6)
    assert torch.equal(resumed.prefix_noise(), straight.prefix_noise())


def test_a_stage_refuses_rounds_out_of_order_and_a_state_of_other_levels():
    stage = _stage()
    with pytest.raises(ValueError, match="must follow one another: round 2 after 0"):
        stage.server(2, ServerAggregate(torch.zeros(3), 1.0, ()))
    with pytest.raises(ValueError, match="round 3 holds levels \\[0\\], expected \\[0, 1\\]"):
        stage.load_server_state({"round": 3, "nodes": {"0": torch.zeros(3)}})


def test_secure_noise_draws_fresh_nodes():
    a = _prefix_noises(_stage(NoisePolicy(secure=True)), 3, dim=8)[-1]
    b = _prefix_noises(_stage(NoisePolicy(secure=True)), 3, dim=8)[-1]
    assert not torch.equal(a, b)


def test_policy_reports_the_tree_epsilon_of_the_rounds_released():
    policy = FTRLPolicy(noise_multiplier=2.0, sensitivity=lambda t: tree_sensitivity(t, 4),
                        delta=1e-5, noise=SEEDED)
    for t in range(1, 11):
        policy.record_release(t)
    metrics = policy.metrics()
    assert metrics["epsilon"] == pytest.approx(tree_epsilon(2.0, 10, 4, 1e-5))
    assert metrics["epsilon_against"] == "outsider"
    assert metrics["ftrl_sensitivity"] == tree_sensitivity(10, 4)


def test_without_noise_ftrl_is_central_dp_fedavg_and_the_sum_of_the_updates(blobs):
    """z = 0, server lr 1, no momentum: w_t = w_0 + sum of the rounds' mean clipped updates,
    bit for bit the trajectory of central DP-FedAvg without noise."""
    x, y = blobs
    parts = split(x, y, [30] * 4)
    training = LocalTraining(epochs=1, batch_size=8, lr=0.1)
    servers = [private_server(parts, (x, y), PrivacyConfig(mechanism=m, noise_multiplier=0.0,
                                                           clip_norm=0.5),
                              rounds=3, training=training) for m in ("ftrl", "central")]
    initial = servers[0].weights.clone()
    steps = []
    for _ in range(3):
        before = servers[0].weights.clone()
        for server in servers:
            server.run_round()
        steps.append(servers[0].weights - before)
        assert torch.equal(servers[0].weights, servers[1].weights)
    assert torch.allclose(servers[0].weights, initial + torch.stack(steps).sum(0), atol=1e-6)


def test_ftrl_end_to_end_reports_user_level_epsilon(blobs):
    x, y = blobs
    parts = split(x, y, [30] * 4)
    server = private_server(parts, (x, y), PrivacyConfig(mechanism="ftrl", epsilon=4.0),
                            rounds=5)
    history = server.fit(5)
    last = history.rounds[-1].extra
    assert 0.99 * 4.0 <= last["epsilon"] <= 4.0
    # every client in every round: 5 leaves (1^2 each), 2 pairs (2^2), one quadruple (4^2)
    assert last["ftrl_sensitivity"] ** 2 == pytest.approx(5 + 2 * 4 + 16)
    reference = pld_epsilon(last["noise_multiplier"] / math.sqrt(29), 1.0, 1, 1e-5)
    assert last["epsilon"] == pytest.approx(reference, rel=0.02)
    assert last["tree_nodes"] == 2  # 5 = 0b101
    assert np.isfinite(server.weights.numpy()).all()


def test_ftrl_needs_a_public_schedule(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="public schedule"):
        private_server(split(x, y, [30] * 4), (x, y),
                       PrivacyConfig(mechanism="ftrl", noise_multiplier=1.0), rounds=3,
                       fraction=0.5, poisson=True)
