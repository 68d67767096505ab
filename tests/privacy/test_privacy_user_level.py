"""Central and distributed user-level DP-FedAvg."""

import math

import pytest
import torch

from privfed.federated import ClientUpdate, LocalTraining
from privfed.privacy import AdaptiveClipping, CentralDP, DistributedDP, NoisePolicy, PrivacyConfig
from tests.conftest import make_server
from tests.privacy._helpers import private_server, split

DIM = 20_000


def _common(**overrides):
    params = dict(noise_multiplier=1.3, clip_norm=0.7, sample_rate=0.5, num_clients=16,
                  delta=1e-5, noise=NoisePolicy(secure=False, seed=1))
    return {**params, **overrides}


def _update(cid, delta):
    return ClientUpdate(cid=cid, delta=delta, num_samples=10, train_loss=0.0, steps=1)


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
    mech = CentralDP(**_common())
    draws = torch.stack([mech.server_finalize(r, torch.zeros(DIM), 0.0, ()) for r in (1, 2, 3)])
    expected = 1.3 * 0.7 / (0.5 * 16)
    assert draws.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(draws.mean().item()) < 5 * expected / math.sqrt(draws.numel())


def test_distributed_sum_has_the_noise_of_central_dp():
    """K = K_min clients each add a share; the sum's noise std equals central DP's."""
    k = 8
    dist = DistributedDP(min_surviving_clients=k, dim=DIM, **_common())
    central = CentralDP(**_common())
    rounds = (1, 2, 3)
    ours = []
    for r in rounds:
        shares = [dist.client_transform(r, _update(c, torch.zeros(DIM))) for c in range(k)]
        total = torch.stack(shares).sum(0)
        ours.append(dist.server_finalize(r, total / k, float(k), tuple(range(k))))
    reference = torch.stack([central.server_finalize(r, torch.zeros(DIM), 0.0, ()) for r in rounds])
    assert torch.stack(ours).std().item() == pytest.approx(reference.std().item(), rel=0.05)
    # one client's message alone is far less noisy than the sum
    alone = dist.client_transform(1, _update(0, torch.zeros(DIM))).std().item()
    assert alone == pytest.approx(1.3 * 0.7 / math.sqrt(k), rel=0.05)


def test_distributed_discards_a_round_with_too_few_survivors():
    dist = DistributedDP(min_surviving_clients=3, dim=4, **_common())
    dist.record_participation(1, [0, 1])
    shares = [dist.client_transform(1, _update(c, torch.ones(4))) for c in range(2)]
    step = dist.server_finalize(1, torch.stack(shares).mean(0), 2.0, (0, 1))
    assert torch.equal(step, torch.zeros(4))
    metrics = dist.round_metrics(1, [0, 1])
    assert metrics["discarded_rounds"] == 1 and metrics["epsilon"] > 0


def test_skellam_shares_are_on_the_lattice_and_sum_to_central_std():
    step = 0.7 / 2**10
    k = 4
    dist = DistributedDP(min_surviving_clients=k, noise_kind="skellam", dim=DIM,
                         quantization_step=step, **_common())
    dist.record_participation(1, range(k))
    shares = [dist.client_transform(1, _update(c, torch.full((DIM,), 0.001))) for c in range(k)]
    for share in shares:
        units = share.double() / step
        assert torch.allclose(units, units.round(), atol=1e-6)
    total = torch.stack(shares).sum(0) - k * 0.001
    assert total.std().item() == pytest.approx(1.3 * 0.7, rel=0.05)
    out = dist.server_finalize(1, torch.stack(shares).mean(0), float(k), tuple(range(k)))
    assert out.shape == (DIM,)
    assert dist.round_metrics(1, [])["epsilon"] > 0


def test_user_level_dp_needs_poisson_client_sampling(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="Poisson client sampling"):
        private_server(split(x, y, [30] * 4), (x, y),
                       PrivacyConfig(mechanism="central", noise_multiplier=1.0), rounds=2,
                       fraction=0.5)


def test_poisson_round_without_clients_still_gets_noise():
    mech = CentralDP(**_common())
    step = mech.server_finalize(1, torch.zeros(100), 0.0, ())
    assert step.std().item() > 0


def test_adaptive_clipping_tracks_the_target_quantile():
    """Noise-free: updates of norm 1..10; S moves to about the median (5-6)."""
    mech = CentralDP(**_common(noise_multiplier=0.0, clip_norm=0.1, sample_rate=1.0,
                               num_clients=10),
                     adaptive=AdaptiveClipping(target_quantile=0.5, clip_lr=0.2,
                                               count_stddev=0.5))
    for r in range(1, 80):
        vectors = [mech.client_transform(r, _update(c, torch.tensor([float(c + 1), 0.0])))
                   for c in range(10)]
        assert all(len(v) == 3 for v in vectors)  # the clip bit travels as one extra coordinate
        step = mech.server_finalize(r, torch.stack(vectors).mean(0), 10.0, tuple(range(10)))
        assert step.shape == (2,)
    assert 4.5 < mech.clip_norm < 6.5


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
