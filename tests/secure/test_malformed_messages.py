"""Every server rejects each kind of malformed message with a documented error, and a
rejected message changes nothing: the valid messages that follow sum exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tenseal as ts
from secure_testutil import weighted_mean

from privfed.secure import (
    ClientIdentity,
    HEAggregator,
    HEClientParty,
    HEKeyHolder,
    HEParams,
    HEServerParty,
    IdentityRegistry,
    MaskingAggregator,
    MaskingClientParty,
    MaskingServerParty,
    MessageRejectedError,
    PlainClientParty,
    PlainServerParty,
    decode_plain,
)
from privfed.secure.he.material import _pack_upload_head
from privfed.secure.masking import Ring, decode_masking
from privfed.secure.wire import pack, pack_fields, seal

ROUND = 7
NON_BYTES = ["an upload", 12345, None, [1, 2, 3], np.zeros(4)]

# --------------------------------------------------------------------------------- HE
DIM, SLOTS = 3000, 2048  # two ciphertexts per upload at degree 4096
WEIGHTS = {0: 1.0, 1: 2.0, 2: 3.0}


@pytest.fixture(scope="module")
def he():
    agg = HEAggregator(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 40))
    rng = np.random.default_rng(5)
    vectors = {c: rng.uniform(-1, 1, DIM) for c in WEIGHTS}
    for c in WEIGHTS:
        agg.identity(c)
    return agg, vectors


def he_upload(agg, sender, vector, *, scales=(40, 40), context=None, round_id=ROUND,
              transform=None, slots=SLOTS):
    """Client ``sender``'s signed upload of ``vector``, each ciphertext at its own scale."""
    context = context or agg.public.context
    x = np.asarray(vector) * WEIGHTS[sender] / sum(WEIGHTS.values())
    cts = []
    for i, bits in enumerate(scales):
        vec = ts.ckks_vector(context, x[i * slots : (i + 1) * slots].tolist(), scale=2.0**bits)
        cts.append((transform or (lambda v: v))(vec).serialize())
    head = _pack_upload_head(agg.public.fingerprint, WEIGHTS[sender], sum(WEIGHTS.values()))
    return seal(agg.identity(sender), "he", "upload", round_id, pack_fields([head, *cts]))


def he_decode(agg, server):
    """The checked mean; a fresh key holder per test (one decrypts one cohort per round)."""
    holder = HEKeyHolder(secret_material=agg.key_holder.secret_material())
    return holder.decode(server.aggregate(), ROUND, uploads=server.accepted_uploads(),
                         registry=agg.registry)


def test_the_issue_example_a_half_added_upload(he):
    """Client 2's second ciphertext has scale 2**30. Before: ciphertext 0 was added, then a
    bare ValueError; the mean of the included clients 0 and 1 (all 0.2) decoded as 0.268.
    Now: MessageRejectedError before anything is added, and the mean is 0.2."""
    agg, _ = he
    flat = np.full(DIM, 0.2)
    server = HEServerParty(ROUND, WEIGHTS, agg.registry, DIM, public=agg.public)
    for c in (0, 1):
        server.receive(HEClientParty(agg.identity(c), agg.public).encode(
            ROUND, flat, WEIGHTS[c], sum(WEIGHTS.values())))
    with pytest.raises(MessageRejectedError,
                       match=r"client 2: ciphertext 1: scale 2\*\*30, expected 2\*\*40"):
        server.receive(he_upload(agg, 2, flat, scales=(40, 30)))
    holder = HEKeyHolder(secret_material=agg.key_holder.secret_material())
    decoded = holder.decode(server.aggregate(), ROUND, uploads=None)
    assert decoded.included == (0, 1)
    assert np.abs(decoded.mean - 0.2).max() < 1e-6


def test_a_first_upload_at_another_scale_is_not_the_reference(he):
    agg, vectors = he
    server = HEServerParty(ROUND, WEIGHTS, agg.registry, DIM, public=agg.public)
    with pytest.raises(MessageRejectedError, match="ciphertext 0: scale 2\\*\\*35"):
        server.receive(he_upload(agg, 0, vectors[0], scales=(35, 35)))
    for c in WEIGHTS:
        server.receive(he_upload(agg, c, vectors[c]))
    assert np.abs(he_decode(agg, server).mean - weighted_mean(vectors, WEIGHTS, WEIGHTS)
                  ).max() < 1e-6


