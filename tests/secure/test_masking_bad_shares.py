"""Masking: an authenticated client that reveals wrong Shamir shares does not lose the round.

The server checks each share's index, recovers every seed from shares that verify against
the owner's signed advert, and names the client whose shares disagree.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from secure_testutil import weighted_mean

from privfed.secure import (
    LocalTransport,
    MaskingAggregator,
    MaskingClientParty,
    MaskingEndpoint,
    MaskingServerParty,
    MessageRejectedError,
    RoundMeter,
    ThresholdError,
    run_masking,
)
from privfed.secure.masking import Ring, decode_masking
from privfed.secure.masking.messages import pack_reveals, unpack_reveals
from privfed.secure.masking.recovery import recover_verified
from privfed.secure.masking.shamir import split_secret
from privfed.secure.wire import open_signed, seal

N, DIM, ROUND = 10, 200, 5


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    vectors = {c: rng.uniform(-1, 1, DIM) for c in range(N)}
    weights = {c: float(c + 1) for c in range(N)}
    return vectors, weights


def run_to_unmask(agg, vectors, weights, *, drop_masked=()):
    """Party-level round up to the unmask request; returns (server, clients, request)."""
    ids = sorted(vectors)
    params = agg.round_params(len(ids))
    for c in ids:
        agg.identity(c)
    server = MaskingServerParty(agg.registry, params, ROUND, DIM, ids)
    clients = {c: MaskingClientParty(agg.identity(c), agg.registry, params, ROUND) for c in ids}
    for c in ids:
        server.receive(clients[c].advertise(weights[c], DIM))
    keys = server.keys_message()
    for c in ids:
        server.receive(clients[c].share_keys(keys))
    forward = server.forward_messages()
    alive = [c for c in ids if c not in drop_masked]
    for c in alive:
        server.receive(clients[c].masked_input(forward[c], vectors[c]))
    survivors = server.survivors_message()
    for c in alive:
        server.receive(clients[c].consistency(survivors))
    return server, {c: clients[c] for c in alive}, server.unmask_request()


def corrupt(agg, answer, *, flip=True, index=None):
    """Client's signed unmask answer with every share altered (still authenticated).

    ``flip``: add a random nonzero error to each share; ``index``: relabel each share."""
    env = open_signed(answer, agg.registry, kind="masking", stage="unmask", round_id=ROUND,
                      allowed=agg.registry.keys)
    reveals = unpack_reveals(env.payload, env.sender)
    rng = np.random.default_rng(env.sender)
    bad = {}
    for owner, (kind, idx, share) in reveals.items():
        if flip:  # a random error per share, so that two liars' errors never cancel
            share = bytes(a ^ b for a, b in zip(share, rng.bytes(len(share)), strict=True))
        bad[owner] = (kind, idx if index is None else index, share)
    return seal(agg.identity(env.sender), "masking", "unmask", ROUND, pack_reveals(bad))


def assert_exact(mean, vectors, weights, included):
    """Within the quantisation bound of the ring (see test_masking.error_bound)."""
    ring = Ring(32, 10.0, N)
    bound = len(included) * ring.step * sum(weights.values()) / sum(
        weights[c] for c in included)
    assert np.abs(mean - weighted_mean(vectors, weights, included)).max() <= bound


def test_one_client_with_wrong_shares_is_named_and_the_round_completes(inputs, caplog):
    vectors, weights = inputs
    agg = MaskingAggregator()
    server, clients, request = run_to_unmask(agg, vectors, weights)
    for c, client in clients.items():
        answer = client.unmask(request)
        server.receive(corrupt(agg, answer) if c == 4 else answer)
    with caplog.at_level(logging.WARNING):
        message = server.aggregate()
    mean, _, included = decode_masking(message, ROUND)
    assert included == tuple(range(N))
    assert_exact(mean, vectors, weights, included)
    # client 4 holds index 5 of every seed, among the t = 7 smallest: each seed needed it
    assert server.bad_shares == {4: tuple(range(N))}
    assert "client 4 revealed wrong Shamir shares" in caplog.text
    assert server.stage == "done"


def test_wrong_key_seed_share_of_a_dropped_client(inputs):
    vectors, weights = inputs
    agg = MaskingAggregator()
    server, clients, request = run_to_unmask(agg, vectors, weights, drop_masked=(9,))
    for c, client in clients.items():
        answer = client.unmask(request)
        server.receive(corrupt(agg, answer) if c == 2 else answer)
    mean, _, included = decode_masking(server.aggregate(), ROUND)
    assert included == tuple(range(9))
    assert_exact(mean, vectors, weights, included)
    assert server.bad_shares == {2: tuple(range(N))}  # 9's mask key seed included


def test_a_share_under_the_wrong_index_is_rejected_without_side_effects(inputs):
    vectors, weights = inputs
    agg = MaskingAggregator()
    server, clients, request = run_to_unmask(agg, vectors, weights)
    answers = {c: client.unmask(request) for c, client in clients.items()}
    # client 4 (index 5) relabels its true shares as client 0's (index 1): they would
    # overwrite client 0's share of every seed
    with pytest.raises(MessageRejectedError,
                       match=r"client 4: revealed its share of client 0 under Shamir index 1, "
                             r"expected 5"):
        server.receive(corrupt(agg, answers[4], flip=False, index=1))
    for c in clients:
        server.receive(answers[c])
    mean, _, included = decode_masking(server.aggregate(), ROUND)
    assert_exact(mean, vectors, weights, included)
    assert server.bad_shares == {}


def test_a_failed_unmask_stage_is_not_marked_done_and_can_be_retried(inputs):
    vectors, weights = inputs
    agg = MaskingAggregator()
    server, clients, request = run_to_unmask(agg, vectors, weights)
    answers = {c: client.unmask(request) for c, client in clients.items()}
    for c in range(6):  # t - 1 = 6 answers
        server.receive(answers[c])
    with pytest.raises(ThresholdError, match="only 6 clients responded"):
        server.aggregate()
    assert server.stage == "unmask"
    for c in range(6, N):
        server.receive(answers[c])
    mean, _, included = decode_masking(server.aggregate(), ROUND)
    assert_exact(mean, vectors, weights, included)
    with pytest.raises(MessageRejectedError, match="round 5 is finished"):
        server.receive(answers[0])


@pytest.mark.parametrize(("liars", "recovered"), [((0, 1, 2), True), ((0, 1, 2, 3), False)])
def test_as_many_wrong_shares_as_the_surplus_allows(inputs, liars, recovered):
    """10 shares of each seed, t = 7: three liars leave t good shares, four leave t - 1."""
    vectors, weights = inputs
    agg = MaskingAggregator()
    server, clients, request = run_to_unmask(agg, vectors, weights)
    for c, client in clients.items():
        answer = client.unmask(request)
        server.receive(corrupt(agg, answer) if c in liars else answer)
    if not recovered:
        with pytest.raises(ThresholdError, match="too many wrong shares to tell which"):
            server.aggregate()
        assert server.stage == "unmask"
        return
    mean, _, included = decode_masking(server.aggregate(), ROUND)
    assert_exact(mean, vectors, weights, included)
    assert server.bad_shares == {c: tuple(range(N)) for c in liars}


class LyingEndpoint:
    """An honest client's endpoint whose unmask answer carries wrong (signed) shares."""

    def __init__(self, inner, agg):
        self.inner, self.agg = inner, agg

    def respond(self, stage, message):
        reply = self.inner.respond(stage, message)
        return corrupt(self.agg, reply) if stage == "unmask" else reply


