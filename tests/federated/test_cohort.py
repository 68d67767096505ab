"""Cohort-vectorised local training: the same updates as training the clients one after
another, for plain SGD and DP-SGD, and nothing of one client in another's update."""

import math

import pytest
import torch
from torch import nn

from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.federated import Client, LocalTraining, SGDTrainer, TrainJob, bind_flat_parameters
from privfed.federated.cohort import (
    StackedModel,
    cohort_chunks,
    default_memory_budget,
    shuffled_schedule,
)
from privfed.models import CNN, MLP, LogisticRegression
from privfed.privacy import DPSGDParams, DPSGDTrainer, NoisePolicy

# float32 rounding: every delta entry is a sum of at most a few dozen float32 products and
# steps whose order the batched kernels change; each reordering moves a result by at most a
# few ulps of the entries (|delta| < 0.1 here, ulp 7e-9), far below 1e-6.
TOLERANCE = 1e-6


def _mlp(hidden=(16,), activation=nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 12
    for units in hidden:
        layers += [nn.Linear(width, units), activation()]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, 3))


def _clients(sizes=(40, 33, 7, 2, 40), scale=1.0, seed=1) -> list[Client]:
    g = torch.Generator().manual_seed(seed)
    return [Client(i, scale * torch.randn(n, 3, 4, generator=g),
                   torch.randint(0, 3, (n,), generator=g)) for i, n in enumerate(sizes)]


def _generators(count: int, offset: int = 100) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(offset + k) for k in range(count)]


def _starts(workspace, count: int, spread: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    base = workspace.data.clone()
    return torch.stack([base + spread * torch.randn(base.shape, generator=g)
                        for _ in range(count)])


def _both(trainer, workspace, clients, starts):
    model = StackedModel.of(workspace)
    batched = trainer.fit_cohort(model, clients, starts, _generators(len(clients)))
    one_by_one = [trainer.fit(c, workspace, s, g) for c, s, g in
                  zip(clients, starts, _generators(len(clients)), strict=True)]
    return batched, one_by_one


def _assert_same(batched, one_by_one, tolerance=TOLERANCE):
    for a, b in zip(batched, one_by_one, strict=True):
        assert a.client_id == b.client_id and a.steps == b.steps
        assert a.num_samples == b.num_samples
        torch.testing.assert_close(a.delta, b.delta, rtol=0, atol=tolerance)
        if math.isnan(b.train_loss):
            assert math.isnan(a.train_loss)
        else:
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)


@pytest.mark.parametrize("mu", [0.0, 0.5])
@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity])
def test_batched_sgd_equals_sequential_sgd(mu, activation):
    workspace = bind_flat_parameters(_mlp((16, 8), activation))
    trainer = SGDTrainer(LocalTraining(epochs=2, batch_size=8, lr=0.3, mu=mu))
    clients = _clients()
    # Different starting models per client (FedBuff's clients start from stale models).
    _assert_same(*_both(trainer, workspace, clients, _starts(workspace, 5, spread=0.1)))


def test_drop_last_skips_short_batches_alike_batched_and_sequential():
    workspace = bind_flat_parameters(_mlp((16,)))
    trainer = SGDTrainer(LocalTraining(epochs=2, batch_size=8, lr=0.3, drop_last=True))
    clients = _clients()  # sizes 40, 33, 7, 2, 40: 5, 4, 0, 0, 5 full batches an epoch
    batched, one_by_one = _both(trainer, workspace, clients, _starts(workspace, 5))
    _assert_same(batched, one_by_one)
    assert [u.steps for u in one_by_one] == [10, 8, 0, 0, 10]
    for short in (2, 3):  # no full batch: no step, a zero update, no loss
        assert not one_by_one[short].delta.any() and math.isnan(one_by_one[short].train_loss)
    kept = SGDTrainer(LocalTraining(epochs=2, batch_size=8, lr=0.3))
    assert [u.steps for u in _both(kept, workspace, clients, _starts(workspace, 5))[1]] == [
        10, 10, 2, 2, 10]
    _, mask = shuffled_schedule([40, 33, 7], trainer.training, _generators(3))
    assert mask.shape == (10, 3, 8) and mask.any(2).sum(0).tolist() == [10, 8, 0]
    assert mask.all(2).sum().item() == mask.any(2).sum().item()  # every batch taken is full


