"""Local DP-SGD (fast path and Opacus): public parameters, per-client ledgers, budgets, plumbing."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from privfed.config.privacy import PrivacyConfig
from privfed.federated import Client, LocalTraining, bind_flat_parameters
from privfed.federated.trainer import SGDTrainer
from privfed.models import build_model
from privfed.privacy import (
    DPSGDParams,
    DPSGDTrainer,
    DPWorkspace,
    NoisePolicy,
    RecordLevelPolicy,
    build_privacy,
    default_sample_rate,
    gaussian_epsilon,
    local_steps_per_round,
)
from tests.privacy._helpers import private_server, split
from tests.privacy._reference import pld_epsilon

TRAINING = LocalTraining(epochs=1, batch_size=8, lr=0.1)
SEEDED = NoisePolicy(secure=False, seed=0)


def _mlp():
    return bind_flat_parameters(build_model("mlp", (6,), 3, seed=0, hidden=(8,)))


def _build_local(config: PrivacyConfig, module, *, num_clients=1, training=TRAINING,
                 reference_size=32):
    return build_privacy(config, num_clients=num_clients, sample_rate=1.0, poisson=False,
                         num_params=sum(p.numel() for p in module.parameters()), rounds=1,
                         training=training, noise=SEEDED, reference_size=reference_size,
                         module=module)


def test_epsilon_grows_when_sampled_flat_otherwise_and_matches_dp_accounting(blobs):
    x, y = blobs
    config = PrivacyConfig(mechanism="local", noise_multiplier=1.2, delta=1e-3)
    rounds = 6
    server = private_server(split(x, y, [30] * 4), (x, y), config, rounds=rounds,
                            training=TRAINING, fraction=0.5)
    history = server.fit(rounds)
    taken = dict.fromkeys(range(4), 0)
    previous = [0.0] * 4
    for record in history.rounds:
        now = record.extra["epsilon_per_client"]
        for client_id in range(4):
            if client_id in record.clients:
                taken[client_id] += 1
                assert now[client_id] > previous[client_id]
            else:
                assert now[client_id] == previous[client_id]
        assert record.extra["epsilon"] == max(now)
        assert record.extra["epsilon_against"] == "server"
        previous = now
    assert 0 < min(taken.values()) < rounds  # some client sat out some round
    rate = default_sample_rate(8, 30)
    steps = local_steps_per_round(rate, 1)
    for client_id, r in taken.items():
        reference = pld_epsilon(1.2, rate, r * steps, 1e-3)
        assert reference <= previous[client_id] <= 1.01 * reference


def test_the_policy_charges_only_the_clients_that_take_part():
    """The record-level ledger, driven as the server drives it: a client's epsilon grows in
    the rounds it takes part in (by dp-accounting's PLD), and only then."""
    params = DPSGDParams(1.2, 1.0, 0.25, 4, 8.0)
    policy = RecordLevelPolicy(params, num_clients=3, delta=1e-3, accountant="pld",
                               budget=None, noise=SEEDED)
    for r, cohort in enumerate([[0, 1], [0], [0, 2], [0]], start=1):
        policy.record_participation(r, cohort)
        policy.record_participation(r, cohort)  # the same release twice counts once
        policy.record_release(r)
    metrics = policy.metrics()
    for client_id, taken in enumerate([4, 1, 1]):
        reference = pld_epsilon(1.2, 0.25, taken * 4, 1e-3)
        assert reference <= metrics["epsilon_per_client"][client_id] <= 1.01 * reference
    assert metrics["epsilon"] == max(metrics["epsilon_per_client"])
    assert metrics["epsilon_against"] == "server" and metrics["delta"] == 1e-3
    assert set(metrics) == {"epsilon", "epsilon_against", "accounting", "neighbouring",
                            "epsilon_per_client", "delta", "noise"}
    assert policy.client_ledger(1) == {"participations": 1}
    policy.merge_client_ledger(1, {"participations": 3})
    policy.merge_client_ledger(1, {"participations": 2})
    assert policy.client_ledger(1) == {"participations": 3}
    assert not policy.releases_statistics and policy.noise_multiplier == 1.2


def test_a_client_stops_at_its_budget_and_the_round_loop_when_all_have():
    params = DPSGDParams(1.0, 1.0, 0.5, 2, 8.0)
    budget = gaussian_epsilon([params.release(3)], 1e-5)  # three rounds fit, not four
    policy = RecordLevelPolicy(params, num_clients=2, delta=1e-5, accountant="pld",
                               budget=budget, noise=SEEDED)
    for r in range(1, 4):
        assert policy.may_participate(0)
        policy.record_participation(r, [0])
    assert not policy.may_participate(0) and policy.may_participate(1)
    assert policy.round_allowed()  # client 1 can still afford a round
    for r in range(4, 7):
        policy.record_participation(r, [1])
    assert not policy.round_allowed()
    assert max(policy.client_spend.epsilons()) <= budget


def test_target_epsilon_is_reached_but_not_exceeded_with_full_participation(blobs):
    x, y = blobs
    config = PrivacyConfig(mechanism="local", epsilon=3.0, delta=1e-3)
    server = private_server(split(x, y, [40, 40, 40]), (x, y), config, rounds=4,
                            training=TRAINING)
    final = server.fit(4).rounds[-1].extra["epsilon_per_client"]
    for eps in final:
        assert 0.99 * 3.0 <= eps <= 3.0


def test_target_epsilon_is_a_cap_when_clients_are_sampled(blobs):
    """Fault 4: calibrating for the expected participation let a client sampled more often
    end above the target (2.68 for a target of 2). Now no client exceeds it: one whose next
    round would exceed it sits out, and the record says how many did."""
    x, y = blobs
    config = PrivacyConfig(mechanism="local", epsilon=2.0, delta=1e-3)
    server = private_server(split(x, y, [10] * 12), (x, y), config, rounds=20,
                            training=TRAINING, fraction=0.3)
    history = server.fit(40)  # twice the rounds planned: many clients hit the budget
    final = history.rounds[-1].extra["epsilon_per_client"]
    policy = server.policy
    for client_id, eps in enumerate(final):
        assert eps <= 2.0
        count = int(policy.client_spend.counts[client_id])
        reference = pld_epsilon(policy.params.noise_multiplier, policy.params.sample_rate,
                                count * policy.params.steps_per_round, 1e-3)
        assert reference <= 2.0
    assert sum(r.extra.get("budget_exhausted", 0) for r in history.rounds) > 0
    assert max(final) >= 0.99 * 2.0


def test_fedbuff_clients_stop_at_their_budget(blobs):
    """FedBuff: fast clients send more updates; none goes past the budget, and training
    stops (with the reason recorded) when no client can afford another update."""
    from privfed.config import load_config
    from privfed.experiment import build_simulation

    cfg = load_config(None, [
        "data.num_clients=4", "model.hidden=[8]", "federation.rounds=40",
        "federation.buffer_size=2", "federation.concurrency=3", "federation.latency_spread=1.0",
        "privacy.mechanism='local'", "privacy.epsilon=1.0", "privacy.delta=1e-3",
    ])
    server = build_simulation(cfg).server
    history = server.fit(cfg.federation.rounds)
    assert max(server.policy.client_spend.epsilons()) <= 1.0
    sent = server.schedule.sent
    assert sent.total() > 0
    for client_id, count in sent.items():
        assert count == server.policy.client_spend.counts[client_id]
    if len(history.rounds) < cfg.federation.rounds:
        assert "budget" in history.stop_reason


# ---------------------------------------------------------------------- fault 3
def _norms(x: torch.Tensor, y: torch.Tensor, params: DPSGDParams, trials: int) -> np.ndarray:
    workspace = bind_flat_parameters(build_model("mlp", (6,), 3, seed=0, hidden=(4,)))
    start = workspace.data.clone()
    trainer = DPSGDTrainer(params, LocalTraining(1, 32, 1.0), SEEDED)
    client = Client(0, x, y)
    norms = []
    for t in range(trials):
        update = trainer.fit(client, workspace, start, torch.Generator().manual_seed(t))
        norms.append(float(update.delta.norm()))
    return np.array(norms)


def test_a_clients_record_count_is_not_revealed_by_its_update(blobs):
    """Fault 3: q = min(1, B/n_k), floor(1/q) steps and the normaliser q n_k depended on the
    client's private count, so a client with 3 records and the same client with 2 (B = 32,
    sigma = 10) were told apart from the update norm in 200 of 200 trials against a claimed
    epsilon of 0.375. Now every parameter comes from public values: the factory gives the
    same parameters for both datasets, and the best norm threshold is no better than the
    epsilon allows."""
    x, y = blobs
    config = PrivacyConfig(mechanism="local", noise_multiplier=10.0, max_grad_norm=1.0)
    training = LocalTraining(1, 32, 1.0)
    params = []
    for n in (3, 2):
        module = build_model("mlp", (6,), 3, seed=0, hidden=(4,))
        parts = _build_local(config, module, training=training)
        params.append(parts.trainer.params)
        assert parts.weighting.weight(n) == 1.0  # no count in the clear either
        assert not parts.policy.releases_statistics
    assert params[0] == params[1]
    with_record = _norms(x[:3], y[:3], params[0], 200)
    without = _norms(x[:2], y[:2], params[0], 200)
    labels = np.r_[np.ones(200), np.zeros(200)]
    scores = np.r_[with_record, without]
    accuracy = max(np.mean((scores > t) == labels) for t in scores)
    accuracy = max(accuracy, max(np.mean((scores <= t) == labels) for t in scores))
    eps = pld_epsilon(10.0, params[0].sample_rate, params[0].steps_per_round, 1e-5)
    bound = math.exp(eps) / (1 + math.exp(eps))  # best balanced accuracy at (eps, 0)-DP
    assert eps < 0.5
    assert accuracy <= bound + 1e-5 + 0.07  # 0.07: the max over thresholds of 400 draws


def test_mechanism_parameters_ignore_records_a_client_gains(blobs):
    """Through the whole build: canaries added to one client change no public parameter."""
    from privfed.config import load_config
    from privfed.experiment import build_simulation

    cfg = load_config(None, ["data.num_clients=4", "model.hidden=[8]",
                             "privacy.mechanism='local'", "privacy.epsilon=2.0"])
    plain = build_simulation(cfg).server
    extra = {0: (np.zeros((50, 1, 8, 8), np.float32), np.zeros(50, np.int64))}
    grown = build_simulation(cfg, extra=extra).server
    assert grown.engine.clients[0].num_samples == plain.engine.clients[0].num_samples + 50
    assert grown.engine.trainer.params == plain.engine.trainer.params
    assert grown.weighting.weight(50) == plain.weighting.weight(0) == 1.0


# ---------------------------------------------------------------------- plumbing
def test_tiny_client_with_empty_poisson_batches_trains(blobs):
    x, y = blobs
    workspace = _mlp()
    start = workspace.data.clone()
    for rate, steps in ((1.0, 2), (0.2, 10)):
        params = DPSGDParams(1.0, 1.0, rate, steps, 8.0)
        update = DPSGDTrainer(params, LocalTraining(2, 8, 0.1), SEEDED).fit(
            Client(0, x[:5], y[:5]), workspace, start, torch.Generator().manual_seed(3))
        assert update.steps == steps
        assert torch.isfinite(update.delta).all() and update.delta.abs().sum() > 0


def test_every_batch_empty_gives_a_nan_loss(blobs):
    x, y = blobs
    workspace = _mlp()
    params = DPSGDParams(1.0, 1.0, 1e-9, 3, 8.0)
    update = DPSGDTrainer(params, TRAINING, SEEDED).fit(
        Client(0, x[:2], y[:2]), workspace, workspace.data.clone(), torch.Generator())
    assert math.isnan(update.train_loss)


def test_local_dp_releases_no_training_loss(blobs):
    x, y = blobs
    server = private_server(split(x, y, [40, 40]), (x, y),
                            PrivacyConfig(mechanism="local", noise_multiplier=1.0), rounds=1)
    assert server.fit(1).rounds[0].train_loss is None  # a statistic of private records


def test_hooks_once_no_module_prefix_and_flat_grads_restored(blobs):
    x, y = blobs
    workspace = _mlp()
    module = workspace.module
    trainer = DPSGDTrainer(DPSGDParams(1.0, 1.0, 0.2, 3, 8.0), TRAINING, SEEDED,
                           backend="opacus")  # the fast path attaches no Opacus hooks
    assert module not in _hooked()  # attached on the first DP-SGD step, not before
    for client_id in range(2):
        trainer.fit(Client(client_id, x, y), workspace, workspace.data.clone(), torch.Generator())
    dp = DPWorkspace.of(workspace)
    assert dp is DPWorkspace.of(workspace)
    with dp.active(1.0):  # one forward and one backward hook per Linear layer, once
        assert sum(len(m._forward_hooks) for m in module.modules()) == 2
        assert sum(len(m._backward_hooks) for m in module.modules()) == 2
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in module.modules()) == 0
    with pytest.raises(ValueError, match="already has DP hooks"):
        DPWorkspace(workspace)
    names = list(module.state_dict()) + list(workspace.spec.names)
    assert not any("_module" in n for n in names)
    flat = workspace.grad.untyped_storage().data_ptr()
    for param in module.parameters():
        assert param.grad.untyped_storage().data_ptr() == flat
    # A plain trainer can still train in the same workspace afterwards.
    plain = SGDTrainer(TRAINING).fit(Client(0, x, y), workspace, workspace.data.clone(),
                                     torch.Generator())
    assert torch.isfinite(plain.delta).all() and plain.delta.abs().sum() > 0
    with pytest.raises(ValueError, match="foreign workspace"):  # re-bound: stale views
        DPWorkspace.of(bind_flat_parameters(module))


