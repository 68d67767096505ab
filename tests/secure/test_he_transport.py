"""The HE driver over a transport that is not LocalTransport: the decrypt stage travels as
bytes to the key holder, which refuses a tampered request; the key set-up."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from secure_testutil import BytesTransport, weighted_mean

from privfed.secure import (
    AuthenticationError,
    ClientIdentity,
    ConsistencyError,
    HEAggregator,
    HEClientParty,
    HEKeygenEndpoint,
    HEParams,
    HEPublicEndpoint,
    HEServerParty,
    IdentityRegistry,
    KeyHolderEndpoint,
    MessageRejectedError,
    OneShotEndpoint,
    RoundMeter,
    StageRouter,
    ThresholdError,
    run_he,
    set_up_he,
)
from privfed.secure.he import open_decrypt_request, pack_decrypt_request

N, DIM = 10, 1000


@pytest.fixture(scope="module")
def agg():
    return HEAggregator()


def he_round(agg, round_id, vectors, weights, *, key_holder=None, server_model="malicious",
             **options):
    """The HE driver over a BytesTransport; every client may be asked to decrypt."""
    holder = KeyHolderEndpoint(agg.key_holder, agg.registry, server_model=server_model,
                               min_clients=agg.min_clients, clip=agg.clip)
    endpoints = {
        c: StageRouter({"upload": OneShotEndpoint(HEClientParty(agg.identity(c), agg.public),
                                                  vectors[c]),
                        "decrypt": holder})
        for c in vectors
    }
    transport = BytesTransport(endpoints, **options)
    server = HEServerParty(round_id, weights, agg.registry, DIM, public=agg.public)
    meter = RoundMeter(vectors, None)
    decoded = run_he(transport, server, meter, key_holder=key_holder, server_model=server_model)
    return decoded, meter, transport


def test_he_driver_over_bytes_matches_the_aggregator(agg, clients10):
    vectors, weights = clients10
    result = agg.aggregate(1, vectors, weights)
    decoded, meter, transport = he_round(agg, 2, vectors, weights)
    assert decoded.included == result.included and decoded.total_weight == result.total_weight
    # Fresh CKKS encryptions: the two means differ by the encryption noise only.
    bound = agg.key_holder.error_bound(N)
    assert np.abs(decoded.mean - result.mean).max() <= 2 * bound
    assert np.abs(decoded.mean - weighted_mean(vectors, weights, range(N))).max() <= bound
    assert meter.bytes_up == result.bytes_up and meter.bytes_down == result.bytes_down
    # The key holder (client 0) got one decrypt message: its bytes are client 0's bytes_down.
    (decrypt,) = [e for e in transport.log if e[:2] == ("down", "decrypt")]
    assert decrypt[:3] == ("down", "decrypt", 0) and decrypt[3] == meter.bytes_down[0]
    assert all(meter.bytes_down[c] == 0 for c in range(1, N))
    assert transport.total("up", ["upload"]) == meter.bytes_up  # the mean is not an upload


def test_a_named_key_holder_outside_the_cohort_decrypts(agg, clients10):
    vectors, weights = clients10
    cohort = {c: vectors[c] for c in range(1, 4)}
    decoded, meter, transport = he_round(agg, 3, {**cohort, 0: vectors[0]},
                                         {c: weights[c] for c in range(4)}, key_holder=0,
                                         drop={"upload": [0]})
    assert decoded.included == (1, 2, 3)
    assert ("down", "decrypt", 0) in [e[:3] for e in transport.log]
    assert meter.bytes_down[0] > 0


def alter_upload(stage, client, message):
    """Flip one bit in the second upload the decrypt request carries."""
    if stage != "decrypt":
        return message
    round_id, aggregate, uploads = open_decrypt_request(message)
    tampered = bytearray(uploads[1])
    tampered[len(tampered) // 2] ^= 0x40
    return pack_decrypt_request(round_id, aggregate, [uploads[0], bytes(tampered), *uploads[2:]])


def drop_upload(stage, client, message):
    """Forward the aggregate without the first upload."""
    if stage != "decrypt":
        return message
    round_id, aggregate, uploads = open_decrypt_request(message)
    return pack_decrypt_request(round_id, aggregate, uploads[1:])


@pytest.mark.parametrize(("alter", "error", "pattern"), [
    (alter_upload, AuthenticationError, "signature of client 1 does not verify"),
    (drop_upload, ConsistencyError, "forwarded uploads are from"),
])
def test_a_tampered_decrypt_request_is_refused_by_the_key_holder(agg, clients10, alter, error,
                                                                 pattern):
    vectors, weights = clients10
    with pytest.raises(error, match=pattern):
        he_round(agg, 4, vectors, weights, alter=alter)
    # Over a transport that loses a failing node, the round ends without a mean.
    with pytest.raises(ThresholdError, match=r"key holder \(client 0\) did not decrypt"):
        he_round(agg, 5, vectors, weights, alter=alter, catch=True)


def test_the_key_holder_decides_its_server_model(agg, clients10):
    vectors, weights = clients10
    hbc, _, transport = he_round(agg, 6, vectors, weights, server_model="honest-but-curious")
    assert hbc.included == tuple(range(N))
    (decrypt,) = [e for e in transport.log if e[:2] == ("down", "decrypt")]
    assert decrypt[3] < 2 * transport.total("up", ["upload"])[1]  # the aggregate alone
    holder = KeyHolderEndpoint(agg.key_holder, agg.registry, server_model="honest-but-curious")
    request = pack_decrypt_request(7, b"aggregate", [b"an upload"])
    with pytest.raises(MessageRejectedError, match="never holds an individual upload"):
        holder.respond("decrypt", request)


def test_a_missing_or_garbled_decryption_is_a_threshold_error(agg, clients10):
    vectors, weights = clients10
    with pytest.raises(ThresholdError, match="no reply"):
        he_round(agg, 8, vectors, weights, drop={"decrypt": [0]})
    with pytest.raises(ThresholdError, match="malformed payload"):
        he_round(agg, 9, vectors, weights, garble={"decrypt": [0]})


def test_key_set_up_over_bytes(caplog):
    identities = {c: ClientIdentity(c) for c in range(3)}
    registry = IdentityRegistry.from_identities(identities.values())
    params = HEParams()
    keygen = HEKeygenEndpoint(identities[0])
    publics = {c: HEPublicEndpoint() for c in range(3)}
    endpoints = {c: StageRouter({"he_public": publics[c]}) for c in range(3)}
    endpoints[0].routes["he_keygen"] = keygen
    transport = BytesTransport(endpoints)
    public = set_up_he(transport, params, registry, range(3), key_holder=0)
    assert public.fingerprint == keygen.key_holder.public.fingerprint
    assert all(p.public.fingerprint == public.fingerprint for p in publics.values())
    assert {(d, s) for d, s, _, _ in transport.log} == {
        ("down", "he_keygen"), ("up", "he_keygen"), ("down", "he_public"), ("up", "he_public")}
    # A client with pinned keys refuses a relayed registry that differs from them.
    impostor = IdentityRegistry.from_identities([ClientIdentity(c) for c in range(3)])
    publics[2] = endpoints[2].routes["he_public"] = HEPublicEndpoint(pinned=impostor)
    with pytest.raises(AuthenticationError, match="key substitution"):
        set_up_he(transport, params, registry, range(3), key_holder=0)
    # Over a transport that loses a failing node, the others are set up and it is logged.
    lossy = BytesTransport(endpoints, catch=True)
    with caplog.at_level(logging.WARNING, logger="privfed.secure.he.driver"):
        set_up_he(lossy, params, registry, range(3), key_holder=0)
    assert "clients [2] did not store the CKKS public context" in caplog.text
    with pytest.raises(ThresholdError, match=r"key holder \(client 0\) did not answer"):
        set_up_he(BytesTransport(endpoints, drop={"he_keygen": [0]}), params, registry,
                  range(3), key_holder=0)
    # A key holder that signs with another identity is refused by the server.
    endpoints[0].routes["he_keygen"] = HEKeygenEndpoint(identities[1])
    with pytest.raises(MessageRejectedError, match="signed by client 1, not by the key holder 0"):
        set_up_he(transport, params, registry, range(3), key_holder=0)