def test_the_driver_finishes_the_round_and_names_the_client(inputs, caplog):
    vectors, weights = inputs
    agg = MaskingAggregator()
    params = agg.round_params(N)
    ids = sorted(vectors)
    for c in ids:
        agg.identity(c)
    server = MaskingServerParty(agg.registry, params, ROUND, DIM, ids)
    endpoints = {
        c: MaskingEndpoint(MaskingClientParty(agg.identity(c), agg.registry, params, ROUND),
                           vectors[c])
        for c in ids
    }
    endpoints[1] = LyingEndpoint(endpoints[1], agg)
    with caplog.at_level(logging.WARNING):
        decoded = run_masking(LocalTransport(endpoints), server, weights,
                              RoundMeter(ids, None))
    assert decoded.included == tuple(ids)
    assert_exact(decoded.mean, vectors, weights, decoded.included)
    assert set(server.bad_shares) == {1}
    assert "client 1 revealed wrong Shamir shares" in caplog.text


@pytest.mark.parametrize("bad", [(), (1,), (2, 5), (1, 2, 3)])
def test_recover_verified_finds_the_seed_and_exactly_the_bad_indices(bad):
    secret = bytes(range(16))
    shares = dict(enumerate(split_secret(secret, 4, 9), start=1))
    for index in bad:
        shares[index] = bytes(16)
    calls = []

    def verify(seed):
        calls.append(seed)
        return seed == secret

    found = recover_verified(shares, 4, verify, who="client 0")
    assert found.secret == secret
    assert found.bad == bad
    with pytest.raises(ThresholdError, match="none of 3 subsets"):
        recover_verified(shares, 4, lambda seed: False, who="client 0", max_subsets=3)
