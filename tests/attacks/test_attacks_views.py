"""Views record what each party sees: readable plain updates, opaque HE and masked ones."""

import numpy as np
import pytest

from attacks.federation import client_weights, key_holder_secret
from attacks.views import (
    CollusionView,
    OutsiderView,
    ServerView,
    UploadReader,
    applicable_attacks,
)
from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.federated import TrainJob


def _run(kind: str, rounds: int = 2):
    config = load_config(overrides=[f"secure.kind={kind}", f"federation.rounds={rounds}",
                                    "data.num_clients=3", "model.hidden=[16]"])
    sim = build_simulation(config)
    server = sim.server
    views = {"server": ServerView(), "outsider": OutsiderView(rounds)}
    if kind == "he":
        views["collusion"] = CollusionView(key_holder_secret(server), client_weights(server))
    server.observers.extend(views.values())
    views["server"].attach_initial(server.weights)
    sim.run()
    # Ground truth, never shown to a view: replay each client's training with its batch seed.
    deltas = {}
    for r in range(1, rounds + 1):
        for client_id in views["server"].cohorts[r]:
            start = views["server"].models[r - 1]
            job = TrainJob(client_id, r, start, server.batch_seed(r, client_id))
            deltas[r, client_id] = server.engine.train_client(job).delta.numpy().copy()
    return server, views, deltas


def test_plain_server_reads_every_update():
    server, views, deltas = _run("none")
    for (r, client_id), delta in deltas.items():
        np.testing.assert_array_equal(views["server"].readable_update(r, client_id), delta)
    clients = server.engine.clients
    mean = np.mean([deltas[2, c] * clients[c].num_samples for c in range(3)], axis=0)
    total = sum(c.num_samples for c in clients) / 3
    np.testing.assert_allclose(views["server"].aggregates[2], mean / total, atol=1e-6)
    assert np.array_equal(views["outsider"].final_model.numpy(), server.weights.numpy())


def test_he_server_sees_ciphertexts_collusion_decrypts():
    _, views, deltas = _run("he")
    server_view, collusion = views["server"], views["collusion"]
    assert all(stage == "upload" for msgs in server_view.messages[1].values() for stage, _ in msgs)
    assert all(server_view.readable_update(1, c) is None for c in range(3))
    assert 2 in server_view.aggregates  # the aggregate is still released
    for (r, client_id), delta in deltas.items():
        np.testing.assert_allclose(collusion.readable_update(r, client_id), delta, atol=1e-6)


def test_masking_is_opaque_to_the_server():
    _, views, _ = _run("masking", rounds=1)
    assert views["server"].updates[1]
    assert all(u is None for u in views["server"].updates[1].values())


@pytest.mark.parametrize(
    ("kind", "server", "collusion"),
    [("none", "applicable", "not applicable"), ("he", "not applicable", "applicable"),
     ("masking", "not applicable", "not applicable")],
)
def test_applicable_attacks(kind, server, collusion):
    table = applicable_attacks(load_config(overrides=[f"secure.kind={kind}"]))
    assert table["server"]["status"] == server
    assert table["collusion"]["status"] == collusion
    assert table["outsider"]["status"] == "applicable"
    if kind != "none":
        assert "opaque" in table["server"]["reason"]


def test_server_view_decodes_compressed_uploads_with_the_servers_codec():
    from privfed.config import load_config
    from privfed.experiment import build_simulation

    simulation = build_simulation(load_config(overrides=[
        "model.hidden=[16]", "federation.rounds=1", "data.num_clients=3",
        "compression.method=quantize", "compression.bits=8"]))
    server = simulation.server
    view = ServerView(UploadReader.of(server))
    view.attach_initial(server.weights)
    server.observers.append(view)
    start = server.weights.clone()
    server.fit(1)
    updates = view.updates[1]
    assert sorted(updates) == [0, 1, 2] and not view.undecoded_kinds
    assert all(u is not None and u.shape == (start.numel(),) for u in updates.values())
    # The n_k-weighted mean of what the view decoded is the aggregate the server applied.
    sizes = client_weights(server)
    mean = sum(sizes[c] * u for c, u in updates.items()) / sum(sizes.values())
    np.testing.assert_allclose(mean, view.aggregates[1], atol=1e-7)  # float32 aggregate
