"""CKKS aggregator: accuracy, key separation and rejection of bad messages."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from secure_testutil import weighted_mean

from privfed.secure import (
    AuthenticationError,
    HEAggregator,
    HEClient,
    HEKeyHolder,
    HEParams,
    HEPublicContext,
    HEServer,
    InvalidInputError,
    MessageRejectedError,
    make_aggregator,
)


@pytest.fixture(scope="module")
def he_agg():
    return make_aggregator("he")


def test_he_mean_10_clients_1e5_params(he_agg):
    rng = np.random.default_rng(1)
    vectors = {c: rng.standard_normal(100_000).astype(np.float32) for c in range(10)}
    weights = {c: float(rng.integers(50, 500)) for c in range(10)}
    result = he_agg.aggregate(0, vectors, weights)
    expected = weighted_mean(vectors, weights, range(10))
    rel = np.linalg.norm(result.mean - expected) / np.linalg.norm(expected)
    assert rel < 1e-6
    assert result.total_weight == pytest.approx(sum(weights.values()))
    # 25 ciphertexts of 4096 slots, ~32 bytes per slot (degree 8192, moduli [60, 40]).
    per_param = result.bytes_up[0] / 100_000
    assert 32.0 < per_param < 33.0
    assert result.bytes_down[0] == pytest.approx(result.bytes_up[0], rel=0.01)


def test_he_dropout_and_reuse_across_rounds(he_agg, clients10):
    vectors, weights = clients10
    for rnd in (1, 2):
        result = he_agg.aggregate(rnd, vectors, weights, dropouts={"upload": [rnd]})
        assert result.dropped == (rnd,)
        expected = weighted_mean(vectors, weights, result.included)
        assert np.abs(result.mean - expected).max() < 1e-6


def test_server_context_cannot_decrypt(he_agg, clients10):
    vectors, weights = clients10
    server = HEServer(0, weights, he_agg.registry, 1000, public=he_agg.public)
    assert not server.public.context.has_secret_key()
    client = HEClient(he_agg.identity(0), he_agg.public)
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
    server = HEServer(4, w, he_agg.registry, 1000, public=he_agg.public)
    client = {c: HEClient(he_agg.identity(c), he_agg.public) for c in ids}
    msg = {c: client[c].encode(4, vectors[c], w[c], server.total_weight) for c in ids}

    foreign = HEClient(he_agg.identity(0), HEKeyHolder().public)
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
    unknown = HEClient(he_agg.identity(77), he_agg.public).encode(4, vectors[0], 1.0, 1.0)
    with pytest.raises(MessageRejectedError, match="client 77, which is unknown"):
        server.receive(unknown)
    for c in ids:
        server.receive(msg[c])
    with pytest.raises(MessageRejectedError, match="duplicate message from client 0"):
        server.receive(msg[0])
    decoded = he_agg.key_holder.decode(server.aggregate(), 4)
    assert decoded.included == (0, 1, 2)
    assert np.abs(decoded.mean - weighted_mean(vectors, w, ids)).max() < 1e-6
    with pytest.raises(MessageRejectedError, match="round 4 rejected in round 5"):
        he_agg.key_holder.decode(server.aggregate(), 5)


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
