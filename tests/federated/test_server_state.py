"""Server.state_dict: a federation restored between rounds continues as if never stopped.

Each case trains N rounds straight through, and again as k rounds, a state saved through
``torch.save`` / ``torch.load(weights_only=True)``, a federation rebuilt from the config
that loads it and trains the remaining N - k. Where the run's randomness is seeded the two
final models are bit-identical and every round's record (seconds aside) is equal; the
epsilon is always equal, since the ledgers continue from their counts.
"""

import dataclasses
import io

import pytest
import torch

from privfed.config import load_config
from privfed.experiment import build_simulation

BASE = ["data.dataset='digits'", "data.num_clients=10", "model.name='mlp'", "model.hidden=[16]",
        "federation.rounds=6"]
POISSON = ["federation.fraction=0.5", "federation.client_sampling='poisson'"]

SEEDED = {
    # the sampler's generator and the server optimizers' moments
    "fedadam": ["federation.server_optimizer='fedadam'", "federation.fraction=0.5"],
    "fedavgm": ["federation.server_optimizer='fedavgm'", "federation.fraction=0.3"],
    # local DP-SGD: the per-client ledgers of a target epsilon (a budget)
    "local_dp_budget": ["privacy.mechanism='local'", "privacy.epsilon=1.5",
                        "federation.fraction=0.5", "federation.rounds=8"],
    # central DP-FedAvg: the adaptive clip norm and the rounds ledger
    "central_adaptive": ["privacy.mechanism='central'", "privacy.noise_multiplier=1.0",
                         "privacy.adaptive_clipping=true", "privacy.clipped_count_stddev=2.0",
                         *POISSON],
    # DP-FTRL: the tree's noise nodes of the current prefix sum and the cyclic schedule
    "ftrl_tree_cyclic": ["privacy.mechanism='ftrl'", "privacy.epsilon=4.0",
                         "federation.client_sampling='cyclic'", "federation.cyclic_groups=3",
                         "federation.rounds=7"],
    # banded DP-FTRL: the last bands - 1 noise vectors
    "ftrl_banded_cyclic": ["privacy.mechanism='ftrl'", "privacy.factorization='banded'",
                           "privacy.noise_multiplier=1.0", "federation.cyclic_groups=3",
                           "federation.client_sampling='cyclic'"],
    # error-feedback residuals of every client
    "randomk_error_feedback": ["compression.method='randomk'", "compression.error_feedback=true",
                               "compression.rescale=false"],
    "quantize_error_feedback": ["compression.method='quantize'",
                                "compression.error_feedback=true"],
    # FedBuff: jobs in flight, buffered reports and the engine's pending updates
    "fedbuff_stragglers": ["federation.buffer_size=3", "federation.concurrency=5",
                           "federation.latency_spread=0.5"],
    "fedbuff_ties": ["federation.buffer_size=3", "federation.concurrency=5"],
    "federated_evaluation": ["federation.federated_eval_every=2", "data.validation_fraction=0.2",
                             "federation.fraction=0.5"],
}

UNSEEDED = {
    # noise from OS entropy: drawn afresh after the restore, as it would have been
    "local_dp_secure_mode": ["privacy.mechanism='local'", "privacy.noise_multiplier=1.0",
                             "privacy.secure_mode=true", "federation.fraction=0.5"],
    # DP-FTRL's tree nodes from OS entropy: the saved nodes continue, new ones are fresh
    "ftrl_tree_secure_mode": ["privacy.mechanism='ftrl'", "privacy.noise_multiplier=1.0",
                              "privacy.secure_mode=true"],
    # masking rounds stochastically with secret coins: the discarded-rounds count and the
    # per-client ledgers against the server continue
    "distributed_skellam_masking": ["privacy.mechanism='distributed'", "privacy.noise='skellam'",
                                    "privacy.noise_multiplier=0.5",
                                    "privacy.min_surviving_clients=4", "secure.kind='masking'",
                                    *POISSON],
    # CKKS encrypts with fresh randomness
    "distributed_gaussian_he": ["privacy.mechanism='distributed'", "privacy.noise_multiplier=0.5",
                                "privacy.min_surviving_clients=3", "secure.kind='he'",
                                "federation.rounds=4", *POISSON],
}


def _config(overrides):
    return load_config(overrides=[*BASE, *overrides])


