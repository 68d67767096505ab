"""Local DP-SGD through Opacus: per-client accounting across rounds, and the plumbing."""

import math

import dp_accounting
import pytest
import torch
from dp_accounting import rdp
from torch import nn

from privfed.federated import Client, ClientSampler, LocalTraining, bind_flat_parameters
from privfed.models import build_model
from privfed.privacy import (
    DPClient,
    DPWorkspace,
    PrivacyConfig,
    build_privacy,
    local_sample_rate,
    local_steps_per_round,
)
from tests.privacy._helpers import private_server, split

TRAINING = LocalTraining(epochs=1, batch_size=8, lr=0.1)


def _reference(sigma, rate, steps, delta):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    return rdp.RdpAccountant().compose(event).get_epsilon(delta)


def test_epsilon_grows_when_sampled_flat_otherwise_and_matches_dp_accounting(blobs):
    x, y = blobs
    config = PrivacyConfig(mechanism="local", noise_multiplier=1.2, delta=1e-3)
    rounds = 6
    server = private_server(split(x, y, [30] * 4), (x, y), config, rounds=rounds,
                            training=TRAINING, fraction=0.5)
    history = server.fit(rounds)
    taken = {cid: 0 for cid in range(4)}
    previous = [0.0] * 4
    for record in history.rounds:
        now = record.extra["epsilon_per_client"]
        for cid in range(4):
            if cid in record.clients:
                taken[cid] += 1
                assert now[cid] > previous[cid]
            else:
                assert now[cid] == previous[cid]
        assert record.extra["epsilon"] == max(now)
        previous = now
    assert 0 < min(taken.values()) < rounds  # some client sat out some round
    steps_per_round = local_steps_per_round(30, TRAINING)
    for cid, r in taken.items():
        expected = _reference(1.2, local_sample_rate(30, 8), r * steps_per_round, 1e-3)
        assert previous[cid] == pytest.approx(expected, rel=0.02)


def test_target_epsilon_is_reached_but_not_exceeded(blobs):
    x, y = blobs
    config = PrivacyConfig(mechanism="local", epsilon=3.0, delta=1e-3)
    server = private_server(split(x, y, [40, 40, 40]), (x, y), config, rounds=4,
                            training=TRAINING)
    final = server.fit(4).rounds[-1].extra["epsilon_per_client"]
    for eps in final:
        assert 0.9 * 3.0 <= eps <= 3.0


def test_tiny_client_with_empty_poisson_batches_trains(blobs):
    x, y = blobs
    workspace = bind_flat_parameters(build_model("mlp", (6,), 3, seed=0, hidden=(8,)))
    dp = DPWorkspace.of(workspace)
    start = workspace.data.clone()
    for batch_size, expected_steps in ((64, 2), (1, 10)):  # q = 1, then q = 0.2
        client = DPClient(0, x[:5], y[:5], dp_workspace=dp, noise_multiplier=1.0,
                          max_grad_norm=1.0)
        update = client.fit(workspace, start, LocalTraining(2, batch_size, 0.1),
                            torch.Generator().manual_seed(3))
        assert update.steps == expected_steps
        assert torch.isfinite(update.delta).all() and update.delta.abs().sum() > 0
        assert client.accountant.history == [(1.0, min(1.0, batch_size / 5), expected_steps)]


def test_hooks_once_no_module_prefix_and_flat_grads_restored(blobs):
    x, y = blobs
    config = PrivacyConfig(mechanism="local", noise_multiplier=1.0)
    server = private_server(split(x, y, [60, 60]), (x, y), config, rounds=2, training=TRAINING)
    module = server.workspace.module
    server.fit(2)
    dp = DPWorkspace.of(server.workspace)
    assert dp is server.clients[0].dp_workspace
    with dp.active(1.0):  # one forward and one backward hook per Linear layer, once
        assert sum(len(m._forward_hooks) for m in module.modules()) == 2
        assert sum(len(m._backward_hooks) for m in module.modules()) == 2
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in module.modules()) == 0
    with pytest.raises(ValueError, match="already has DP hooks"):
        DPWorkspace(server.workspace)
    names = list(module.state_dict()) + list(server.workspace.spec.names)
    assert not any("_module" in n for n in names)
    workspace = server.workspace
    flat = workspace.grad.untyped_storage().data_ptr()
    for param in module.parameters():
        assert param.grad.untyped_storage().data_ptr() == flat
    # A plain client can still train in the same workspace afterwards.
    plain = Client(0, x, y).fit(workspace, server.weights, TRAINING, torch.Generator())
    assert torch.isfinite(plain.delta).all() and plain.delta.abs().sum() > 0