def _hooked():
    from privfed.privacy.trainer import _WORKSPACES

    return _WORKSPACES


def test_model_opacus_cannot_train_is_rejected_with_the_layer_named():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"BatchNorm.*ModuleValidator\.fix"):
        _build_local(PrivacyConfig(mechanism="local", noise_multiplier=1.0), model,
                     reference_size=120)


def test_delta_above_one_over_n_warns():
    with pytest.warns(UserWarning, match=r"privacy\.delta = 0\.1 >= 1/n") as caught:
        _build_local(PrivacyConfig(mechanism="local", noise_multiplier=1.0, delta=0.1),
                     _mlp().module, num_clients=2, reference_size=20)
    assert caught[0].filename == __file__  # it points at the caller of build_privacy


def test_sample_rate_is_public_config_and_only_for_local_dp():
    assert PrivacyConfig(mechanism="local", noise_multiplier=1.0, sample_rate=0.25)
    with pytest.raises(ValueError, match=r"privacy\.sample_rate must be in \(0, 1\]"):
        PrivacyConfig(mechanism="local", noise_multiplier=1.0, sample_rate=1.5)
    with pytest.raises(ValueError, match=r"privacy\.sample_rate applies only to mechanism"):
        PrivacyConfig(mechanism="central", noise_multiplier=1.0, sample_rate=0.5)


