"""Common interface, plain baseline and input validation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from secure_testutil import weighted_mean

from privfed.secure import (
    AggregationResult,
    InvalidInputError,
    MessageRejectedError,
    PlainAggregator,
    PlainClientParty,
    PlainServerParty,
    make_aggregator,
)
from privfed.secure.wire import HEADER_SIZE


def test_package_imports_alone():
    code = (
        "import sys, privfed.secure; "
        "bad = [m for m in sys.modules if m.startswith('privfed.') "
        "and not m.startswith('privfed.secure')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_aggregator_rejects_unknown_kind_and_param():
    with pytest.raises(ValueError, match=r"'bogus'.*allowed.*'none', 'he', 'masking'"):
        make_aggregator("bogus")
    with pytest.raises(ValueError, match=r"unknown parameter.*'rings'.*allowed"):
        make_aggregator("masking", rings=3)
    with pytest.raises(ValueError, match=r"out_of_range='drop'.*allowed"):
        make_aggregator("none", out_of_range="drop")
    assert isinstance(make_aggregator("none"), PlainAggregator)


def test_plain_weighted_mean_and_accounting(clients10):
    vectors, weights = clients10
    seen = []
    result = make_aggregator("none").aggregate(
        5, vectors, weights, on_server_message=lambda c, s, b: seen.append((c, s, len(b)))
    )
    assert isinstance(result, AggregationResult)
    # float32 transport: error <= float32 rounding of each input (|x| <= 1) = 2**-24.
    np.testing.assert_allclose(result.mean, weighted_mean(vectors, weights, range(10)),
                               atol=2**-24, rtol=0)
    assert result.total_weight == sum(weights.values())
    assert result.included == tuple(range(10)) and result.dropped == ()
    assert sorted(c for c, _, _ in seen) == list(range(10))
    assert {s for _, s, _ in seen} == {"upload"}
    assert all(result.bytes_up[c] == n for c, _, n in seen)
    assert all(4000 <= n <= 4200 for _, _, n in seen)  # 1000 float32 + header + signature
    assert set(result.seconds) == {"encode", "aggregate", "decode"}


def test_plain_dropout_excludes_client(clients10):
    vectors, weights = clients10
    result = make_aggregator("none").aggregate(1, vectors, weights, dropouts={"upload": [3, 4]})
    assert result.dropped == (3, 4)
    np.testing.assert_allclose(
        result.mean, weighted_mean(vectors, weights, result.included), atol=2**-24
    )
    assert result.total_weight == sum(weights[c] for c in result.included)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (np.ones(999, np.float32), r"client 3 has length 999, expected 1000"),
        (np.full(1000, np.nan, np.float32), r"client 3 has NaN/Inf"),
        (np.full(1000, np.inf, np.float32), r"client 3 has NaN/Inf"),
        (np.ones((10, 100), np.float32), r"client 3 must be flat"),
        (np.full(1000, 5.0, np.float32), r"client 3 has \|value\| 5 > clip=2"),
    ],
)
def test_bad_vectors_rejected_then_usable(clients10, bad, pattern):
    vectors, weights = clients10
    agg = make_aggregator("none", clip=2.0)
    with pytest.raises(InvalidInputError, match=pattern):
        agg.aggregate(0, {**vectors, 3: bad}, weights)
    result = agg.aggregate(0, vectors, weights)
    np.testing.assert_allclose(result.mean, weighted_mean(vectors, weights, range(10)),
                               atol=2**-24)


def test_clip_mode_clips(clients10):
    vectors, weights = clients10
    big = {**vectors, 0: np.full(1000, 5.0, np.float32)}
    result = make_aggregator("none", clip=2.0, out_of_range="clip").aggregate(0, big, weights)
    expected = weighted_mean({**vectors, 0: np.full(1000, 2.0)}, weights, range(10))
    np.testing.assert_allclose(result.mean, expected, atol=2**-24)


@pytest.mark.parametrize(
    ("weights", "pattern"),
    [({0: 1.0, 1: -2.0}, r"weight of client 1 must be finite and > 0"),
     ({0: 1.0, 1: float("nan")}, r"weight of client 1"),
     ({0: 1.0}, r"same client ids")],
)
def test_bad_weights(weights, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        make_aggregator("none").aggregate(0, {0: np.zeros(3), 1: np.zeros(3)}, weights)


def test_bad_dropout_stage():
    with pytest.raises(InvalidInputError, match=r"'masked'.*allowed stages.*'upload'"):
        make_aggregator("none").aggregate(0, {0: np.zeros(3)}, {0: 1.0},
                                          dropouts={"masked": [0]})


def test_plain_server_rejects_replay_unknown_duplicate_and_truncation(clients10):
    vectors, weights = clients10
    agg = PlainAggregator()
    ids = [agg.identity(c) for c in range(3)]
    server = PlainServerParty(2, {c: weights[c] for c in range(3)}, agg.registry, 1000)

    def msg(c, rnd=2):
        return PlainClientParty(ids[c]).encode(rnd, vectors[c], weights[c], server.total_weight)

    with pytest.raises(MessageRejectedError, match=r"round 1 rejected in round 2"):
        server.receive(msg(0, rnd=1))
    stranger = PlainClientParty(agg.identity(99)).encode(2, vectors[0], 1.0, 1.0)
    with pytest.raises(MessageRejectedError, match=r"client 99, which is unknown"):
        server.receive(stranger)
    good = msg(0)
    with pytest.raises(MessageRejectedError, match=r"vector of 999 float32, expected 1000"):
        server.receive(good[:-4])
    # Plain messages are framed, not signed: a flipped payload bit goes unnoticed (integrity
    # is the transport's job); the protecting aggregators' tests check signatures.
    assert len(good) == HEADER_SIZE + 4 * 1000
    assert server.receive(good) == 0
    with pytest.raises(MessageRejectedError, match=r"duplicate message from client 0"):
        server.receive(good)
    server.receive(msg(1))
    server.receive(msg(2))
    assert server.included == (0, 1, 2)
