"""Masking aggregator: exact sums under dropouts, thresholds, mask uniformity, bad messages."""

from __future__ import annotations

import numpy as np
import pytest
from secure_testutil import weighted_mean

from privfed.secure import (
    AuthenticationError,
    InvalidInputError,
    MaskingAggregator,
    MaskingClientParty,
    MaskingParams,
    MaskingServerParty,
    MessageRejectedError,
    ThresholdError,
    make_aggregator,
)
from privfed.secure.masking import Ring, decode_masking, default_threshold, neighbours
from privfed.secure.wire import seal

N, DIM = 10, 1000
T = default_threshold(N)  # 7: floor(2 * 10 / 3) + 1
STAGES = ("advertise", "share", "masked", "consistency", "unmask")


def error_bound(ring: Ring, weights, included) -> float:
    """Worst-case per-coordinate error of the decoded weighted mean.

    Client k sends round(p_k x_k / step) with p_k = w_k / W; stochastic rounding moves each
    coordinate by less than ONE step (not step/2: it may round away from the nearest point),
    so the decoded sum of the m included clients is off by < m * step, and dividing by
    sum(p_k over included) = W_incl / W scales that bound by W / W_incl.
    """
    total = sum(weights.values())
    included_weight = sum(weights[c] for c in included)
    return len(included) * ring.step * total / included_weight + 1e-12


def check_exact(result, vectors, weights, ring=None):
    ring = ring or Ring(32, 10.0, len(vectors))
    expected = weighted_mean(vectors, weights, result.included)
    err = np.abs(result.mean - expected).max()
    assert err <= error_bound(ring, weights, result.included)
    assert result.total_weight == sum(weights[c] for c in result.included)


def test_default_threshold_values():
    assert [default_threshold(n) for n in (2, 3, 10, 100)] == [2, 3, 7, 67]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("count", [0, 1, N - T])
def test_exact_sum_with_dropouts(clients10, stage, count):
    vectors, weights = clients10
    dropped = list(range(2, 2 + count))
    result = make_aggregator("masking").aggregate(
        11, vectors, weights, dropouts={stage: dropped}
    )
    # Clients dropping after "masked" already sent their masked input: they stay included.
    expected_dropped = () if stage in ("consistency", "unmask") else tuple(dropped)
    assert result.dropped == expected_dropped
    check_exact(result, vectors, weights)


@pytest.mark.parametrize("stage", STAGES)
def test_too_many_dropouts_is_a_clear_error(clients10, stage):
    vectors, weights = clients10
    seen = []
    agg = make_aggregator("masking")
    with pytest.raises(ThresholdError, match=rf"only {T - 1} clients .* threshold t={T}"):
        agg.aggregate(12, vectors, weights, dropouts={stage: range(N - T + 1)},
                      on_server_message=lambda c, s, b: seen.append(s))
    # Nothing was revealed: at most the unmask answers of too few clients (< t shares).
    assert seen.count("unmask") < T
    check_exact(agg.aggregate(13, vectors, weights), vectors, weights)


def test_dropouts_at_several_stages(clients10):
    vectors, weights = clients10
    result = make_aggregator("masking").aggregate(
        14, vectors, weights, dropouts={"share": [0], "masked": [5], "unmask": [9]}
    )
    assert result.dropped == (0, 5)
    check_exact(result, vectors, weights)


def chi_square_top_byte(values: np.ndarray) -> float:
    counts = np.bincount((values >> np.uint32(24)).astype(np.int64), minlength=256)
    expected = values.size / 256
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("value", [0.0, 10.0])
def test_masked_vector_is_uniform_over_ring(value):
    dim = 50_000
    vectors = {c: np.full(dim, value if c == 0 else 0.0) for c in range(4)}
    weights = dict.fromkeys(range(4), 1.0)
    captured = {}

    def hook(client, stage, data):
        if stage == "masked":
            captured[client] = data

    result = make_aggregator("masking").aggregate(0, vectors, weights, on_server_message=hook)
    assert result.mean[0] == pytest.approx(value / 4, abs=1e-6)
    body = captured[0][-(4 * dim + 64) : -64]  # strip header and signature
    masked = np.frombuffer(body, dtype="<u4")
    # Chi-square on 256 bins (255 dof: mean 255, sd 22.6); 420 is ~7 sd, P ~ 1e-10.
    assert chi_square_top_byte(masked) < 420
    assert abs(masked.mean() / 2**32 - 0.5) < 6 * (1 / np.sqrt(12 * dim))
    # The same statistic on the unmasked quantised input is enormous: the test can fail.
    ring = Ring(32, 10.0, 4)
    assert chi_square_top_byte(ring.quantize(vectors[0] / 4)) > 10_000