def _resumed(config, stop_after):
    first = build_simulation(config)
    first.server.fit(stop_after)
    buffer = io.BytesIO()
    torch.save(first.server.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    second = build_simulation(config)
    second.server.load_state_dict(state)
    history = second.server.fit(config.federation.rounds - second.server.round)
    return second.server, history


def _comparable(history):
    return [dataclasses.replace(r, seconds=0.0, extra={k: v for k, v in r.extra.items()
                                                         if not k.startswith("seconds")})
            for r in history.rounds]


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_a_restored_seeded_federation_continues_bit_for_bit(name):
    config = _config(SEEDED[name])
    straight = build_simulation(config)
    history = straight.run()
    server, resumed = _resumed(config, stop_after=2)
    assert torch.equal(server.weights, straight.server.weights)
    assert _comparable(resumed) == _comparable(history)
    assert resumed.stop_reason == history.stop_reason


def test_the_cases_hold_the_state_they_name():
    """The cases above exercise what they name: per-client ledgers that differ, FedBuff
    jobs in flight from two model versions, updates trained but not yet aggregated, and
    the tree's noise node of level 1 after two rounds with the cyclic schedule's place."""
    local = build_simulation(_config(SEEDED["local_dp_budget"]))
    local.server.fit(3)
    counts = local.server.state_dict()["policy"]["client_spend"]["counts"]
    assert len(set(counts)) > 1
    stragglers = build_simulation(_config(SEEDED["fedbuff_stragglers"]))
    stragglers.server.fit(2)
    assert len(stragglers.server.state_dict()["schedule"]["models"]) == 2
    ties = build_simulation(_config(SEEDED["fedbuff_ties"]))
    ties.server.fit(1)
    state = ties.server.state_dict()
    assert state["engine"]["pending"] and len(state["schedule"]["buffer"]) == 2
    ftrl = build_simulation(_config(SEEDED["ftrl_tree_cyclic"]))
    ftrl.server.fit(2)
    state = ftrl.server.state_dict()
    assert set(state["stages"]["server"]["tree_noise"]["nodes"]) == {"1"}
    assert state["sampler"]["draws"] == 2


@pytest.mark.parametrize("name", sorted(UNSEEDED))
def test_a_restored_federation_with_secret_randomness_keeps_its_accounting(name):
    config = _config(UNSEEDED[name])
    straight = build_simulation(config)
    history = straight.run()
    server, resumed = _resumed(config, stop_after=3)
    assert [r.extra["epsilon"] for r in resumed.rounds] == \
        [r.extra["epsilon"] for r in history.rounds]
    assert server.policy.state_dict() == straight.server.policy.state_dict()
    assert len(resumed.rounds) == config.federation.rounds
    # the noise is not the straight run's: nobody, this process included, regenerates it
    assert not torch.equal(server.weights, straight.server.weights)


def test_a_restored_federation_refuses_the_state_of_another():
    small = build_simulation(_config([]))
    small.server.fit(1)
    state = small.server.state_dict()
    wider = build_simulation(_config(["model.hidden=[32]"]))
    with pytest.raises(ValueError, match="saved model of"):
        wider.server.load_state_dict(state)
    private = build_simulation(_config(["privacy.mechanism='local'",
                                        "privacy.noise_multiplier=1.0"]))
    with pytest.raises(ValueError, match="privacy ledger state"):
        private.server.load_state_dict(state)
    more_clients = build_simulation(_config(["data.num_clients=12", "privacy.mechanism='local'",
                                             "privacy.noise_multiplier=1.0"]))
    with pytest.raises(ValueError, match="ledger state for 10 units"):
        more_clients.server.load_state_dict(private.server.state_dict())


def test_component_states_are_checked_before_use():
    fedbuff = build_simulation(_config(SEEDED["fedbuff_ties"]))
    fedbuff.server.fit(1)
    state = fedbuff.server.state_dict()
    bad_job = dict(state["schedule"], jobs=[[1.0, 1, 99, 0, 0]], models={0: torch.zeros(3)})
    with pytest.raises(ValueError, match="client outside 0..9"):
        fedbuff.server.schedule.load_state_dict(bad_job)
    with pytest.raises(ValueError, match="pending update of client 3"):
        fedbuff.server.engine.load_state_dict({"pending": {3: torch.zeros(5)}})
    with pytest.raises(ValueError, match="FedAdam state has entries"):
        build_simulation(_config(SEEDED["fedadam"])).server.optimizer.load_state_dict({})
    with pytest.raises(ValueError, match="not a client sampler's state"):
        fedbuff.server.sampler.load_state_dict({"rng": {"bit_generator": "MT19937"}})


def _dropout_batchnorm_net():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(16, 10))


def test_a_user_model_s_buffers_and_dropout_draws_continue_too():
    """A model's buffers (BatchNorm's running statistics) and torch's global generator
    (dropout) are state as well."""
    config = _config(["federation.rounds=4"])
    torch.manual_seed(1)
    straight = build_simulation(config, model=_dropout_batchnorm_net())
    straight.run()
    torch.manual_seed(1)
    first = build_simulation(config, model=_dropout_batchnorm_net())
    first.server.fit(2)
    state = first.server.state_dict()
    assert "2.running_mean" in state["buffers"]
    torch.manual_seed(2)  # another process: its generator is not where the first one stopped
    second = build_simulation(config, model=_dropout_batchnorm_net())
    second.server.load_state_dict(state)
    second.server.fit(2)
    assert torch.equal(second.server.weights, straight.server.weights)
    for name, value in straight.server.workspace.module.named_buffers():
        assert torch.equal(dict(second.server.workspace.module.named_buffers())[name], value)
