"""The plain protocol's in-process round without messages equals the round over the wire."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.secure import InvalidInputError, PlainAggregator, ThresholdError
from privfed.secure.identity import ClientIdentity
from privfed.secure.plain_sum import upload_size
from privfed.secure.wire import HEADER_SIZE


def _both(vectors, weights, **params):
    """The result of each path, or the error it raised (type and message)."""
    outcomes = []
    for wire in (False, True):
        try:
            outcomes.append(PlainAggregator(wire=wire, **params).aggregate(7, vectors, weights))
        except (InvalidInputError, ThresholdError) as err:
            outcomes.append((type(err), str(err)))
    return outcomes


def _assert_same(fast, wire):
    assert np.array_equal(fast.mean, wire.mean)
    assert fast.mean.dtype == wire.mean.dtype == np.float64
    assert fast.total_weight == wire.total_weight
    assert (fast.included, fast.dropped) == (wire.included, wire.dropped)
    assert fast.bytes_up == wire.bytes_up and fast.bytes_down == wire.bytes_down


@pytest.mark.parametrize("seed", range(3))
def test_random_vectors_give_the_wire_mean_and_byte_counts(seed):
    rng = np.random.default_rng(seed)
    dim, ids = int(rng.integers(1, 3000)), rng.choice(1000, size=int(rng.integers(1, 12)))
    vectors = {int(c): rng.normal(0, 10, dim).astype(np.float32) for c in ids}
    weights = {c: float(rng.uniform(0.1, 500)) for c in vectors}
    fast, wire = _both(vectors, weights)
    _assert_same(fast, wire)
    assert set(fast.bytes_up.values()) == {upload_size(dim)} == {HEADER_SIZE + 4 * dim}


def test_a_nan_vector_is_the_same_error_on_both_paths():
    vectors = {c: np.ones(50, np.float32) for c in range(4)}
    vectors[2][17] = np.nan
    fast, wire = _both(vectors, dict.fromkeys(vectors, 1.0))
    assert fast == wire
    assert fast[0] is InvalidInputError and "client 2 has NaN/Inf (first at index 17" in fast[1]


@pytest.mark.parametrize("mode", ["clip", "error"])
@pytest.mark.parametrize("clip", [0.1, 1.0, 3.7])
def test_an_out_of_range_vector_is_clipped_or_refused_alike(mode, clip):
    rng = np.random.default_rng(1)
    vectors = {c: rng.uniform(-1, 1, 200).astype(np.float32) for c in range(5)}
    vectors[3][[5, 9]] = [4.5, -40.0]
    fast, wire = _both(vectors, {c: c + 1.0 for c in vectors}, clip=clip, out_of_range=mode)
    if mode == "error":
        assert fast == wire
        assert f"client {0 if clip < 1 else 3} has |value|" in fast[1]
    else:
        _assert_same(fast, wire)
        assert np.abs(fast.mean).max() <= np.float32(clip)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_wide_vector_beyond_float32_is_dropped_by_the_server_alike():
    vectors = {c: np.full(30, 0.5) for c in range(3)}  # float64 inputs
    vectors[1][4] = 1e39  # finite here, infinite as float32 on the wire
    fast, wire = _both(vectors, {0: 1.0, 1: 2.0, 2: 3.0})
    _assert_same(fast, wire)
    assert fast.included == (0, 2) and fast.dropped == (1,)
    alone = _both({0: vectors[1]}, {0: 1.0})
    assert alone[0] == alone[1] == (ThresholdError, "round 7: no client message to aggregate")


def test_an_observer_receives_the_wire_bytes_and_their_count():
    rng = np.random.default_rng(3)
    vectors = {c: rng.normal(size=64).astype(np.float32) for c in (4, 1, 9)}
    seen: dict[bool, list] = {}
    results = {}
    for wire in (False, True):
        seen[wire] = []
        results[wire] = PlainAggregator(wire=wire).aggregate(
            2, vectors, dict.fromkeys(vectors, 2.0),
            on_server_message=lambda c, stage, data, log=seen[wire]: log.append((c, stage, data)))
    assert seen[False] == seen[True] and [c for c, _, _ in seen[False]] == [1, 4, 9]
    assert all(len(data) == results[False].bytes_up[c] for c, _, data in seen[False])
    _assert_same(results[False], results[True])


def test_the_key_registry_is_kept_not_rebuilt_each_round(monkeypatch):
    """Per round, the wire path reads each client's public key once, when the client first
    takes part, whatever the number of clients seen so far."""
    reads = []
    original = ClientIdentity.public_bytes

    def counted(self):
        reads.append(self.client_id)
        return original.fget(self)

    monkeypatch.setattr(ClientIdentity, "public_bytes", property(counted))
    aggregator, rng = PlainAggregator(wire=True), np.random.default_rng(0)
    per_round = []
    for round_id in range(40):
        cohort = rng.choice(200, size=10, replace=False)
        new = len(set(cohort.tolist()) - set(aggregator.registry.keys))
        before = len(reads)
        aggregator.aggregate(round_id, {int(c): np.ones(8, np.float32) for c in cohort},
                             {int(c): 1.0 for c in cohort})
        per_round.append(len(reads) - before - new)
    assert per_round == [0] * 40
    assert len(aggregator.registry.keys) == len(set(reads))