def test_secagg_plus_neighbourhood(clients10):
    vectors, weights = clients10
    graph = neighbours(range(N), 3, 4)
    assert all(len(p) == 4 and c not in p for c, p in graph.items())
    assert all(c in graph[p] for c, peers in graph.items() for p in peers)
    # Degree 4 meets the threat model only without colluding clients (see test_malicious_server).
    agg = make_aggregator("masking", neighbourhood=4, corrupt_fraction=0.0)
    full = make_aggregator("masking").aggregate(3, vectors, weights)
    result = agg.aggregate(3, vectors, weights, dropouts={"masked": [4]})
    assert result.dropped == (4,)
    check_exact(result, vectors, weights)
    # Shares and key material go to 4 neighbours instead of 9 peers.
    assert result.bytes_down[0] < full.bytes_down[0]


@pytest.mark.parametrize(("bits", "dtype_size"), [(16, 2), (24, 4), (48, 8)])
def test_other_ring_sizes(clients10, bits, dtype_size):
    vectors, weights = clients10
    result = make_aggregator("masking", ring_bits=bits, clip=1.0).aggregate(0, vectors, weights)
    ring = Ring(bits, 1.0, N)
    expected = weighted_mean(vectors, weights, range(N))
    assert np.abs(result.mean - expected).max() <= error_bound(ring, weights, range(N))
    assert DIM * dtype_size < result.bytes_up[0] < DIM * dtype_size + 4000


def test_parameter_validation():
    with pytest.raises(InvalidInputError, match=r"ring_bits=4; allowed"):
        MaskingParams(ring_bits=4)
    with pytest.raises(InvalidInputError, match=r"neighbourhood=3; allowed: 'full', 'secagg\+'"):
        MaskingParams(neighbourhood=3)
    with pytest.raises(InvalidInputError, match=r"threshold"):
        MaskingParams(threshold=11, cohort_size=10)
    with pytest.raises(InvalidInputError, match=r"server_model='lazy'; allowed"):
        MaskingParams(server_model="lazy")
    with pytest.raises(ThresholdError, match="only 1 clients responded, fewer than .* t=2"):
        make_aggregator("masking").aggregate(0, {1: np.zeros(3)}, {1: 1.0})


def test_out_of_range_clip_or_error(clients10):
    vectors, weights = clients10
    big = {**vectors, 1: np.full(DIM, 3.0)}
    with pytest.raises(InvalidInputError, match=r"client 1 has \|value\| 3 > clip=2"):
        make_aggregator("masking", clip=2.0).aggregate(0, big, weights)
    result = make_aggregator("masking", clip=2.0, out_of_range="clip").aggregate(0, big, weights)
    clipped = {**vectors, 1: np.full(DIM, 2.0)}
    assert np.abs(result.mean - weighted_mean(clipped, weights, range(N))).max() < 1e-6


class Protocol:
    """Party-level run of one round, so tests can inject bad messages."""

    def __init__(self, agg: MaskingAggregator, round_id: int, vectors, weights):
        self.round_id, self.vectors, self.weights = round_id, vectors, weights
        self.ids = sorted(vectors)
        for c in self.ids:
            agg.identity(c)
        self.agg = agg
        params = agg.round_params(len(self.ids))
        self.server = MaskingServerParty(agg.registry, params, round_id, DIM, self.ids)
        self.clients = {
            c: MaskingClientParty(agg.identity(c), agg.registry, params, round_id)
            for c in self.ids
        }

    def to_forward(self) -> dict[int, bytes]:
        for c in self.ids:
            self.server.receive(self.clients[c].advertise(self.weights[c], DIM))
        keys = self.server.keys_message()
        for c in self.ids:
            self.server.receive(self.clients[c].share_keys(keys))
        return self.server.forward_messages()

    def masked(self, forward) -> dict[int, bytes]:
        return {c: self.clients[c].masked_input(forward[c], self.vectors[c]) for c in self.ids}

    def finish(self) -> np.ndarray:
        signed_set = self.server.survivors_message()
        for c in self.ids:
            self.server.receive(self.clients[c].consistency(signed_set))
        request = self.server.unmask_request()
        for c in self.ids:
            self.server.receive(self.clients[c].unmask(request))
        return decode_masking(self.server.aggregate(), self.round_id)[0]


def test_tampered_share_fails_authentication_then_round_completes(clients10):
    vectors, weights = clients10
    proto = Protocol(MaskingAggregator(), 21, vectors, weights)
    forward = proto.to_forward()
    tampered = bytearray(forward[3])
    tampered[-5] ^= 1
    with pytest.raises(AuthenticationError, match=r"share from client \d+ failed authentication"):
        proto.clients[3].masked_input(bytes(tampered), vectors[3])
    with pytest.raises(InvalidInputError, match="client 3 has length 10, expected 1000"):
        proto.clients[3].masked_input(forward[3], vectors[3][:10])
    for c, msg in proto.masked(forward).items():
        assert proto.server.receive(msg) == c
    mean = proto.finish()
    ring = Ring(32, 10.0, N)
    expected = weighted_mean(vectors, weights, range(N))
    assert np.abs(mean - expected).max() <= error_bound(ring, weights, range(N))


