"""A federation with plain aggregation in process trains as it does over the wire."""

import torch

from privfed.federated import LocalTraining, Observer
from privfed.secure import PlainAggregator
from tests.conftest import make_server


class Inbox(Observer):
    """Keeps every message the server receives."""

    def __init__(self) -> None:
        self.messages = []

    def server_received(self, round_id, client_id, stage, message):
        self.messages.append((round_id, client_id, stage, bytes(message)))


def _fit(blobs, aggregator, observers=()):
    x, y = blobs
    parts = [(x[i::6], y[i::6]) for i in range(6)]
    server = make_server(parts, (x, y), fraction=0.5, aggregator=aggregator,
                         training=LocalTraining(batch_size=8, lr=0.2), observers=observers)
    history = server.fit(4)
    return server.weights, history


def test_in_process_and_wire_rounds_give_the_same_model_history_and_bytes(blobs):
    fast_weights, fast = _fit(blobs, PlainAggregator())
    wire_weights, wire = _fit(blobs, PlainAggregator(wire=True))
    assert torch.equal(fast_weights, wire_weights)
    for a, b in zip(fast.rounds, wire.rounds, strict=True):
        assert (a.clients, a.train_loss, a.test_accuracy, a.bytes_up, a.bytes_down) == \
               (b.clients, b.train_loss, b.test_accuracy, b.bytes_up, b.bytes_down)
        assert a.bytes_up > 0


def test_an_observer_gets_every_upload_as_the_wire_delivers_it(blobs):
    inboxes = [Inbox(), Inbox()]
    _fit(blobs, PlainAggregator(), [inboxes[0]])
    _fit(blobs, PlainAggregator(wire=True), [inboxes[1]])
    assert inboxes[0].messages == inboxes[1].messages
    assert len(inboxes[0].messages) == 4 * 3
