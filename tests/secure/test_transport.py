"""The plain and masking drivers over a transport that is not LocalTransport: same result and
bytes as the aggregators, dropouts and garbage replies dropped, plain payload codecs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from secure_testutil import BytesTransport, weighted_mean

from privfed.secure import (
    DecodedAggregate,
    InvalidInputError,
    LocalTransport,
    MaskingAggregator,
    MaskingClientParty,
    MaskingEndpoint,
    MaskingServerParty,
    MessageRejectedError,
    OneShotEndpoint,
    PlainAggregator,
    PlainClientParty,
    PlainServerParty,
    RoundMeter,
    RoundRequest,
    StageRouter,
    ThresholdError,
    pack_decoded,
    run_masking,
    run_plain,
    unpack_decoded,
)
from privfed.secure.masking import Ring, quantize
from privfed.secure.wire import HEADER_SIZE

N, DIM = 10, 1000


def assert_same_round(decoded, meter, result):
    """The driver's round equals the aggregator's: mean, cohort and bytes."""
    np.testing.assert_array_equal(decoded.mean, result.mean)
    assert decoded.total_weight == result.total_weight
    assert decoded.included == result.included
    assert meter.bytes_up == result.bytes_up
    assert meter.bytes_down == result.bytes_down


def plain_round(agg, round_id, vectors, weights, transport_cls=BytesTransport, **options):
    """The plain driver over a BytesTransport for ``agg``'s clients; (decoded, meter, transport)."""
    endpoints = {c: OneShotEndpoint(PlainClientParty(agg.identity(c), codec=agg.codec), vectors[c])
                 for c in vectors}
    transport = transport_cls(endpoints, **options)
    server = PlainServerParty(round_id, weights, agg.registry, DIM, codec=agg.codec)
    meter = RoundMeter(vectors, None)
    return run_plain(transport, server, meter), meter, transport


def test_plain_driver_over_bytes_matches_the_aggregator(clients10):
    vectors, weights = clients10
    agg = PlainAggregator()
    result = agg.aggregate(3, vectors, weights)
    decoded, meter, transport = plain_round(agg, 3, vectors, weights)
    assert_same_round(decoded, meter, result)
    # The request is a real message (round, weight, total, length), not counted in bytes_down
    # (it rides with the round's broadcast); the uploads are counted as carried.
    assert transport.total("up") == meter.bytes_up
    assert {(d, s) for d, s, _, _ in transport.log} == {("down", "upload"), ("up", "upload")}


class RestoringEndpoint:
    """A Flower-like node: the party lives only as bytes between stages."""

    def __init__(self, identity, registry, params, round_id, vector):
        self.identity, self.registry, self.params = identity, registry, params
        self.vector = np.asarray(vector, dtype="<f4")
        self.state = MaskingClientParty(identity, registry, params, round_id).to_bytes()

    def respond(self, stage, message):
        party = MaskingClientParty.from_bytes(self.state, self.identity, self.registry, self.params)
        reply = MaskingEndpoint(party, self.vector).respond(stage, message)
        self.state = party.to_bytes()
        return reply


def masking_round(agg, round_id, vectors, weights, **options):
    """The masking driver over a BytesTransport of restoring endpoints."""
    params = agg.round_params(len(vectors))
    registry = agg.registry
    endpoints = {c: RestoringEndpoint(agg.identity(c), registry, params, round_id, vectors[c])
                 for c in vectors}
    transport = BytesTransport(endpoints, **options)
    server = MaskingServerParty(registry, params, round_id, DIM, sorted(vectors))
    meter = RoundMeter(vectors, None)
    return run_masking(transport, server, weights, meter), meter, transport


@pytest.fixture
def fixed_coins(monkeypatch):
    """The same stochastic-rounding coins in every run, so two rounds quantise alike."""
    monkeypatch.setattr(quantize.secrets, "randbits", lambda bits: 12345)


def test_masking_driver_over_bytes_matches_the_aggregator(clients10, fixed_coins):
    vectors, weights = clients10
    vectors = {c: v.astype(np.float64) for c, v in vectors.items()}
    agg = MaskingAggregator()
    for c in vectors:
        agg.identity(c)
    result = agg.aggregate(4, vectors, weights)
    decoded, meter, transport = masking_round(agg, 4, vectors, weights)
    assert_same_round(decoded, meter, result)
    assert transport.total("up") == meter.bytes_up
    assert transport.total("down", ["share", "masked", "consistency", "unmask"]) == (
        meter.bytes_down
    )


