"""FedAvg against the math it must reproduce."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from privfed.federated import LocalTraining, Observer, ParamSpec
from privfed.models import build_model
from tests.conftest import make_server


def _flat(model):
    return ParamSpec.from_module(model).flatten(dict(model.named_parameters()))


def test_one_client_equals_centralised_training(blobs):
    x, y = blobs
    training = LocalTraining(epochs=2, batch_size=16, lr=0.1)
    server = make_server([(x, y)], (x, y), hidden=(8,), training=training)
    server.fit(3)

    model = build_model("mlp", (6,), 3, seed=0, hidden=(8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for r in range(1, 4):
        g = torch.Generator().manual_seed(100_000 * r + 0)
        for _ in range(2):
            order = torch.randperm(len(y), generator=g)
            for s in range(0, len(y), 16):
                idx = order[s : s + 16]
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    torch.testing.assert_close(server.weights, _flat(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sizes", [(30, 30, 30, 30), (10, 50, 25, 35)])
def test_one_full_batch_round_is_one_pooled_gradient_step(blobs, sizes):
    """FedSGD equivalence: sum_k n_k/n * (-lr grad_k) = -lr * grad of the pooled mean loss."""
    x, y = blobs
    bounds = np.cumsum((0, *sizes))
    parts = [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    lr = 0.3
    server = make_server(parts, (x, y), training=LocalTraining(1, batch_size=1000, lr=lr))
    server.fit(1)

    model = build_model("mlp", (6,), 3, seed=0, hidden=(8,))
    initial = _flat(model)
    F.cross_entropy(model(x), y).backward()
    pooled_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(server.weights, initial - lr * pooled_grad, rtol=0, atol=1e-5)


class _Capture(Observer):
    def __init__(self):
        self.means = []

    def aggregate_released(self, round_id, mean_update):
        self.means.append(mean_update.double().numpy())


def test_unequal_clients_are_weighted_by_sample_count(blobs):
    x, y = blobs
    parts = [(x[:10], y[:10]), (x[10:100], y[10:100]), (x[100:], y[100:])]
    capture = _Capture()
    server = make_server(parts, (x, y), observers=[capture])
    start = server.weights.clone()
    deltas = []
    for client_id, (px, py) in enumerate(parts):
        solo = make_server([(px, py)], (x, y))
        # Same batch seed as client `client_id` in round 1 of the federation.
        solo.batch_seed = lambda r, _c, client_id=client_id: 100_000 * r + client_id
        solo.fit(1)
        deltas.append((solo.weights - start).double().numpy())
    server.fit(1)
    n = np.array([10, 90, 20], dtype=np.float64)
    expected = sum(w * d for w, d in zip(n / n.sum(), deltas, strict=True))
    np.testing.assert_allclose(capture.means[0], expected, rtol=0, atol=1e-6)
    # ...and not the unweighted mean, which differs by far more than the tolerance.
    assert np.abs(np.mean(deltas, axis=0) - expected).max() > 1e-3


def test_fedprox_term_matches_autograd_of_the_proximal_objective(blobs):
    x, y = blobs
    mu, lr = 0.5, 0.1
    server = make_server([(x, y)], (x, y), training=LocalTraining(1, 16, lr, mu=mu))
    server.fit(1)

    model = build_model("mlp", (6,), 3, seed=0, hidden=(8,))
    anchor = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(100_000))
    for s in range(0, len(y), 16):
        idx = order[s : s + 16]
        opt.zero_grad()
        prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
        (F.cross_entropy(model(x[idx]), y[idx]) + mu / 2 * prox).backward()
        opt.step()
    torch.testing.assert_close(server.weights, _flat(model), rtol=0, atol=1e-6)


def test_partial_participation_samples_the_configured_number(blobs):
    x, y = blobs
    parts = [(x[i::10], y[i::10]) for i in range(10)]
    server = make_server(parts, (x, y), fraction=0.3, sampler_seed=5)
    history = server.fit(4)
    assert all(len(r.clients) == 3 for r in history.rounds)
    assert len({tuple(r.clients) for r in history.rounds}) > 1
    assert history.rounds[0].bytes_down == 3 * server.model_bytes


def test_engine_rejects_clients_out_of_order(blobs):
    x, y = blobs
    engine = make_server([(x[:60], y[:60]), (x[60:], y[60:])], (x, y)).engine
    with pytest.raises(ValueError, match="order of their ids"):
        type(engine)(engine.workspace, engine.clients[::-1], trainer=engine.trainer,
                     aggregation=engine.aggregation)


def test_diverging_local_training_stops_with_a_clear_error(blobs):
    from privfed.federated import TrainingDivergedError

    x, y = blobs
    server = make_server([(x * 1e30, y)], (x, y), training=LocalTraining(1, 16, lr=1e30))
    with pytest.raises(TrainingDivergedError, match="client 0's update has NaN/Inf.*federation.lr"):
        server.fit(2)


@pytest.mark.parametrize("bad", [[float("nan")], [float("inf")], [-float("inf")],
                                 [float("inf"), -float("inf")]])
def test_one_non_finite_coordinate_is_divergence(bad):
    """The one-pass check (a float32 sum) catches any NaN/Inf, also +inf and -inf together."""
    from privfed.federated import ClientUpdate, TrainingDivergedError
    from privfed.federated.trainer import check_finite

    delta = torch.zeros(1000)
    delta[torch.arange(len(bad)) * 311 + 5] = torch.tensor(bad)
    with pytest.raises(TrainingDivergedError, match="client 4's update has NaN/Inf"):
        check_finite(ClientUpdate(4, delta, 10, 0.1, 1), release_id=3)
    fine = ClientUpdate(4, torch.full((1000,), 3e30), 10, 0.1, 1)
    assert check_finite(fine, release_id=3) is fine