def he_malformed(agg, vectors):
    """Kind -> (message from client 0, the error's message)."""
    good = he_upload(agg, 0, vectors[0])
    # other primes: a chain the server's context does not know (same primes would load,
    # being indistinguishable from ours; the key holder's range check catches those)
    foreign = HEKeyHolder(HEParams(4096, (50, 40), 40)).public.context
    return {
        "truncated": (good[:-100], "does not verify"),
        "random bytes": (os.urandom(len(good)), "not a privfed.secure v1 message"),
        "header only": (good[:30], "too short"),
        "replayed": (he_upload(agg, 0, vectors[0], round_id=ROUND - 1),
                     "round 6 rejected in round 7"),
        "wrong length": (he_upload(agg, 0, vectors[0], scales=(40,)),
                         "1 ciphertexts, expected 2"),
        "wrong scale": (he_upload(agg, 0, vectors[0], scales=(40, 41)),
                        "ciphertext 1: scale 2\\*\\*41"),
        "other context": (he_upload(agg, 0, vectors[0], context=foreign),
                          "ciphertext 0 invalid"),
        "signed garbage": (seal(agg.identity(0), "he", "upload", ROUND, pack_fields(
            [_pack_upload_head(agg.public.fingerprint, 1.0, 6.0), os.urandom(999),
             os.urandom(999)])), "ciphertext 0 invalid"),
    }


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "header only", "replayed",
                                  "wrong length", "wrong scale", "other context",
                                  "signed garbage", "non-bytes", "duplicated"])
def test_he_server_rejects_and_is_unchanged(he, kind):
    agg, vectors = he
    server = HEServerParty(ROUND, WEIGHTS, agg.registry, DIM, public=agg.public)
    server.receive(he_upload(agg, 1, vectors[1]))
    if kind == "non-bytes":
        for junk in NON_BYTES:
            with pytest.raises(MessageRejectedError, match="message must be bytes"):
                server.receive(junk)
    elif kind == "duplicated":
        with pytest.raises(MessageRejectedError, match="duplicate message from client 1"):
            server.receive(he_upload(agg, 1, vectors[1]))
    else:
        message, error = he_malformed(agg, vectors)[kind]
        with pytest.raises(MessageRejectedError, match=error):
            server.receive(message)
    for c in (0, 2):
        server.receive(he_upload(agg, c, vectors[c]))
    decoded = he_decode(agg, server)
    assert decoded.included == (0, 1, 2)
    assert np.abs(decoded.mean - weighted_mean(vectors, WEIGHTS, WEIGHTS)).max() < 1e-6


def test_he_server_rejects_a_ciphertext_at_a_lower_level():
    """With moduli (60, 40, 60) a fresh ciphertext has two primes; a product by a plain
    scalar, rescaled, keeps the scale 2**40 at one prime: a lower level."""
    agg = HEAggregator(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 60))
    vectors = {c: np.full(DIM, 0.1 * (c + 1)) for c in WEIGHTS}
    for c in WEIGHTS:
        agg.identity(c)
    server = HEServerParty(ROUND, WEIGHTS, agg.registry, DIM, public=agg.public)
    dim_one = {"scales": (40,), "slots": 4096}  # degree 8192: one ciphertext per upload
    with pytest.raises(MessageRejectedError, match="ciphertext 0: primes \\(level\\) 1, "
                                                   "expected 2"):
        server.receive(he_upload(agg, 0, vectors[0], transform=lambda v: v * 1.0,
                                 **dim_one))
    for c in WEIGHTS:
        server.receive(HEClientParty(agg.identity(c), agg.public).encode(
            ROUND, vectors[c], WEIGHTS[c], sum(WEIGHTS.values())))
    assert np.abs(he_decode(agg, server).mean - weighted_mean(vectors, WEIGHTS, WEIGHTS)
                  ).max() < 1e-6


# ------------------------------------------------------------------------------ plain
def plain_upload(sender, values, round_id=ROUND):
    return pack("none", "upload", round_id, sender, np.asarray(values, "<f4").tobytes())