def check_sum(decoded, vectors, weights, advertised):
    ring = Ring(32, 10.0, advertised)
    total = sum(weights.values())
    bound = len(decoded.included) * ring.step * total / decoded.total_weight + 1e-12
    expected = weighted_mean(vectors, weights, decoded.included)
    assert np.abs(decoded.mean - expected).max() <= bound
    assert decoded.total_weight == sum(weights[c] for c in decoded.included)


def test_masking_driver_recovers_dropouts_at_every_stage():
    rng = np.random.default_rng(5)
    n = 16
    vectors = {c: rng.uniform(-1, 1, DIM) for c in range(n)}
    weights = {c: float(c + 1) for c in range(n)}
    agg = MaskingAggregator(corrupt_fraction=0.0, dropout_fraction=0.35)
    t = agg.round_params(n).planned().threshold
    assert t == n - 5  # five dropouts tolerated, one per stage
    for c in vectors:
        agg.identity(c)
    drop = {"advertise": [0], "share": [1], "masked": [2], "consistency": [3], "unmask": [4]}
    decoded, meter, transport = masking_round(agg, 6, vectors, weights, drop=drop)
    assert decoded.included == tuple(range(3, n))  # 3 and 4 sent their masked input
    check_sum(decoded, vectors, weights, n - 1)
    assert transport.total("up") == {c: b for c, b in meter.bytes_up.items() if b}
    assert meter.bytes_up[0] == 0
    with pytest.raises(ThresholdError, match=rf"threshold t={t}"):
        masking_round(agg, 7, vectors, weights, drop={**drop, "unmask": [4, 5]})


@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "consistency", "unmask"])
def test_masking_driver_drops_a_client_that_answers_garbage(clients10, stage, caplog):
    vectors, weights = clients10
    agg = MaskingAggregator()
    for c in vectors:
        agg.identity(c)
    with caplog.at_level(logging.WARNING, logger="privfed.secure.driver"):
        decoded, _, _ = masking_round(agg, 8, vectors, weights, garble={stage: [3]})
    assert f"stage {stage}: client 3's message rejected" in caplog.text
    lost = stage in ("advertise", "share", "masked")
    assert (3 in decoded.included) is not lost
    check_sum(decoded, vectors, weights, N - (stage == "advertise"))


def test_plain_driver_drops_garbage_and_impostors(clients10, caplog):
    vectors, weights = clients10
    agg = PlainAggregator()
    for c in vectors:
        agg.identity(c)
    upload_of_1 = {}

    class Impostor(BytesTransport):
        """Client 2's node answers with client 1's upload."""

        def exchange(self, stage, outbox):
            replies = super().exchange(stage, outbox)
            upload_of_1[0] = replies[1]
            replies[2] = replies[1]
            return replies

    with caplog.at_level(logging.WARNING, logger="privfed.secure.driver"):
        decoded, meter, _ = plain_round(agg, 2, vectors, weights, transport_cls=Impostor,
                                        garble={"upload": [5]})
    assert decoded.included == (0, 1, 3, 4, 6, 7, 8, 9)
    assert "client 5's message rejected" in caplog.text
    assert "client 2's message rejected: it carries client 1's message" in caplog.text
    np.testing.assert_allclose(decoded.mean, weighted_mean(vectors, weights, decoded.included),
                               atol=2**-24)
    assert meter.bytes_up[2] == len(upload_of_1[0]) and meter.bytes_up[5] == len(b"garbage")


class Float16:
    """A toy payload codec: float16 values."""

    def encode(self, vector, round_id, client_id):
        return vector.astype("<f2").tobytes()

    def decode(self, payload, dim, round_id):
        if len(payload) != 2 * dim:
            raise MessageRejectedError(f"float16 payload of {len(payload)} bytes for {dim}")
        return np.frombuffer(payload, dtype="<f2").astype(np.float64)