def test_drop_last_with_no_client_holding_a_full_batch_trains_nothing():
    workspace = bind_flat_parameters(_mlp((16,)))
    trainer = SGDTrainer(LocalTraining(batch_size=50, lr=0.3, drop_last=True))
    batched, one_by_one = _both(trainer, workspace, _clients((7, 2)), _starts(workspace, 2))
    _assert_same(batched, one_by_one)
    assert [u.steps for u in batched] == [0, 0] and not any(u.delta.any() for u in batched)


@pytest.mark.parametrize("mu", [0.0, 0.5])
@pytest.mark.parametrize("sigma", [0.0, 1.3])
def test_batched_dpsgd_equals_sequential_dpsgd(mu, sigma):
    workspace = bind_flat_parameters(_mlp((16,)))
    # Rate 0.1 on a client of 2 records leaves most of its batches empty.
    params = DPSGDParams(noise_multiplier=sigma, max_grad_norm=0.3, sample_rate=0.1,
                         steps_per_round=6, normaliser=4.0)
    trainer = DPSGDTrainer(params, LocalTraining(lr=0.5, mu=mu), NoisePolicy(secure=False))
    clients = _clients(scale=4.0)  # large inputs: most examples are clipped
    batched, one_by_one = _both(trainer, workspace, clients, _starts(workspace, 5))
    _assert_same(batched, one_by_one)
    assert math.isnan(one_by_one[3].train_loss) or one_by_one[3].train_loss >= 0


def test_batched_dpsgd_bounds_each_record_from_the_servers_view():
    """Without noise and with every record in the batch, adding one record (however large
    its gradient) moves a client's one-step update by exactly lr * C / normaliser: the
    record's gradient is clipped to C in the batched path too."""
    workspace = bind_flat_parameters(_mlp((16,)))
    params = DPSGDParams(noise_multiplier=0.0, max_grad_norm=0.2, sample_rate=1.0,
                         steps_per_round=1, normaliser=5.0)
    lr = 0.7
    trainer = DPSGDTrainer(params, LocalTraining(lr=lr), NoisePolicy(secure=False))
    base = _clients((5, 6))
    outlier = Client(0, torch.cat([base[0].x, 1e4 * torch.ones(1, 3, 4)]),
                     torch.cat([base[0].y, torch.tensor([2])]))
    model = StackedModel.of(workspace)
    starts = _starts(workspace, 2)
    without = trainer.fit_cohort(model, base, starts, _generators(2))[0].delta
    with_record = trainer.fit_cohort(model, [outlier, base[1]], starts, _generators(2))[0].delta
    assert (without - with_record).norm().item() == pytest.approx(lr * 0.2 / 5.0, rel=1e-4)


def test_a_clients_update_does_not_depend_on_the_others_in_its_chunk():
    """Client 0's update is bit-identical whoever shares its batched computation (the
    padding to the largest batch adds exact zeros)."""
    workspace = bind_flat_parameters(_mlp((16,)))
    model = StackedModel.of(workspace)
    params = DPSGDParams(noise_multiplier=1.0, max_grad_norm=0.5, sample_rate=0.3,
                         steps_per_round=4, normaliser=8.0)
    trainers = [SGDTrainer(LocalTraining(batch_size=8, lr=0.2)),
                DPSGDTrainer(params, LocalTraining(lr=0.2), NoisePolicy(secure=False))]
    first = _clients((30,))[0]
    partners = [_clients((3, 3), seed=5)[1:], _clients((300, 300), seed=6)[1:]]
    for trainer in trainers:
        deltas = [trainer.fit_cohort(model, [first, *others], _starts(workspace, 2),
                                     _generators(2))[0].delta for others in partners]
        assert torch.equal(deltas[0], deltas[1])