def test_model_opacus_cannot_train_is_rejected_with_the_layer_named(blobs):
    x, y = blobs
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"BatchNorm.*ModuleValidator\.fix"):
        build_privacy(
            PrivacyConfig(mechanism="local", noise_multiplier=1.0),
            clients=[Client(0, x, y)], sampler=ClientSampler(1, 1.0, 0),
            workspace=bind_flat_parameters(model), rounds=1, training=TRAINING, seed=0,
        )


def test_delta_above_one_over_n_warns(blobs):
    x, y = blobs
    with pytest.warns(UserWarning, match=r"privacy\.delta = 0\.1 >= 1/n"):
        private_server(split(x, y, [20, 20]), (x, y),
                       PrivacyConfig(mechanism="local", noise_multiplier=1.0, delta=0.1),
                       rounds=1)


def test_secure_mode_without_torchcsprng_is_a_clear_error(blobs):
    try:
        import torchcsprng  # noqa: F401
    except ImportError:
        x, y = blobs
        with pytest.raises(ValueError, match=r"privacy\.secure_mode.*torchcsprng"):
            private_server(split(x, y, [60, 60]), (x, y),
                           PrivacyConfig(mechanism="local", noise_multiplier=1.0,
                                         secure_mode=True), rounds=1)
    else:
        pytest.skip("torchcsprng is installed")


def test_noise_free_dp_sgd_with_huge_clip_is_plain_poisson_sgd(blobs):
    """sigma = 0 and C = inf-like: each step is lr * (sum of gradients) / E[B]."""
    x, y = blobs
    workspace = bind_flat_parameters(build_model("mlp", (6,), 3, seed=0, hidden=(8,)))
    client = DPClient(0, x[:40], y[:40], dp_workspace=DPWorkspace.of(workspace),
                      noise_multiplier=0.0, max_grad_norm=1e9)
    start = workspace.data.clone()
    update = client.fit(workspace, start, LocalTraining(1, 40, 0.5), torch.Generator())
    assert update.steps == 1  # q = 1: the whole data in one batch
    reference = build_model("mlp", (6,), 3, seed=0, hidden=(8,))
    nn.functional.cross_entropy(reference(x[:40]), y[:40], reduction="sum").backward()
    grad = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(update.delta, -0.5 * grad / 40, rtol=1e-4, atol=1e-6)
    assert math.isinf(client.epsilon(1e-5))


def test_client_report_carries_the_accountant_to_a_fresh_federation():
    """What a distributed engine keeps on a node between rounds: restoring a client's report
    into a freshly built federation gives back its epsilon (and training then adds to it)."""
    from privfed.config import load_config
    from privfed.experiment import build_simulation

    cfg = load_config(None, ["data.num_clients=3", "model.hidden=[8]",
                             "privacy.mechanism='local'", "privacy.noise_multiplier=1.0"])
    trained = build_simulation(cfg).server
    trained.run_round()
    report = trained.mechanism.client_report(1)
    assert report["accountant_history"]
    fresh = build_simulation(cfg).server
    assert fresh.mechanism.clients[1].epsilon(1e-5) == 0.0
    fresh.mechanism.load_client_report(1, report)
    assert fresh.mechanism.clients[1].epsilon(1e-5) == trained.mechanism.clients[1].epsilon(1e-5)
    fresh.mechanism.load_client_report(1, {})
    assert fresh.mechanism.clients[1].epsilon(1e-5) == 0.0