def test_plain_with_a_payload_codec(clients10):
    vectors, weights = clients10
    result = PlainAggregator(codec=Float16()).aggregate(0, vectors, weights)
    # float16 keeps 11 significant bits: each |x| < 1 is off by at most 2**-12.
    err = np.abs(result.mean - weighted_mean(vectors, weights, range(N))).max()
    assert 2**-24 < err <= 2**-12
    assert result.bytes_up == dict.fromkeys(range(N), HEADER_SIZE + 2 * DIM)
    plain = PlainAggregator().aggregate(0, vectors, weights)
    assert plain.bytes_up == dict.fromkeys(range(N), HEADER_SIZE + 4 * DIM)


def test_the_server_rejects_what_the_codec_decodes_badly(clients10):
    vectors, weights = clients10

    class Bad(Float16):
        def decode(self, payload, dim, round_id):
            return np.full(dim if round_id else dim - 1, np.nan if round_id else 0.0)

    agg = PlainAggregator(codec=Bad())
    ident = agg.identity(0)
    for round_id, pattern in [(0, r"decoded shape \(999,\), expected \(1000,\)"),
                              (1, "vector has NaN/Inf")]:
        server = PlainServerParty(round_id, {0: 1.0}, agg.registry, DIM, codec=Bad())
        message = PlainClientParty(ident, codec=Bad()).encode(round_id, vectors[0], 1.0, 1.0)
        with pytest.raises(MessageRejectedError, match=pattern):
            server.receive(message)
    with pytest.raises(ThresholdError, match="no client message to aggregate"):
        agg.aggregate(1, vectors, weights)


def test_round_request_and_decoded_round_trip():
    request = RoundRequest(7, 2.5, 10.0, 1000)
    assert RoundRequest.from_bytes(request.to_bytes("masking"), "masking") == request
    with pytest.raises(MessageRejectedError, match="expected a 'none' round request"):
        RoundRequest.from_bytes(request.to_bytes("masking"), "none")
    with pytest.raises(MessageRejectedError, match="weight -1.0 and total 10.0"):
        RoundRequest.from_bytes(RoundRequest(7, -1.0, 10.0, 5).to_bytes("none"), "none")
    decoded = DecodedAggregate(np.array([0.5, -1.0]), 3.0, (1, 4))
    back = unpack_decoded(pack_decoded(decoded))
    assert back.included == (1, 4) and back.total_weight == 3.0
    np.testing.assert_array_equal(back.mean, decoded.mean)
    with pytest.raises(MessageRejectedError):
        unpack_decoded(b"garbage")
    with pytest.raises(MessageRejectedError, match="NaN/Inf"):
        unpack_decoded(pack_decoded(DecodedAggregate(np.array([np.nan]), 1.0, (0,))))


def test_endpoints_refuse_other_stages_rounds_and_lengths(clients10):
    vectors, weights = clients10
    agg = MaskingAggregator()
    params = agg.round_params(N)
    party = MaskingClientParty(agg.identity(0), agg.registry, params, 3)
    endpoint = MaskingEndpoint(party, vectors[0])
    with pytest.raises(MessageRejectedError, match="request for round 4"):
        endpoint.respond("advertise", RoundRequest(4, 1.0, 1.0, DIM).to_bytes("masking"))
    with pytest.raises(MessageRejectedError, match="expects 999 values, this client has 1000"):
        endpoint.respond("advertise", RoundRequest(3, 1.0, 1.0, 999).to_bytes("masking"))
    with pytest.raises(MessageRejectedError, match="no stage 'upload'"):
        endpoint.respond("upload", b"")
    with pytest.raises(MessageRejectedError, match="stage 'share' called at stage 'advertise'"):
        endpoint.respond("share", b"")
    plain = OneShotEndpoint(PlainClientParty(agg.identity(0)), vectors[0])
    with pytest.raises(MessageRejectedError, match="expects 5 values"):
        plain.respond("upload", RoundRequest(0, 1.0, 1.0, 5).to_bytes("none"))
    with pytest.raises(MessageRejectedError, match="no endpoint for stage 'decrypt'"):
        StageRouter({"upload": plain}).respond("decrypt", b"")
    with pytest.raises(InvalidInputError, match=r"addresses clients \[7\] without an endpoint"):
        LocalTransport({0: plain}).exchange("upload", {7: b""})
