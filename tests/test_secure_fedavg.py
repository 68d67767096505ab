"""FedAvg end to end through each secure aggregator: same model as plain, server sees bytes."""

import numpy as np
import pytest
import torch

from privfed.config import load_config
from privfed.experiment import build_simulation
from privfed.federated import Observer
from privfed.secure.wire import unpack

SMALL = ["model.hidden=[32]", "federation.rounds=12", "data.num_clients=5"]


class _Wire(Observer):
    """Records every message the server receives, as bytes."""

    def __init__(self):
        self.messages = []

    def server_received(self, round_id, client_id, stage, message):
        self.messages.append((round_id, client_id, stage, message))


def _train(kind, *extra):
    wire = _Wire()
    simulation = build_simulation(load_config(overrides=[*SMALL, f"secure.kind={kind}", *extra]),
                                  observers=[wire])
    history = simulation.run()
    return simulation.server.weights.clone(), history, wire.messages


@pytest.fixture(scope="module")
def plain():
    return _train("none")


def test_he_gives_the_plain_weights_within_ckks_precision(plain):
    weights, history, messages = _train("he")
    # CKKS with a 2^40 scale: ~1e-8 error per coordinate and round, far below 1e-5.
    torch.testing.assert_close(weights, plain[0], rtol=0, atol=1e-5)
    assert history.final_accuracy == pytest.approx(plain[1].final_accuracy, abs=0.005)
    # The server received ciphertexts: ~32 bytes per parameter, not 4.
    uploads = [m for m in messages if m[2] == "upload"]
    assert len(uploads) == 12 * 5
    assert all(len(m[3]) > 8 * 4 * weights.numel() for m in uploads)


def test_masking_gives_the_plain_model_and_the_server_sees_only_masked_vectors(plain):
    weights, history, messages = _train("masking", "secure.clip=1.0")
    assert history.final_accuracy == pytest.approx(plain[1].final_accuracy, abs=0.005)
    # Fixed-point step 1/(2^31 - 6) per coordinate and client: weights agree to ~1e-7.
    torch.testing.assert_close(weights, plain[0], rtol=0, atol=1e-5)
    stages = {m[2] for m in messages}
    assert {"advertise", "share", "masked", "unmask"} <= stages
    masked = [m[3] for m in messages if m[2] == "masked"]
    assert len(masked) == 12 * 5
    # The first masked upload's payload tail looks uniform over the 32-bit ring, unlike an
    # update (whose fixed-point values crowd near 0 and 2^32).
    ring = np.frombuffer(unpack(masked[0]).payload[-4 * 2000:], dtype="<u4") / 2**32
    counts, _ = np.histogram(ring, bins=10, range=(0, 1))
    assert counts.min() > 120  # 200 expected per bin; far from 0 and 1 only if masked


def test_plain_server_reads_each_update_exactly(plain):
    weights, _, messages = plain
    r1 = [m for m in messages if m[0] == 1 and m[2] == "upload"]
    assert [m[1] for m in r1] == [0, 1, 2, 3, 4]
    update = np.frombuffer(unpack(r1[0][3]).payload, dtype="<f4")
    assert update.shape == (weights.numel(),) and np.abs(update).max() > 0


def test_secure_timings_and_bytes_land_in_the_history():
    _, history, _ = _train("he", "federation.rounds=2")
    record = history.rounds[0]
    assert record.extra["seconds_encode"] > 0 and record.extra["seconds_aggregate"] > 0
    assert record.extra["seconds_decode"] > 0
    assert record.bytes_up > 5 * 8 * 4 * 2410
