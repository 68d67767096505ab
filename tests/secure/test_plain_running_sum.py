"""A plain round fed a few clients at a time (PlainSum) is sum_plain's round, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from privfed.secure import InvalidInputError, ThresholdError
from privfed.secure.plain_sum import PlainSum, sum_plain

PARAMS = {"clip": None, "out_of_range": "error"}


def _outcome(run):
    """``run()``'s result, or the type and message of what it raised."""
    try:
        return run()
    except (InvalidInputError, ThresholdError) as err:
        return type(err), str(err)


def _streamed(vectors, weights, groups=1, seed=0, **params):
    """PlainSum fed the clients in ``groups`` consecutive groups of increasing ids."""
    params = {**PARAMS, **params}
    ids = sorted(vectors)
    cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, len(ids)), groups - 1,
                                                     replace=False)) if groups > 1 else []
    running = PlainSum(7, **params)
    for group in np.split(np.array(ids), cuts):
        running.add({int(c): vectors[c] for c in group}, {int(c): weights[c] for c in group})
    return running.result()


def _both(vectors, weights, groups=1, **params):
    batch = _outcome(lambda: sum_plain(7, vectors, weights, **{**PARAMS, **params}))
    return batch, _outcome(lambda: _streamed(vectors, weights, groups, **params))


def _assert_same(batch, streamed):
    assert np.array_equal(batch.mean, streamed.mean)
    assert (batch.total_weight, batch.included, batch.dropped) == \
        (streamed.total_weight, streamed.included, streamed.dropped)
    assert (batch.bytes_up, batch.bytes_down) == (streamed.bytes_up, streamed.bytes_down)
    assert set(batch.seconds) == set(streamed.seconds) == {"encode", "aggregate", "decode"}


@pytest.mark.parametrize("seed", range(4))
def test_random_groups_give_the_batch_mean_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    dim, ids = int(rng.integers(1, 3000)), rng.choice(1000, size=12, replace=False)
    vectors = {int(c): rng.normal(0, 10, dim).astype(np.float32) for c in ids}
    weights = {c: float(rng.uniform(0.1, 500)) for c in vectors}
    batch, streamed = _both(vectors, weights, groups=int(rng.integers(1, 12)))
    _assert_same(batch, streamed)


def test_the_sum_depends_on_the_order_so_the_test_above_can_fail():
    rng = np.random.default_rng(5)
    terms = [rng.normal(0, 1e6, 50).astype(np.float32) * w for w in rng.uniform(0.1, 9, 12)]
    forward, backward = np.zeros(50), np.zeros(50)
    for term in terms:
        forward += term
    for term in reversed(terms):
        backward += term
    assert not np.array_equal(forward, backward)


@pytest.mark.parametrize("mode", ["clip", "error"])
def test_an_out_of_range_vector_is_clipped_or_refused_alike(mode):
    rng = np.random.default_rng(1)
    vectors = {c: rng.uniform(-1, 1, 200).astype(np.float32) for c in range(6)}
    vectors[3][[5, 9]] = [4.5, -40.0]
    vectors[5][0] = 7.0
    batch, streamed = _both(vectors, {c: c + 1.0 for c in vectors}, groups=3, clip=3.7,
                            out_of_range=mode)
    if mode == "error":
        assert batch == streamed and "client 3 has |value| 40" in batch[1]
    else:
        _assert_same(batch, streamed)


def test_a_bad_vector_is_raised_before_an_earlier_bad_weight_as_in_the_batch():
    vectors = {c: np.ones(20, np.float32) for c in range(6)}
    vectors[4][3] = np.nan
    weights = {c: 1.0 for c in vectors} | {1: 0.0, 2: -1.0}
    batch, streamed = _both(vectors, weights, groups=3)
    assert batch == streamed and "client 4 has NaN/Inf" in batch[1]
    vectors[4][3] = 0.0
    batch, streamed = _both(vectors, weights, groups=3)
    assert batch == streamed and "weight of client 1" in batch[1]


def test_a_vector_of_another_length_is_the_same_error():
    vectors = {c: np.ones(20 + (c == 3), np.float32) for c in range(5)}
    batch, streamed = _both(vectors, dict.fromkeys(vectors, 1.0), groups=2)
    assert batch == streamed and "client 3 has length 21, expected 20" in batch[1]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_wide_vector_beyond_float32_is_dropped_alike():
    vectors = {c: np.full(30, 0.5) for c in range(3)}
    vectors[1][4] = 1e39
    batch, streamed = _both(vectors, {0: 1.0, 1: 2.0, 2: 3.0}, groups=2)
    _assert_same(batch, streamed)
    assert streamed.dropped == (1,)
    alone = _both({0: vectors[1]}, {0: 1.0})
    assert alone[0] == alone[1] == (ThresholdError, "round 7: no client message to aggregate")


def test_an_empty_round_and_clients_out_of_order_are_refused():
    assert _outcome(PlainSum(7, **PARAMS).result) == \
        _outcome(lambda: sum_plain(7, {}, {}, **PARAMS))
    running = PlainSum(7, **PARAMS)
    running.add({5: np.ones(3, np.float32)}, {5: 1.0})
    running.add({2: np.ones(3, np.float32)}, {2: 1.0})
    with pytest.raises(InvalidInputError, match="client 2 added after client 5"):
        running.result()
    with pytest.raises(InvalidInputError, match="weights of"):
        running.add({8: np.ones(3, np.float32)}, {9: 1.0})


def test_the_running_sum_holds_two_float64_vectors_and_no_clients():
    running = PlainSum(7, **PARAMS)
    vector = np.ones(1000, np.float32)
    running.add({0: vector}, {0: 2.0})
    held = [v for v in vars(running).values() if isinstance(v, np.ndarray)]
    assert len(held) == 2 and all(v.dtype == np.float64 for v in held)
    assert not any(np.shares_memory(v, vector) for v in held)
