"""Central and distributed user-level DP-FedAvg: the clip and noise stages, end to end."""

import math

import pytest
import torch

from privfed.config.privacy import PrivacyConfig
from privfed.federated import LocalTraining
from privfed.federated.stages import ServerAggregate
from privfed.privacy import AdaptiveClipping, ClipStage, build_privacy
from privfed.privacy.central import _CENTRAL_NOISE_STREAM
from tests.conftest import make_server
from tests.privacy._helpers import SEEDED, central, distributed, private_server, release, split

DIM = 20_000
QK = 8.0  # the expected cohort of the helpers' parameters: q = 0.5, K = 16


def test_central_without_noise_or_clip_is_plain_fedavg_exactly(blobs):
    """z = 0, S = inf, full participation, equal client sizes: FedAvg's n_k weights are
    uniform, and (mean * K) / K with K = qK is the FedAvg mean bit for bit."""
    x, y = blobs
    parts = split(x, y, [30] * 4)
    training = LocalTraining(epochs=1, batch_size=8, lr=0.1)
    config = PrivacyConfig(mechanism="central", noise_multiplier=0.0, clip_norm=math.inf)
    private = private_server(parts, (x, y), config, rounds=3, training=training)
    plain = make_server(parts, (x, y), training=training)
    private.fit(3)
    plain.fit(3)
    assert torch.equal(private.weights, plain.weights)


def test_central_noise_std_is_z_s_over_expected_clients():
    pipeline, _ = central()
    draws = torch.stack([release(pipeline, QK, r, {}, DIM) for r in (1, 2, 3)])
    expected = 1.3 * 0.7 / QK
    assert draws.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(draws.mean().item()) < 5 * expected / math.sqrt(draws.numel())


def test_central_release_is_the_noisy_sum_over_qk_and_the_clip_norm_follows_its_bit():
    """The pipeline gives DP-FedAvg's formula: ``(sum of clipped updates + N(0, (z_u S)^2))
    / qK`` with the round's seeded noise, and ``S <- S exp(-eta (b - gamma))`` with
    ``b = (bit sum + N(0, sigma_b^2)) / qK + 1/2`` (Andrew et al. 2021)."""
    adaptive = AdaptiveClipping(target_quantile=0.5, clip_lr=0.2, count_stddev=2.0)
    pipeline, _ = central(adaptive=adaptive, noise_multiplier=1.0)
    clip, noise = pipeline.stages
    updates = {0: torch.tensor([3.0, 4.0, 0.0]), 1: torch.tensor([0.1, 0.2, -0.2]),
               2: torch.tensor([0.0, -2.0, 0.0])}
    s = 0.7
    for r in (1, 2, 3):
        clipped = [d * min(1.0, s / float(d.norm())) for d in updates.values()]
        bits = sum(float(d.norm() <= s) - 0.5 for d in updates.values())
        std = torch.tensor([noise.update_noise * s] * 3 + [2.0])
        draws = SEEDED.source(_CENTRAL_NOISE_STREAM, r).normal(std, 4)
        step = release(pipeline, QK, r, updates)
        torch.testing.assert_close(step, (torch.stack(clipped).sum(0) + draws[:3]) / QK)
        b = (bits + float(draws[3])) / QK + 0.5
        s *= math.exp(-0.2 * (b - 0.5))
        assert clip.clip_norm == pytest.approx(s, rel=1e-6)
        assert pipeline.metrics()["clip_norm"] == clip.clip_norm


def test_distributed_sum_has_the_noise_of_central_dp():
    """K = K_min clients each add a share; the sum's noise std equals central DP's."""
    k = 8
    shares, _ = distributed(k, DIM)
    reference, _ = central()
    rounds = (1, 2, 3)
    zeros = {c: torch.zeros(DIM) for c in range(k)}
    ours = torch.stack([release(shares, QK, r, zeros) for r in rounds])
    theirs = torch.stack([release(reference, QK, r, {}, DIM) for r in rounds])
    assert ours.std().item() == pytest.approx(theirs.std().item(), rel=0.05)
    # one client's message alone is far less noisy than the sum
    alone = shares.client(1, 0, torch.zeros(DIM)).std().item()
    assert alone == pytest.approx(1.3 * 0.7 / math.sqrt(k), rel=0.05)