def test_server_rejects_replay_unknown_duplicate_wrong_length(clients10):
    vectors, weights = clients10
    agg = MaskingAggregator()
    old = Protocol(agg, 1, vectors, weights)
    old_masked = old.masked(old.to_forward())
    proto = Protocol(agg, 2, vectors, weights)
    forward = proto.to_forward()
    new_masked = proto.masked(forward)
    server = proto.server
    with pytest.raises(MessageRejectedError, match=r"round 1 rejected in round 2 \(replay\?\)"):
        server.receive(old_masked[0])
    with pytest.raises(MessageRejectedError, match=r"client 55, which is unknown"):
        server.receive(seal(agg.identity(55), "masking", "masked", 2, bytes(4 * DIM)))
    with pytest.raises(MessageRejectedError, match=r"masked vector of 8 bytes, expected 1000"):
        server.receive(seal(agg.identity(0), "masking", "masked", 2, bytes(8)))
    with pytest.raises(AuthenticationError):
        server.receive(new_masked[0][:-1] + bytes([new_masked[0][-1] ^ 1]))
    with pytest.raises(MessageRejectedError, match=r"stage 'advertise', expected stage 'masked'"):
        server.receive(seal(agg.identity(0), "masking", "advertise", 2, b""))
    for c in proto.ids:
        server.receive(new_masked[c])
    with pytest.raises(MessageRejectedError, match="duplicate 'masked' message from client 0"):
        server.receive(new_masked[0])
    # A client answers the unmask request only once (never both share kinds).
    signed_set = server.survivors_message()
    for c in proto.ids:
        server.receive(proto.clients[c].consistency(signed_set))
    request = server.unmask_request()
    answer = proto.clients[0].unmask(request)
    with pytest.raises(MessageRejectedError, match="stage 'unmask' called at stage 'done'"):
        proto.clients[0].unmask(request)
    server.receive(answer)
    for c in proto.ids[1:]:
        server.receive(proto.clients[c].unmask(request))
    mean = decode_masking(server.aggregate(), 2)[0]
    assert np.abs(mean - weighted_mean(vectors, weights, range(N))).max() < 1e-7


def test_every_dropout_pattern_up_to_n_minus_t_decodes_exactly():
    """5 clients, t = 3 (dropout_fraction 0.4): every way for up to n - t = 2 clients to drop,
    each before any of the five stages, including the consistency round, gives the exact
    weighted sum of the clients whose masked input arrived; a third dropout is a clean
    ThresholdError."""
    rng = np.random.default_rng(11)
    vectors = {c: rng.uniform(-1, 1, 16) for c in range(5)}
    weights = {c: float(c + 1) for c in range(5)}
    agg = MaskingAggregator(dropout_fraction=0.4)
    assert agg.round_params(5).planned().threshold == 3
    before_masked = {"advertise", "share", "masked"}
    patterns = [{}] + [{(c, s)} for c in range(5) for s in STAGES]
    patterns += [{(a, sa), (b, sb)} for a in range(5) for b in range(a + 1, 5)
                 for sa in STAGES for sb in STAGES]
    for pattern in patterns:
        dropouts: dict[str, list[int]] = {}
        for c, stage in pattern:
            dropouts.setdefault(stage, []).append(c)
        result = agg.aggregate(3, vectors, weights, dropouts=dropouts)
        lost = sorted(c for c, stage in pattern if stage in before_masked)
        assert result.dropped == tuple(lost)
        advertised = 5 - sum(1 for _, s in pattern if s == "advertise")
        check_exact(result, vectors, weights, Ring(32, 10.0, advertised))
    with pytest.raises(ThresholdError):
        agg.aggregate(3, vectors, weights, dropouts={"consistency": [0, 1, 2]})


def test_a_round_larger_than_planned_raises_the_threshold():
    params = MaskingParams(cohort_size=10)
    assert params.for_view(10).threshold == 7
    assert params.for_view(20).threshold == 14
    sparse = MaskingParams(cohort_size=10, neighbourhood=4, corrupt_fraction=0.0)
    assert sparse.for_view(10).degree == 4
    with pytest.raises(ThresholdError, match="more than the planned cohort_size=10"):
        sparse.for_view(200)
    with pytest.raises(ThresholdError, match="fewer than the 9 that SecAgg"):
        sparse.for_view(8)


def test_secagg_plus_round_of_sixty_with_dropouts_decodes_exactly():
    """A sparse graph's round (k = 26 of 59 peers) recovers the dropped clients' pairwise
    masks from their neighbours' shares alone."""
    n = 60
    rng = np.random.default_rng(5)
    vectors = {c: rng.uniform(-1, 1, 200) for c in range(n)}
    weights = {c: float(c % 7 + 1) for c in range(n)}
    agg = make_aggregator("masking", neighbourhood="secagg+")
    plan = agg.round_params(n).planned()
    assert not plan.complete
    result = agg.aggregate(4, vectors, weights, dropouts={"masked": [3, 40]})
    assert result.dropped == (3, 40)
    check_exact(result, vectors, weights)
    assert max(result.bytes_down.values()) < make_aggregator("masking").aggregate(
        4, vectors, weights).bytes_down[0]