def test_secure_noise_is_each_clients_own_in_a_batched_round():
    """Under secure noise two clients with the same data and the same seeded generator
    get different updates, and replaying a client's seed does not give its update: the
    noise and batches come from keys nobody else holds."""
    workspace = bind_flat_parameters(_mlp((8,)))
    model = StackedModel.of(workspace)
    params = DPSGDParams(noise_multiplier=1.0, max_grad_norm=0.5, sample_rate=0.5,
                         steps_per_round=2, normaliser=4.0)
    twin = _clients((10,))[0]
    twins = [twin, Client(1, twin.x, twin.y)]
    same_seed = [torch.Generator().manual_seed(3) for _ in range(2)]
    seeded = DPSGDTrainer(params, LocalTraining(lr=0.5), NoisePolicy(secure=False))
    secure = DPSGDTrainer(params, LocalTraining(lr=0.5), NoisePolicy(secure=True))
    a, b = seeded.fit_cohort(model, twins, _starts(workspace, 2), same_seed)
    assert torch.equal(a.delta, b.delta)
    same_seed = [torch.Generator().manual_seed(3) for _ in range(2)]
    c, d = secure.fit_cohort(model, twins, _starts(workspace, 2), same_seed)
    assert not torch.allclose(c.delta, d.delta)
    assert not torch.allclose(c.delta, a.delta)


@pytest.mark.parametrize("module, qualifies", [
    (MLP((1, 8, 8), 10, hidden=(32, 16)), True),
    (LogisticRegression((3, 4), 3), True),
    (CNN((1, 8, 8), 10), False),
    (nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)), False),
    (nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, 3)), False),
    (nn.Sequential(nn.Flatten(0), nn.Linear(12, 3)), False),
    (nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 8), nn.ReLU()),
                   nn.Linear(8, 3, bias=False)), True),
])
def test_which_models_train_batched(module, qualifies):
    assert (StackedModel.of(bind_flat_parameters(module)) is not None) is qualifies


def test_tied_weights_train_one_after_another():
    torch.manual_seed(0)
    shared = nn.Linear(6, 6)
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), shared, nn.ReLU(), shared)
    assert StackedModel.of(bind_flat_parameters(module)) is None


def test_nested_and_biasless_layers_match_the_sequential_path():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 8), nn.LeakyReLU(0.1)),
                           nn.Linear(8, 3, bias=False))
    workspace = bind_flat_parameters(module)
    trainer = SGDTrainer(LocalTraining(batch_size=8, lr=0.3))
    _assert_same(*_both(trainer, workspace, _clients(), _starts(workspace, 5)))


def test_cohort_chunks_respect_the_budget():
    assert cohort_chunks(10, 100, 350) == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]
    assert cohort_chunks(3, 1000, 10) == [range(0, 1), range(1, 2), range(2, 3)]
    assert default_memory_budget(torch.device("cpu")) < default_memory_budget(
        torch.device("cuda"))


def _simulation(*overrides: str):
    config = load_config(overrides=["federation.rounds=3", "data.num_clients=6",
                                    "model.hidden=[16]", *overrides])
    return build_simulation(config)


LOCAL_DP = ["privacy.mechanism=local", "privacy.noise_multiplier=1.0",
            "privacy.sample_rate=0.2"]


DROP_LAST = ["federation.drop_last=true", "federation.batch_size=32"]  # 239 or 240 a client


@pytest.mark.parametrize("privacy", [[], LOCAL_DP, DROP_LAST])
def test_a_vectorised_federation_matches_a_sequential_one(privacy):
    runs = {}
    for vectorise in (True, False):
        sim = _simulation(f"federation.vectorise={str(vectorise).lower()}", *privacy)
        assert (sim.server.engine.stacked is not None) is vectorise
        assert sim.server.engine.trainer.training.drop_last is (privacy is DROP_LAST)
        sim.run()
        runs[vectorise] = sim.server
    torch.testing.assert_close(runs[True].weights, runs[False].weights, rtol=0, atol=1e-5)
    assert runs[True].history.final_accuracy == runs[False].history.final_accuracy