def test_distributed_discards_a_round_with_too_few_survivors():
    pipeline, policy = distributed(3, 4)
    policy.record_participation(1, [0, 1])
    step = release(pipeline, QK, 1, {c: torch.ones(4) for c in range(2)})
    policy.record_release(1)
    assert torch.equal(step, torch.zeros(4))
    metrics = {**policy.metrics(), **pipeline.metrics()}
    assert metrics["discarded_rounds"] == 1 and metrics["epsilon"] > 0


def test_a_discarded_round_strips_the_clip_bit_but_keeps_the_clip_norm():
    adaptive = AdaptiveClipping(target_quantile=0.5, clip_lr=0.2, count_stddev=2.0)
    pipeline, _ = distributed(3, 4, adaptive=adaptive, noise_multiplier=1.0)
    clip = pipeline.stages[0]
    released = pipeline.server(1, ServerAggregate(torch.full((5,), 7.0), 1.0, (0, 1)))
    assert released.discarded and torch.equal(released.sum, torch.zeros(4))
    assert clip.clip_norm == 0.7
    release(pipeline, QK, 2, {c: torch.ones(4) for c in range(3)})  # enough: S moves
    assert clip.clip_norm != 0.7


def test_skellam_shares_are_on_the_lattice_and_sum_to_central_std():
    step = 0.7 / 2**10
    k = 4
    pipeline, policy = distributed(k, DIM, noise_kind="skellam", quantization_step=step)
    policy.record_participation(1, range(k))
    shares = [pipeline.client(1, c, torch.full((DIM,), 0.001)) for c in range(k)]
    for share in shares:
        units = share.double() / step
        assert torch.allclose(units, units.round(), atol=1e-6)
    total = torch.stack(shares).sum(0) - k * 0.001
    assert total.std().item() == pytest.approx(1.3 * 0.7, rel=0.05)
    out = pipeline.server(1, ServerAggregate(torch.stack(shares).sum(0), 1.0, tuple(range(k))))
    assert out.sum.shape == (DIM,) and not out.discarded
    policy.record_release(1)
    assert policy.metrics()["epsilon"] > 0


def test_user_level_dp_under_fixed_size_cohorts_accounts_replace_one():
    parts = build_privacy(PrivacyConfig(mechanism="central", noise_multiplier=1.0),
                          num_clients=4, sample_rate=0.5, poisson=False, num_params=10,
                          rounds=2, training=LocalTraining(), noise=SEEDED, reference_size=30,
                          module=torch.nn.Linear(2, 2))
    assert parts.policy.participation.scheme == "fixed"
    assert parts.policy.metrics()["neighbouring"] == "replace one client"


def test_poisson_round_without_clients_still_gets_noise():
    pipeline, _ = central()
    assert release(pipeline, QK, 1, {}, 100).std().item() > 0


def test_adaptive_clipping_tracks_the_target_quantile():
    """Noise-free: updates of norm 1..10; S moves to about the median (5-6)."""
    pipeline, _ = central(noise_multiplier=0.0, clip_norm=0.1, sample_rate=1.0,
                          num_clients=10,
                          adaptive=AdaptiveClipping(target_quantile=0.5, clip_lr=0.2,
                                                    count_stddev=0.5))
    assert pipeline.output_length(2) == 3  # the clip bit travels as one extra coordinate
    for r in range(1, 80):
        step = release(pipeline, 10.0, r, {c: torch.tensor([float(c + 1), 0.0])
                                           for c in range(10)})
        assert step.shape == (2,)
    assert 4.5 < pipeline.stages[0].clip_norm < 6.5


