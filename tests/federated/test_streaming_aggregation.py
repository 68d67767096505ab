"""A synchronous round with plain aggregation sums its updates as the clients train: the
same model and records as keeping every update until the protocol runs, bit for bit, while
the round holds one chunk's updates, not the cohort's."""

from __future__ import annotations

import weakref

import pytest
import torch

from privfed.aggregation import SecureAggregation
from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.federated import Observer, Pipeline, TrainJob, UpdateStage
from privfed.federated.cohort import StackedModel
from privfed.secure import InvalidInputError

BASE = ["federation.rounds=3", "data.num_clients=8", "model.hidden=[16]",
        "federation.fraction=0.75"]
CONFIGS = {
    "plain": [],
    "sequential": ["federation.vectorise=false"],
    "dp-fedavg": ["federation.client_sampling=poisson",
                  "privacy.mechanism=central", "privacy.noise_multiplier=1.0",
                  "privacy.clip_norm=0.5", "privacy.adaptive_clipping=true",
                  "privacy.clipped_count_stddev=1.0"],
    "local-dp": ["privacy.mechanism=local", "privacy.noise_multiplier=1.0",
                 "privacy.sample_rate=0.2"],
    "randomk-feedback": ["compression.method=randomk", "compression.density=0.3",
                         "compression.rescale=false", "compression.error_feedback=true"],
    "clipped": ["secure.clip=0.01", "secure.out_of_range=clip",
                "federation.federated_eval_every=1", "data.validation_fraction=0.2"],
}


class KeepsUpdates:
    """The engine told no plan: it keeps every update until the protocol runs (the path of
    a round that cannot stream)."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def train(self, jobs, plan=None):
        return self.engine.train(jobs)


class Inbox(Observer):
    def __init__(self) -> None:
        self.messages = []

    def server_received(self, round_id, client_id, stage, message):
        self.messages.append((round_id, client_id, stage))


@pytest.fixture
def protocol_runs(monkeypatch):
    """The round ids SecureAggregation.aggregate runs (a streamed round runs none)."""
    runs = []
    original = SecureAggregation.aggregate

    def counted(self, round_id, *args, **kwargs):
        runs.append(round_id)
        return original(self, round_id, *args, **kwargs)

    monkeypatch.setattr(SecureAggregation, "aggregate", counted)
    return runs


def _server(overrides, observers=(), keep=False):
    server = build_simulation(load_config(overrides=[*BASE, *overrides]), observers).server
    if keep:
        server.engine = KeepsUpdates(server.engine)
    return server


def _record(record):
    """A round's record without its timings."""
    extra = {k: v for k, v in record.extra.items() if not k.startswith("seconds")}
    return (record.clients, record.train_loss, record.test_loss, record.test_accuracy,
            record.bytes_up, record.bytes_down, extra, record.federated)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_streamed_round_gives_the_kept_updates_model_bit_for_bit(name, protocol_runs):
    servers = {keep: _server(CONFIGS[name], keep=keep) for keep in (False, True)}
    for keep, server in servers.items():
        server.fit(3)
        assert not server.engine.pending
        assert len([r for r in protocol_runs if r <= 3]) == (3 if keep else 0)
        protocol_runs.clear()
    streamed, kept = servers[False], servers[True]
    assert torch.equal(streamed.weights, kept.weights)
    assert [_record(r) for r in streamed.history.rounds] == \
        [_record(r) for r in kept.history.rounds]
    assert set(streamed.history.rounds[0].extra) == set(kept.history.rounds[0].extra)


@pytest.mark.parametrize("overrides, observed", [
    (["compression.method=quantize", "compression.bits=8"], False),
    (["federation.buffer_size=3", "federation.concurrency=4"], False),
    ([], True),
])
def test_a_round_that_needs_its_messages_keeps_every_update(overrides, observed,
                                                             protocol_runs):
    """A payload codec, FedBuff's later aggregation, an observer of the server's inbox."""
    inbox = Inbox()
    server = _server(overrides, [inbox] if observed else [])
    server.fit(2)
    assert protocol_runs[:2] == [1, 2]
    assert len(inbox.messages) == (2 * 6 if observed else 0)


def test_an_out_of_range_update_is_the_same_error_after_training_every_client():
    trained = {}
    for keep in (False, True):
        server = _server(["secure.clip=0.001", "secure.out_of_range=error"], keep=keep)
        engine = server.engine.engine if keep else server.engine
        fit, seen = engine._fit, []
        engine._fit = lambda jobs, fit=fit, seen=seen: \
            seen.extend(j.client_id for j in jobs) or fit(jobs)
        with pytest.raises(InvalidInputError) as raised:
            server.run_round()
        trained[keep] = (seen, str(raised.value))
    assert trained[False] == trained[True]
    assert "has |value|" in trained[False][1] and len(trained[False][0]) == 6


class Alive(UpdateStage):
    """Counts the clients' vectors alive (a trained delta, or the stage's copy of it) each
    time a client half runs."""

    name = "alive"

    def __init__(self) -> None:
        self.alive = 0
        self.counts: list[int] = []

    def _track(self, vector: torch.Tensor) -> torch.Tensor:
        self.alive += 1
        weakref.finalize(vector, self._release)
        return vector

    def _release(self) -> None:
        self.alive -= 1

    def client(self, round_id, client_id, vector):
        self._track(vector)
        out = self._track(vector.clone())
        self.counts.append(self.alive)
        return out


@pytest.mark.parametrize("keep", [False, True])
def test_a_streamed_round_holds_one_chunks_updates_not_the_cohorts(keep):
    chunk, cohort = 3, 24
    server = _server(["data.num_clients=24", "federation.fraction=1.0"], keep=keep)
    engine = server.engine.engine if keep else server.engine
    stage = Alive()
    engine.pipeline = server.pipeline = Pipeline([stage])
    engine.memory_budget = chunk * StackedModel.of(engine.workspace).bytes_per_client(
        engine.trainer.expected_batch_size, 64)
    jobs = [TrainJob(c, 1, server.weights, c) for c in range(cohort)]
    assert [len(c) for c in engine._chunks(jobs)] == [chunk] * (cohort // chunk)
    server.run_round()
    assert len(stage.counts) == cohort
    if keep:
        assert max(stage.counts) > cohort
    else:
        assert max(stage.counts) <= 2 * chunk