def _updates(engine, jobs):
    """The jobs' updates, trained in the engine's chunks."""
    return [update for chunk in engine._chunks(jobs) for update in engine._fit(chunk)]


def test_chunked_rounds_equal_one_chunk_bit_for_bit():
    """Plain SGD gives each client the same update whatever the chunking, and the engine's
    one-client replay (``train_client``) gives it too."""
    sim = _simulation()
    engine = sim.server.engine
    params = sim.server.weights.clone()
    jobs = [TrainJob(c, 1, params, 1000 + c) for c in range(6)]
    whole = _updates(engine, jobs)
    engine.memory_budget = 1  # one client per chunk
    for job, update in zip(jobs, _updates(engine, jobs), strict=True):
        assert torch.equal(update.delta, whole[job.client_id].delta)
        assert torch.equal(engine.train_client(job).delta, update.delta)


def test_a_trainer_asked_for_opacus_trains_one_client_after_another():
    from privfed.aggregation import SecureAggregation
    from privfed.federated import InProcessEngine
    from privfed.secure import make_aggregator

    workspace = bind_flat_parameters(_mlp((8,)))
    params = DPSGDParams(noise_multiplier=1.0, max_grad_norm=0.5, sample_rate=0.5,
                         steps_per_round=2, normaliser=4.0)
    engines = {
        backend: InProcessEngine(
            workspace, _clients(), aggregation=SecureAggregation(make_aggregator("none")),
            trainer=DPSGDTrainer(params, LocalTraining(lr=0.5), NoisePolicy(secure=False),
                                 backend=backend))
        for backend in ("auto", "opacus")
    }
    assert engines["auto"].stacked is not None
    assert engines["opacus"].stacked is None


@pytest.mark.parametrize("sizes", [(40, 33, 7, 2, 40), (400, 2, 2, 2, 2)])
def test_the_chunks_depend_on_public_values_only(sizes):
    """How a round is chunked (which decides which clients share a batched computation)
    follows from the model, the example shape and the public batch size, never from a
    client's own record count."""
    from privfed.aggregation import SecureAggregation
    from privfed.federated import InProcessEngine
    from privfed.secure import make_aggregator

    workspace = bind_flat_parameters(_mlp((8,)))
    params = DPSGDParams(noise_multiplier=1.0, max_grad_norm=0.5, sample_rate=0.5,
                         steps_per_round=1, normaliser=4.0)
    engine = InProcessEngine(
        workspace, _clients(sizes), aggregation=SecureAggregation(make_aggregator("none")),
        trainer=DPSGDTrainer(params, LocalTraining(lr=0.5), NoisePolicy(secure=False)),
        memory_budget=3 * StackedModel.of(workspace).bytes_per_client(4, 12))
    seen = []
    fit = engine._fit
    engine._fit = lambda jobs: seen.append([j.client_id for j in jobs]) or fit(jobs)
    engine.train([TrainJob(c, 1, workspace.data.clone(), c) for c in range(5)])
    assert seen == [[0, 1, 2], [3, 4]]


def test_a_client_trained_alone_computes_what_it_computes_in_the_simulation():
    """A Flower node trains its one client with ``fit_clients``: plain SGD gives bit for bit
    the update the in-process engine gives it in a batched round."""
    from privfed.federated.trainer import batched_model, fit_clients

    sim = _simulation()
    engine, params = sim.server.engine, sim.server.weights.clone()
    jobs = [TrainJob(c, 1, params, 1000 + c) for c in range(6)]
    stacked = batched_model(engine.trainer, engine.workspace)
    for job, update in zip(jobs, _updates(engine, jobs), strict=True):
        (alone,) = fit_clients(engine.trainer, stacked, [engine.clients[job.client_id]],
                               engine.workspace, [params],
                               [torch.Generator().manual_seed(job.seed)])
        assert torch.equal(alone.delta, update.delta)
    assert batched_model(engine.trainer, engine.workspace, vectorise=False) is None