@pytest.mark.parametrize(("kind", "message", "error"), [
    ("beyond the clip", plain_upload(0, np.full(DIM, 1e30)), "value 1e\\+30 at coordinate 0 "
                                                             "is beyond the clip 1"),
    ("just beyond", plain_upload(0, np.r_[np.zeros(DIM - 1), 1.001]), "coordinate 2999"),
    ("infinite", plain_upload(0, np.full(DIM, np.inf)), "NaN/Inf"),
    ("nan", plain_upload(0, np.full(DIM, np.nan)), "NaN/Inf"),
    ("wrong length", plain_upload(0, np.zeros(DIM - 1)), "2999 float32, expected 3000"),
    ("truncated", plain_upload(0, np.zeros(DIM))[:-3], "expected 3000"),
    ("random bytes", os.urandom(4 * DIM + 22), "not a privfed.secure v1 message"),
    ("replayed", plain_upload(0, np.zeros(DIM), ROUND + 1), "round 8 rejected in round 7"),
    ("unknown sender", plain_upload(9, np.zeros(DIM)), "client 9, which is unknown"),
    ("duplicated", plain_upload(1, np.zeros(DIM)), "duplicate message from client 1"),
    *[("non-bytes", junk, "message must be bytes") for junk in NON_BYTES],
])
def test_plain_server_rejects_and_is_unchanged(kind, message, error):
    rng = np.random.default_rng(2)
    vectors = {c: rng.uniform(-1, 1, DIM).astype(np.float32) for c in WEIGHTS}
    vectors[2][0] = 1.0  # the clip itself is in range
    server = PlainServerParty(ROUND, WEIGHTS, IdentityRegistry(), DIM, clip=1.0)
    client = {c: PlainClientParty(ClientIdentity(c), clip=1.0) for c in WEIGHTS}
    server.receive(client[1].encode(ROUND, vectors[1], 2.0, 6.0))
    with pytest.raises(MessageRejectedError, match=error):
        server.receive(message)
    for c in (0, 2):
        server.receive(client[c].encode(ROUND, vectors[c], WEIGHTS[c], 6.0))
    decoded = decode_plain(server.aggregate(), ROUND)
    expected = sum(WEIGHTS[c] * vectors[c].astype(np.float64) for c in WEIGHTS) / 6.0
    assert decoded.included == (0, 1, 2)
    assert np.array_equal(decoded.mean, expected)


# ---------------------------------------------------------------------------- masking
def test_masking_server_rejects_junk_at_every_stage_and_is_unchanged():
    rng = np.random.default_rng(4)
    n, dim = 5, 64
    vectors = {c: rng.uniform(-1, 1, dim) for c in range(n)}
    weights = {c: 1.0 + c for c in range(n)}
    agg = MaskingAggregator()
    params = agg.round_params(n)
    ids = sorted(vectors)
    for c in ids:
        agg.identity(c)
    server = MaskingServerParty(agg.registry, params, ROUND, dim, ids)
    clients = {c: MaskingClientParty(agg.identity(c), agg.registry, params, ROUND) for c in ids}

    def deliver(stage, messages):
        sample = messages[0]
        junk = [*NON_BYTES, os.urandom(len(sample)), sample[:40], sample[:-1],
                seal(agg.identity(0), "masking", stage, ROUND, os.urandom(100))]
        for message in junk:
            with pytest.raises(MessageRejectedError):
                server.receive(message)
        for message in messages.values():
            server.receive(message)
        with pytest.raises(MessageRejectedError, match=f"duplicate '{stage}' message"):
            server.receive(sample)

    deliver("advertise", {c: clients[c].advertise(weights[c], dim) for c in ids})
    keys = server.keys_message()
    deliver("share", {c: clients[c].share_keys(keys) for c in ids})
    forward = server.forward_messages()
    deliver("masked", {c: clients[c].masked_input(forward[c], vectors[c]) for c in ids})
    survivors = server.survivors_message()
    deliver("consistency", {c: clients[c].consistency(survivors) for c in ids})
    request = server.unmask_request()
    deliver("unmask", {c: clients[c].unmask(request) for c in ids})
    mean, _, included = decode_masking(server.aggregate(), ROUND)
    ring = Ring(32, 10.0, n)
    assert included == tuple(ids)
    assert np.abs(mean - weighted_mean(vectors, weights, ids)).max() <= n * ring.step * 1.0001
