"""CKKS aggregator: accuracy, key separation, the key holder's bytes and rejection of bad
messages (attacks by a lying server: test_malicious_he.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from secure_testutil import weighted_mean

from privfed.secure import (
    AuthenticationError,
    HEAggregator,
    HEClientParty,
    HEKeyHolder,
    HEParams,
    HEPublicContext,
    HEServerParty,
    IdentityRegistry,
    InvalidInputError,
    MessageRejectedError,
    ThresholdError,
    make_aggregator,
)


@pytest.fixture(scope="module")
def he_agg():
    return make_aggregator("he")


def _ckks_bound(agg, result, weights):
    """The key holder's bound on the mean's CKKS error for this result."""
    total = sum(weights.values())
    return agg.key_holder.error_bound(len(result.included)) * total / result.total_weight


def test_he_mean_10_clients_1e5_params(he_agg):
    rng = np.random.default_rng(1)
    vectors = {c: rng.standard_normal(100_000).astype(np.float32) for c in range(10)}
    weights = {c: float(rng.integers(50, 500)) for c in range(10)}
    result = he_agg.aggregate(0, vectors, weights)
    expected = weighted_mean(vectors, weights, range(10))
    err = np.abs(result.mean - expected).max()
    assert 0 < err <= _ckks_bound(he_agg, result, weights) < 1e-5
    assert result.total_weight == pytest.approx(sum(weights.values()))
    # 25 ciphertexts of 4096 slots, ~32 bytes per slot (degree 8192, moduli [60, 40]).
    per_param = result.bytes_up[0] / 100_000
    assert 32.0 < per_param < 33.0
    # The key holder (client 0, the smallest id) receives every upload and the aggregate,
    # which is as large as one upload; nobody else receives anything.
    aggregate_bytes = result.bytes_down[0] - sum(result.bytes_up.values())
    assert aggregate_bytes == pytest.approx(result.bytes_up[0], rel=0.01)
    assert all(result.bytes_down[c] == 0 for c in range(1, 10))


def test_he_dropout_and_reuse_across_rounds(he_agg, clients10):
    vectors, weights = clients10
    for rnd in (1, 2):
        result = he_agg.aggregate(rnd, vectors, weights, dropouts={"upload": [rnd]})
        assert result.dropped == (rnd,)
        expected = weighted_mean(vectors, weights, result.included)
        assert np.abs(result.mean - expected).max() <= _ckks_bound(he_agg, result, weights)


def test_the_key_holder_is_the_smallest_included_client(he_agg, clients10):
    vectors, weights = clients10
    result = he_agg.aggregate(11, vectors, weights, dropouts={"upload": [0, 5]})
    assert result.included == (1, 2, 3, 4, 6, 7, 8, 9)
    ups = sum(result.bytes_up[c] for c in result.included)
    assert result.bytes_down[0] == 0
    assert ups < result.bytes_down[1] < ups + 1.01 * result.bytes_up[1]
    assert sum(result.bytes_down.values()) == result.bytes_down[1]


def test_min_clients_is_at_least_two_and_enforced(clients10):
    vectors, weights = clients10
    with pytest.raises(InvalidInputError, match=r"min_clients=1; allowed: an int >= 2"):
        HEAggregator(min_clients=1)
    agg = HEAggregator()
    assert agg.min_clients == 2
    with pytest.raises(ThresholdError, match="holds 1 clients, fewer than min_clients = 2"):
        agg.aggregate(1, {0: vectors[0]}, {0: weights[0]})
    agg3 = HEAggregator(key_holder=agg.key_holder, min_clients=3)
    three = {c: vectors[c] for c in range(3)}
    w3 = {c: weights[c] for c in range(3)}
    assert agg3.aggregate(2, three, w3).included == (0, 1, 2)
    with pytest.raises(ThresholdError, match="holds 2 clients, fewer than min_clients = 3"):
        agg3.aggregate(3, three, w3, dropouts={"upload": [1]})


def test_server_context_cannot_decrypt(he_agg, clients10):
    vectors, weights = clients10
    server = HEServerParty(0, weights, he_agg.registry, 1000, public=he_agg.public)
    assert not server.public.context.has_secret_key()
    client = HEClientParty(he_agg.identity(0), he_agg.public)
    msg = client.encode(0, vectors[0], weights[0], server.total_weight)
    server.receive(msg)
    ciphertext = server._aggregate_fields()[1]
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(server.public.context, ciphertext).decrypt()
    with pytest.raises(InvalidInputError, match="secret key"):
        HEPublicContext(he_agg.key_holder.secret_material())


def test_shared_key_holder_decodes(he_agg, clients10):
    vectors, weights = clients10
    other = HEKeyHolder(secret_material=he_agg.key_holder.secret_material())
    assert other.public.fingerprint == he_agg.public.fingerprint
    agg = HEAggregator(key_holder=other)
    result = agg.aggregate(3, vectors, weights)
    assert np.abs(result.mean - weighted_mean(vectors, weights, range(10))).max() < 1e-6


def test_he_server_rejects_bad_messages_and_stays_usable(he_agg, clients10):
    vectors, weights = clients10
    ids = [0, 1, 2]
    w = {c: weights[c] for c in ids}
    server = HEServerParty(4, w, he_agg.registry, 1000, public=he_agg.public)
    client = {c: HEClientParty(he_agg.identity(c), he_agg.public) for c in ids}
    msg = {c: client[c].encode(4, vectors[c], w[c], server.total_weight) for c in ids}

    foreign = HEClientParty(he_agg.identity(0), HEKeyHolder().public)
    with pytest.raises(MessageRejectedError, match="different context"):
        server.receive(foreign.encode(4, vectors[0], w[0], server.total_weight))
    tampered = bytearray(msg[0])
    tampered[len(tampered) // 2] ^= 0x40
    with pytest.raises(AuthenticationError, match="client 0 does not verify"):
        server.receive(bytes(tampered))
    replay = client[1].encode(3, vectors[1], w[1], server.total_weight)
    with pytest.raises(MessageRejectedError, match="round 3 rejected in round 4"):
        server.receive(replay)
    short = client[2].encode(4, vectors[2][:500], w[2], server.total_weight)
    with pytest.raises(MessageRejectedError, match="ciphertext 0 holds 500 values, expected 1000"):
        server.receive(short)
    unknown = HEClientParty(he_agg.identity(77), he_agg.public).encode(4, vectors[0], 1.0, 1.0)
    with pytest.raises(MessageRejectedError, match="client 77, which is unknown"):
        server.receive(unknown)
    for c in ids:
        server.receive(msg[c])
    with pytest.raises(MessageRejectedError, match="duplicate message from client 0"):
        server.receive(msg[0])
    uploads = server.accepted_uploads()
    assert uploads == [msg[c] for c in ids]
    decoded = he_agg.key_holder.decode(server.aggregate(), 4, uploads=uploads,
                                       registry=he_agg.registry)
    assert decoded.included == (0, 1, 2)
    assert np.abs(decoded.mean - weighted_mean(vectors, w, ids)).max() < 1e-6
    with pytest.raises(MessageRejectedError, match="round 4 rejected in round 5"):
        he_agg.key_holder.decode(server.aggregate(), 5, uploads=uploads,
                                 registry=he_agg.registry)


def test_he_upload_signs_its_weights_and_the_server_checks_them(he_agg, clients10):
    vectors, weights = clients10
    w = {c: weights[c] for c in (0, 1)}
    server = HEServerParty(12, w, he_agg.registry, 1000, public=he_agg.public)
    client = HEClientParty(he_agg.identity(0), he_agg.public)
    with pytest.raises(MessageRejectedError, match=r"signed weight 10 of total 20, announced "
                                                   r"10 of 30"):
        server.receive(client.encode(12, vectors[0], w[0], 20.0))
    with pytest.raises(InvalidInputError, match="weight 40 of client 0 exceeds the announced"):
        client.encode(12, vectors[0], 40.0, 30.0)
    server.receive(client.encode(12, vectors[0], w[0], server.total_weight))
    assert server.included == (0,)


def test_signed_public_context_round_trip(he_agg):
    holder = he_agg.identity(0)
    signed = he_agg.key_holder.signed_public_material(holder)
    registry = IdentityRegistry.from_identities([holder])
    public = HEPublicContext.from_signed(signed, registry, key_holder=0)
    assert public.fingerprint == he_agg.public.fingerprint
    assert not public.context.has_secret_key()


def test_he_input_validation(he_agg, clients10):
    vectors, weights = clients10
    with pytest.raises(InvalidInputError, match="NaN/Inf"):
        he_agg.aggregate(0, {**vectors, 2: np.full(1000, np.nan)}, weights)
    with pytest.raises(InvalidInputError, match=r"\|value\| 1e\+06 > clip=262144"):
        he_agg.aggregate(0, {**vectors, 2: np.full(1000, 1e6)}, weights)
    with pytest.raises(InvalidInputError, match=r"poly_modulus_degree=1000; allowed values"):
        HEParams(poly_modulus_degree=1000)
    with pytest.raises(InvalidInputError, match=r"coeff_mod_bit_sizes=\(60, 60, 60, 60\)"):
        HEParams(coeff_mod_bit_sizes=(60, 60, 60, 60))
