"""Clients held as rows of shared arrays: the same data and the same training as copies."""

import pytest
import torch

from privfed.clientdata import build_client, client_arrays, client_from_arrays
from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.federated import Client

SMALL = ["federation.rounds=3", "federation.fraction=0.5", "data.validation_fraction=0.2",
         "federation.federated_eval_every=1", "model.hidden=[16]"]


def _eager(simulation):
    """Each client of ``simulation`` rebuilt with its own copies of its arrays."""
    config, dataset = simulation.config, simulation.dataset
    return [client_from_arrays(client_arrays(config, dataset, p, c), c)
            for c, p in enumerate(simulation.partitions)]


def test_rows_of_shared_arrays_are_gathered_on_access():
    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10)
    client = Client.from_rows(3, x, y, torch.tensor([7, 2, 5]), torch.tensor([0, 9]))
    assert client.num_samples == 3
    assert torch.equal(client.x, x[[7, 2, 5]]) and torch.equal(client.y, y[[7, 2, 5]])
    held_x, held_y = client.validation
    assert torch.equal(held_x, x[[0, 9]]) and torch.equal(held_y, y[[0, 9]])
    assert Client.from_rows(3, x, y, torch.tensor([1])).validation is None
    x[7] = -1.0  # the client holds no copy
    assert torch.equal(client.x[0], torch.tensor([-1.0, -1.0]))


@pytest.mark.parametrize(("rows", "held", "message"), [
    ([], None, "no training data"),
    ([3, 10], None, "rows outside"),
    ([1], [-1], "validation rows outside"),
])
def test_rows_outside_the_shared_arrays_or_none_are_errors(rows, held, message):
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match=message):
        Client.from_rows(0, x, y, torch.tensor(rows, dtype=torch.int64),
                         None if held is None else torch.tensor(held))


def test_a_configured_client_holds_rows_and_the_same_data_as_its_copies():
    simulation = build_simulation(load_config(overrides=SMALL))
    for lazy, eager in zip(simulation.server.engine.clients, _eager(simulation), strict=True):
        assert lazy._rows is not None  # noqa: SLF001 - rows, not copies
        assert lazy.num_samples == eager.num_samples
        assert torch.equal(lazy.x, eager.x) and torch.equal(lazy.y, eager.y)
        assert all(torch.equal(a, b) for a, b in zip(lazy.validation, eager.validation,
                                                     strict=True))


def test_extra_examples_are_appended_to_a_copy():
    config = load_config(overrides=SMALL)
    simulation = build_simulation(config)
    extra = (simulation.dataset.x_train[:2], simulation.dataset.y_train[:2])
    client = build_client(config, simulation.dataset, simulation.partitions[0], 0, extra)
    plain = simulation.server.engine.clients[0]
    assert client.num_samples == plain.num_samples + 2
    assert torch.equal(client.x[:-2], plain.x)


@pytest.mark.parametrize("overrides", [[], ["privacy.mechanism=local",
                                            "privacy.noise_multiplier=1.0"]])
def test_a_federation_of_row_clients_trains_bit_identically_to_copies(overrides):
    runs = []
    for eager in (False, True):
        simulation = build_simulation(load_config(overrides=SMALL + overrides))
        if eager:
            simulation.server.engine.clients = _eager(simulation)
        history = simulation.run()
        runs.append((simulation.server.weights, history))
    (lazy_weights, lazy), (eager_weights, eager) = runs
    assert torch.equal(lazy_weights, eager_weights)
    for a, b in zip(lazy.rounds, eager.rounds, strict=True):
        assert (a.clients, a.train_loss, a.test_loss, a.test_accuracy, a.federated) == \
               (b.clients, b.train_loss, b.test_loss, b.test_accuracy, b.federated)