def test_a_client_clips_with_the_broadcast_clip_norm():
    """The server's S after adaptation reaches a client's own clip stage."""
    server, _ = central(noise_multiplier=0.0, clip_norm=0.1, sample_rate=1.0, num_clients=2,
                        adaptive=AdaptiveClipping(0.5, 0.2, 0.5))
    release(server, 2.0, 1, {0: torch.tensor([5.0, 0.0]), 1: torch.tensor([0.0, 5.0])})
    node, _ = central(noise_multiplier=0.0, clip_norm=0.1, sample_rate=1.0, num_clients=2,
                      adaptive=AdaptiveClipping(0.5, 0.2, 0.5))
    node.load_broadcast(server.broadcast())
    s = server.stages[0].clip_norm
    assert server.broadcast() == {"clip": {"clip_norm": s}} and s > 0.1
    torch.testing.assert_close(node.client(2, 0, torch.tensor([5.0, 0.0])),
                               torch.tensor([s, 0.0, -0.5]))


@pytest.mark.parametrize("lie", [0.0, -1.0, float("nan"), float("inf"), None])
def test_a_client_refuses_a_clip_norm_no_honest_server_broadcasts(lie):
    """From the client's seat: a lying server's S of inf would stop the clipping (and the
    sensitivity the noise is calibrated for); 0, negative, NaN or missing is refused too."""
    node, _ = central(noise_multiplier=1.0, clip_norm=0.1, sample_rate=1.0, num_clients=2,
                      adaptive=AdaptiveClipping(0.5, 0.2, 2.0))
    values = {} if lie is None else {"clip_norm": lie}
    with pytest.raises(ValueError, match="broadcast privacy.clip_norm must be > 0 and finite"):
        node.load_broadcast({"clip": values})
    assert node.stages[0].clip_norm == 0.1  # unchanged
    unclipped = ClipStage(math.inf, 2.0)  # configured without a clip (noise 0): inf is honest
    unclipped.load_broadcast({"clip_norm": math.inf})
    assert unclipped.clip_norm == math.inf


def test_clip_stage_without_adaptation_changes_no_aggregate():
    clip = ClipStage(1.0, 4.0)
    aggregate = ServerAggregate(torch.ones(3), 1.0, (0, 1))
    assert clip.server(1, aggregate) is aggregate and clip.output_length(3) == 3
    with pytest.raises(ValueError, match=r"privacy\.clip_norm must be in \(0, inf\], got 0"):
        ClipStage(0.0, 4.0)


def test_user_level_round_metrics_keep_their_keys():
    pipeline, policy = central()
    assert set({**policy.metrics(), **pipeline.metrics()}) == {
        "epsilon", "epsilon_against", "accounting", "neighbouring", "epsilon_outsider",
        "delta", "noise_multiplier", "clip_norm", "noise"}
    pipeline, policy = distributed(2, 4)
    assert set({**policy.metrics(), **pipeline.metrics()}) == {
        "epsilon", "epsilon_against", "accounting", "neighbouring", "epsilon_outsider",
        "accounting_outsider", "neighbouring_outsider", "delta", "noise_multiplier",
        "clip_norm", "noise", "discarded_rounds", "epsilon_per_client"}


def test_adaptive_clipping_end_to_end_reports_clip_norm(blobs):
    x, y = blobs
    config = PrivacyConfig(mechanism="central", noise_multiplier=0.5, clip_norm=0.01,
                           adaptive_clipping=True, clipped_count_stddev=1.0)
    server = private_server(split(x, y, [12] * 10), (x, y), config, rounds=5,
                            training=LocalTraining(1, 4, 0.1))
    history = server.fit(5)
    clips = [r.extra["clip_norm"] for r in history.rounds]
    assert clips[-1] > clips[0] > 0.01  # all updates were clipped: S grows
    assert history.rounds[-1].extra["epsilon"] > history.rounds[0].extra["epsilon"]
