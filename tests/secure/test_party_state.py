"""Saving and restoring party state between protocol stages (one process per stage)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from secure_testutil import weighted_mean

from privfed.secure import (
    ClientIdentity,
    IdentityRegistry,
    InvalidInputError,
    MaskingClientParty,
    MaskingParams,
    MaskingServerParty,
    MessageRejectedError,
)
from privfed.secure.masking import Ring, decode_masking
from privfed.secure.wire import pack_fields, unpack_fields

ROUND, DIM = 5, 200
IDS = (0, 1, 2, 3)
DROPPED_AFTER_SHARE = 2
PARAMS = MaskingParams(cohort_size=len(IDS))  # t = 3


def error_bound(ring: Ring, weights, included) -> float:
    """Quantisation bound of the decoded weighted mean (as in ``test_masking.error_bound``).

    Each included client's quantised input is off by less than one step per coordinate, so
    the sum is off by < n * step, scaled by W / W_included after dividing by the weights.
    """
    total = sum(weights.values())
    included_weight = sum(weights[c] for c in included)
    return len(included) * ring.step * total / included_weight + 1e-12


@pytest.fixture
def parties():
    """Identities (saved as raw keys), registry, vectors and weights of 4 clients."""
    identities = {c: ClientIdentity(c) for c in IDS}
    registry = IdentityRegistry.from_identities(identities.values())
    keys = {c: ident.private_bytes() for c, ident in identities.items()}
    rng = np.random.default_rng(3)
    vectors = {c: rng.uniform(-1, 1, DIM).astype(np.float32) for c in IDS}
    weights = {c: float(c + 1) for c in IDS}
    return keys, registry, vectors, weights


def restore(keys, registry, c: int, state: bytes) -> MaskingClientParty:
    """What a fresh process does: rebuild the identity, then the client, from bytes."""
    identity = ClientIdentity.from_private_bytes(c, keys[c])
    client = MaskingClientParty.from_bytes(state, identity, registry, PARAMS)
    assert client.to_bytes() == state  # lossless: restoring and saving again is the identity
    return client


def rechecksum(state: bytes, edit) -> bytes:
    """Apply ``edit`` to the fields of a saved state and fix its checksum."""
    fields = unpack_fields(state[5:-32])
    edit(fields)
    body = state[:5] + pack_fields(fields)
    return body + hashlib.sha256(body).digest()


# ---------------------------------------------------------------------------- identity
def test_identity_round_trip_signs_for_the_original_key():
    original = ClientIdentity(7)
    raw = original.private_bytes()
    assert isinstance(raw, bytes) and len(raw) == 32
    restored = ClientIdentity.from_private_bytes(7, raw)
    assert restored.client_id == 7
    assert restored.public_bytes == original.public_bytes
    assert restored.private_bytes() == raw
    registry = IdentityRegistry.from_identities([original])
    registry.verify(7, restored.sign(b"stage 2"), b"stage 2")
    assert restored.sign(b"x") == original.sign(b"x")  # Ed25519 signing is deterministic


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_identity_rejects_wrong_key_length(size):
    with pytest.raises(InvalidInputError, match=rf"client 4 has {size} bytes, expected a raw 32"):
        ClientIdentity.from_private_bytes(4, bytes(size))


def test_identity_rejects_non_bytes():
    with pytest.raises(InvalidInputError, match="must be bytes, got str"):
        ClientIdentity.from_private_bytes(4, "0" * 32)


def test_pinned_key_files_round_trip_hex_and_pem(tmp_path):
    identities = [ClientIdentity(c) for c in (0, 5)]
    registry = IdentityRegistry.from_identities(identities)
    registry.to_file(tmp_path / "keys.json")
    assert IdentityRegistry.from_file(tmp_path / "keys.json").keys == registry.keys
    pem = Ed25519PublicKey.from_public_bytes(identities[1].public_bytes).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "pem.json").write_text(json.dumps({"5": pem}))
    assert IdentityRegistry.from_file(tmp_path / "pem.json").keys == {5: registry.keys[5]}
    x25519 = X25519PrivateKey.generate().public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    for content, message in [
        ('{"5": ' + json.dumps(x25519) + "}", "client 5: a X25519PublicKey, expected Ed25519"),
        ('{"five": "00"}', "key 'five' is not a client id"),
        ('{"4294967295": "00"}', r"not a client id \(an int in 0..4294967294\)"),
        ("[1, 2]", "expected a non-empty JSON object"),
        ("{", "expected a JSON object"),
    ]:
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(InvalidInputError, match=message):
            IdentityRegistry.from_file(tmp_path / "bad.json")


def test_identity_key_file_is_private_and_restores_the_key(tmp_path):
    identity = ClientIdentity(3)
    identity.to_file(tmp_path / "site.pem")
    assert (tmp_path / "site.pem").stat().st_mode & 0o777 == 0o600
    restored = ClientIdentity.from_file(3, tmp_path / "site.pem")
    assert restored.public_bytes == identity.public_bytes
    (tmp_path / "other.pem").write_bytes(X25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(InvalidInputError, match="expected an Ed25519 private key"):
        ClientIdentity.from_file(3, tmp_path / "other.pem")
    with pytest.raises(InvalidInputError, match="missing.pem"):
        ClientIdentity.from_file(3, tmp_path / "missing.pem")


# ---------------------------------------------------------------------------- masking client
def test_full_round_restoring_every_client_before_every_stage(parties):
    keys, registry, vectors, weights = parties
    server = MaskingServerParty(registry, PARAMS, ROUND, DIM, IDS)
    state = {}
    for c in IDS:
        identity = ClientIdentity.from_private_bytes(c, keys[c])
        state[c] = MaskingClientParty(identity, registry, PARAMS, ROUND).to_bytes()

    def stage(clients, expected: str, act) -> None:
        for c in clients:
            client = restore(keys, registry, c, state[c])
            assert client.stage == expected
            server.receive(act(c, client))
            state[c] = client.to_bytes()

    # The keys are restored exactly: two restorations advertise the same signed bytes.
    first = restore(keys, registry, 0, state[0]).advertise(weights[0], DIM)
    assert restore(keys, registry, 0, state[0]).advertise(weights[0], DIM) == first

    stage(IDS, "advertise", lambda c, cl: cl.advertise(weights[c], DIM))
    keys_message = server.keys_message()
    stage(IDS, "share", lambda c, cl: cl.share_keys(keys_message))
    forward = server.forward_messages()
    survivors = [c for c in IDS if c != DROPPED_AFTER_SHARE]
    stage(survivors, "masked", lambda c, cl: cl.masked_input(forward[c], vectors[c]))
    signed_set = server.survivors_message()
    stage(survivors, "consistency", lambda c, cl: cl.consistency(signed_set))
    request = server.unmask_request()
    stage(survivors, "unmask", lambda c, cl: cl.unmask(request))
    for c in survivors:
        assert restore(keys, registry, c, state[c]).stage == "done"
    assert restore(keys, registry, DROPPED_AFTER_SHARE, state[DROPPED_AFTER_SHARE]).stage == (
        "masked"
    )

    mean, total, included = decode_masking(server.aggregate(), ROUND)
    assert included == tuple(survivors)
    assert total == sum(weights[c] for c in survivors)
    expected = weighted_mean(vectors, weights, survivors)
    ring = Ring(PARAMS.ring_bits, PARAMS.clip, len(IDS))
    assert np.abs(mean - expected).max() <= error_bound(ring, weights, survivors)


def test_restored_client_keeps_stage_checks(parties):
    keys, registry, _, _ = parties
    identity = ClientIdentity.from_private_bytes(0, keys[0])
    client = MaskingClientParty(identity, registry, PARAMS, ROUND)
    client.advertise(1.0, DIM)
    restored = restore(keys, registry, 0, client.to_bytes())
    with pytest.raises(MessageRejectedError, match="stage 'advertise' called at stage 'share'"):
        restored.advertise(1.0, DIM)


def test_restoring_with_wrong_identity_or_params_raises(parties):
    keys, registry, _, _ = parties
    client = MaskingClientParty(ClientIdentity.from_private_bytes(0, keys[0]), registry, PARAMS, 1)
    state = client.to_bytes()
    other = ClientIdentity.from_private_bytes(1, keys[1])
    with pytest.raises(MessageRejectedError,
                       match="saved by client 0, cannot be restored with the identity of client 1"):
        MaskingClientParty.from_bytes(state, other, registry, PARAMS)
    with pytest.raises(MessageRejectedError, match="saved with other MaskingParams"):
        MaskingClientParty.from_bytes(state, client.identity, registry,
                                 MaskingParams(ring_bits=16, cohort_size=len(IDS)))


def saved_after_masked(keys, registry, vectors, weights) -> bytes:
    """State of client 0 after a masked input (the longest state: all fields filled)."""
    clients = {
        c: MaskingClientParty(ClientIdentity.from_private_bytes(c, keys[c]), registry, PARAMS,
                              ROUND)
        for c in IDS
    }
    server = MaskingServerParty(registry, PARAMS, ROUND, DIM, IDS)
    for c in IDS:
        server.receive(clients[c].advertise(weights[c], DIM))
    keys_message = server.keys_message()
    for c in IDS:
        server.receive(clients[c].share_keys(keys_message))
    forward = server.forward_messages()
    clients[0].masked_input(forward[0], vectors[0])
    return clients[0].to_bytes()


def test_truncated_or_garbage_state_is_rejected(parties):
    keys, registry, vectors, weights = parties
    state = saved_after_masked(keys, registry, vectors, weights)
    identity = ClientIdentity.from_private_bytes(0, keys[0])

    def load(data):
        return MaskingClientParty.from_bytes(data, identity, registry, PARAMS)

    assert load(state).stage == "consistency"
    for cut in range(len(state)):
        with pytest.raises(MessageRejectedError, match="invalid saved MaskingClientParty state"):
            load(state[:cut])
    for pos in range(len(state)):
        corrupted = bytearray(state)
        corrupted[pos] ^= 0x01
        with pytest.raises(MessageRejectedError, match="invalid saved MaskingClientParty state"):
            load(bytes(corrupted))
    rng = np.random.default_rng(0)
    for garbage in (b"", b"garbage", rng.bytes(len(state)), b"PFMC\x01" + rng.bytes(300)):
        with pytest.raises(MessageRejectedError, match="invalid saved MaskingClientParty state"):
            load(garbage)
    with pytest.raises(MessageRejectedError, match="format version 3, this code reads 2"):
        load(state[:4] + b"\x03" + state[5:])
    with pytest.raises(MessageRejectedError, match="checksum mismatch"):
        load(state + b"\x00")
    with pytest.raises(MessageRejectedError, match="expected bytes, got str"):
        load("PFMC")


def test_consistent_checksum_but_inconsistent_content_is_rejected(parties):
    keys, registry, vectors, weights = parties
    state = saved_after_masked(keys, registry, vectors, weights)
    identity = ClientIdentity.from_private_bytes(0, keys[0])

    def load(data):
        return MaskingClientParty.from_bytes(data, identity, registry, PARAMS)

    def set_field(index, value):
        def edit(fields):
            fields[index] = value
        return edit

    def swap_seeds(fields):
        fields[3], fields[4] = fields[4], fields[3]

    head = struct.Struct("<QIB")
    cases = [
        (set_field(0, head.pack(ROUND, 0, 9)), "unknown stage index 9"),
        (set_field(0, head.pack(ROUND, 0, 0)), "stage 'advertise' with an advert"),
        (set_field(0, head.pack(ROUND, 0, 1)), "stage 'share' with data of later stages"),
        (swap_seeds, "advert does not match the saved keys and seeds"),
        (set_field(9, pack_fields([])), "the client's own shares are missing"),
        (set_field(8, b"\x07\x00\x00\x00"), "neighbours repeated, unknown"),
        (set_field(7, b"\x00"), "malformed threshold field"),
        (set_field(10, b"\x00\x00\x00\x00"), "stage 'consistency' with a wrong signed survivor"),
        (lambda fields: fields.pop(), "payload has 10 fields, expected 11"),
    ]
    for edit, message in cases:
        with pytest.raises(MessageRejectedError, match=message):
            load(rechecksum(state, edit))