def _reference_gradient(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy gradient of the test MLP at flat ``weights``."""
    reference = _mlp()
    reference.load(weights)
    reference.grad.zero_()
    nn.functional.cross_entropy(reference.module(x), y, reduction="sum").backward()
    return reference.grad.clone()


def test_noise_free_dp_sgd_with_huge_clip_is_plain_poisson_sgd(blobs):
    """sigma = 0 and C = inf-like: each step is lr * (sum of gradients) / B."""
    x, y = blobs
    workspace = _mlp()
    params = DPSGDParams(0.0, 1e9, 1.0, 1, 40.0)
    start = workspace.data.clone()
    update = DPSGDTrainer(params, LocalTraining(1, 40, 0.5), SEEDED).fit(
        Client(0, x[:30], y[:30]), workspace, start, torch.Generator())
    assert update.steps == 1  # q = 1: the whole data in one batch
    grad = _reference_gradient(x[:30], y[:30], start)
    torch.testing.assert_close(update.delta, -0.5 * grad / 40, rtol=1e-4, atol=1e-6)


def test_fedprox_adds_its_proximal_gradient_after_the_noise(blobs):
    """Two noise-free full-batch steps with mu: ``w2 = w1 - lr (g(w1) / B + mu (w1 - w0))``."""
    x, y = blobs
    workspace = _mlp()
    params = DPSGDParams(0.0, 1e9, 1.0, 2, 40.0)
    start = workspace.data.clone()
    update = DPSGDTrainer(params, LocalTraining(1, 40, 0.5, mu=0.3), SEEDED).fit(
        Client(0, x[:30], y[:30]), workspace, start, torch.Generator())
    w1 = start - 0.5 * _reference_gradient(x[:30], y[:30], start) / 40
    w2 = w1 - 0.5 * (_reference_gradient(x[:30], y[:30], w1) / 40 + 0.3 * (w1 - start))
    torch.testing.assert_close(update.delta, w2 - start, rtol=1e-4, atol=1e-6)


def test_seeded_noise_follows_the_generator_and_secure_noise_nobody_can_repeat(blobs):
    x, y = blobs
    workspace, client = _mlp(), Client(0, x[:30], y[:30])
    start = workspace.data.clone()
    params = DPSGDParams(1.0, 1.0, 0.5, 2, 8.0)

    def delta(noise: NoisePolicy, seed: int) -> torch.Tensor:
        trainer = DPSGDTrainer(params, TRAINING, noise)
        return trainer.fit(client, workspace, start, torch.Generator().manual_seed(seed)).delta

    seeded = NoisePolicy(secure=False, seed=0)
    assert torch.equal(delta(seeded, 1), delta(seeded, 1))
    assert not torch.equal(delta(seeded, 1), delta(seeded, 2))
    secure = NoisePolicy(secure=True)
    assert not torch.equal(delta(secure, 1), delta(secure, 1))


def test_the_cached_epsilons_follow_a_merged_record_by_dp_accountings_pld():
    """The ledger keeps every unit's epsilon up to date once it has been asked for them: a
    longer record merged from a node afterwards shows in the next metrics, at PLD's value."""
    params = DPSGDParams(1.2, 1.0, 0.25, 4, 8.0)
    policy = RecordLevelPolicy(params, num_clients=3, delta=1e-3, accountant="pld",
                               budget=None, noise=SEEDED)
    policy.record_participation(1, [0, 1])
    policy.record_release(1)
    assert policy.metrics()["epsilon_per_client"][2] == 0.0  # the cache is built here
    policy.merge_client_ledger(2, {"participations": 5})
    policy.record_participation(2, [1])
    policy.record_release(2)
    final = policy.metrics()["epsilon_per_client"]
    for client_id, taken in enumerate([1, 2, 5]):
        reference = pld_epsilon(1.2, 0.25, taken * 4, 1e-3)
        assert reference <= final[client_id] <= 1.01 * reference
