"""A server that lies, scripted against the secure-aggregation parties as it would act.

Each test plays one attack from the server's seat, holding only what a server holds: the
clients' messages, the public registry, and the freedom to send each party whatever it likes.
On the code before these checks each attack recovered a client's exact update or corrupted
the aggregate undetected (each test says what the old code did); now each is detected by an
honest party with a typed error naming the check, before that party reveals anything.
Positive controls show that the attack scripts do recover an update where the protocol's
assumption is removed, so a passing test means the check held.

Masking: wrong participant counts, inconsistent survivor sets, replayed or reordered stage
messages, key substitution with pinned keys. HE: a single client's upload framed as the
aggregate, uploads under a foreign key or a substituted context, forged weights.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
import tenseal as ts
from secure_testutil import weighted_mean

from privfed.secure import (
    AuthenticationError,
    ClientIdentity,
    ConsistencyError,
    HEAggregator,
    HEClientParty,
    HEKeyHolder,
    HEPublicContext,
    HEServerParty,
    IdentityRegistry,
    InvalidInputError,
    MaskingClientParty,
    MaskingParams,
    MaskingServerParty,
    MessageRejectedError,
    ThresholdError,
)
from privfed.secure.masking.client import pair_sign, self_mask_key
from privfed.secure.masking.crypto import agree, prg, x25519_from_seed
from privfed.secure.masking.messages import KEY_SEED, KIND, SELF_MASK, unpack_reveals
from privfed.secure.masking.quantize import Ring
from privfed.secure.masking.shamir import combine_secret
from privfed.secure.oneshot import pack_ids
from privfed.secure.wire import SERVER_ID, open_signed, pack, pack_fields, unpack, unpack_fields

N, DIM, TARGET = 10, 64, 0
PARAMS = MaskingParams(cohort_size=N)  # t = 7: 2t > n + floor(0.1 n)


@pytest.fixture
def federation():
    rng = np.random.default_rng(3)
    identities = {c: ClientIdentity(c) for c in range(N)}
    registry = IdentityRegistry.from_identities(identities.values())
    vectors = {c: rng.uniform(-1, 1, DIM) for c in range(N)}
    weights = {c: float(c + 1) for c in range(N)}
    return identities, registry, vectors, weights


class LyingServer:
    """The server's seat: honest parties on the other side, every message under its control."""

    def __init__(self, federation, params=PARAMS, round_id=5, registry=None):
        identities, self.registry, self.vectors, self.weights = federation
        self.round_id = round_id
        self.params = params
        self.clients = {
            c: MaskingClientParty(identities[c], registry or self.registry, params, round_id)
            for c in range(N)
        }
        self.server = MaskingServerParty(self.registry, params, round_id, DIM, range(N))
        self.adverts = {c: self.clients[c].advertise(self.weights[c], DIM) for c in range(N)}
        self.masked: dict[int, bytes] = {}

    def keys(self, ids) -> bytes:
        return pack(KIND, "keys", self.round_id, SERVER_ID,
                    pack_fields([self.adverts[c] for c in sorted(ids)]))

    def run_to_masked(self) -> None:
        for message in self.adverts.values():
            self.server.receive(message)
        keys = self.server.keys_message()
        for c in range(N):
            self.server.receive(self.clients[c].share_keys(keys))
        forward = self.server.forward_messages()
        for c in range(N):
            self.masked[c] = self.clients[c].masked_input(forward[c], self.vectors[c])
            self.server.receive(self.masked[c])

    def survivors(self, ids) -> bytes:
        return pack(KIND, "survivors", self.round_id, SERVER_ID,
                    pack_fields([pack_ids(tuple(sorted(ids)))]))

    def request(self, ids, signatures) -> bytes:
        return pack(KIND, "unmask_request", self.round_id, SERVER_ID,
                    pack_fields([pack_ids(tuple(sorted(ids))), *signatures]))


def recover_update(masked: bytes, b_seed: bytes, m_seed: bytes, adverts: dict[int, bytes],
                   registry, round_id: int, target: int, weights) -> np.ndarray:
    """What a server holding both seeds of ``target`` computes: its exact update."""
    ring = Ring(32, 10.0, len(adverts))
    env = open_signed(masked, registry, kind=KIND, stage="masked", round_id=round_id,
                      allowed={target})
    y = ring.from_bytes(env.payload, DIM).copy()
    y -= prg(self_mask_key(b_seed, round_id, target), DIM, ring.dtype)
    key = x25519_from_seed(m_seed, round_id, target)
    for peer, advert in adverts.items():
        if peer == target:
            continue
        mask_pk = unpack_fields(unpack(advert).payload[:-64])[1]
        stream = prg(agree(key, mask_pk, b"pair-mask", round_id, target, peer), DIM, ring.dtype)
        y = y - stream if pair_sign(target, peer) > 0 else y + stream
    return ring.dequantize(y) * sum(weights.values()) / weights[target]


def test_a_threshold_below_the_threat_model_is_refused():
    # n/2 is the classic inconsistent-survivor-list threshold; 2t > n + c is the bound.
    with pytest.raises(InvalidInputError, match="threshold"):
        MaskingParams(cohort_size=10, threshold=5)
    with pytest.raises(InvalidInputError, match="threshold"):
        MaskingParams(cohort_size=10, threshold=2)
    with pytest.raises(InvalidInputError, match="neighbourhood|degree"):
        MaskingParams(cohort_size=100, neighbourhood=2, threshold=2)
    with pytest.raises(InvalidInputError, match="cohort_size must be fixed"):
        MaskingClientParty(ClientIdentity(0), IdentityRegistry(), MaskingParams(), 0)


def test_too_few_adverts_shown_to_one_client_aborts_it(federation):
    """Old attack: tell one client 'there are only 2 participants' so that it shares 2-of-n."""
    lying = LyingServer(federation)
    client = lying.clients[TARGET]
    with pytest.raises(ThresholdError, match=r"2 signed adverts .* threshold t=7"):
        client.share_keys(lying.keys([TARGET, 1]))
    # The old wire format's unsigned participant count is not a signed advert.
    forged = pack(KIND, "keys", lying.round_id, SERVER_ID,
                  pack_fields([(2).to_bytes(4, "little")] + [lying.adverts[c] for c in range(N)]))
    with pytest.raises(MessageRejectedError):
        client.share_keys(forged)
    assert client.stage == "share"  # nothing was shared; the client can still go on
    assert client.share_keys(lying.keys(range(N)))


def test_old_rule_positive_control_recovers_the_update(federation, monkeypatch):
    """With the threshold taken from what the server shows (t = 2), the attack below opens
    the target's update exactly: the script is a real attack."""
    monkeypatch.setattr(MaskingParams, "for_view", lambda self, n: dataclasses.replace(
        self.planned(), threshold=2 if n == N else self.planned().threshold))
    lying = LyingServer(federation, params=dataclasses.replace(
        PARAMS, server_model="honest-but-curious"))
    lying.run_to_masked()
    b_seed, m_seed = inconsistent_unmask(
        lying, lambda c, ids: lying.clients[c].unmask(lying.request(ids, [])))
    exact = recover_update(lying.masked[TARGET], b_seed, m_seed, lying.adverts, lying.registry,
                           lying.round_id, TARGET, lying.weights)
    assert np.abs(exact - lying.vectors[TARGET]).max() < 1e-6


def inconsistent_unmask(lying: LyingServer, ask):
    """Ask clients 1-4 with the target alive and 5-9 with it dropped; combine what they reveal."""
    alive, dropped = list(range(N)), [c for c in range(N) if c != TARGET]
    b_shares, m_shares = {}, {}
    for c in range(1, N):
        ids = alive if c < 5 else dropped
        reveals = unpack_reveals(open_signed(
            ask(c, ids), lying.registry, kind=KIND, stage="unmask", round_id=lying.round_id,
            allowed={c}).payload, c)
        kind, index, share = reveals[TARGET]
        (b_shares if kind == SELF_MASK else m_shares)[index] = share
        assert kind == (SELF_MASK if c < 5 else KEY_SEED)
    return combine_secret(b_shares, 2), combine_secret(m_shares, 2)


def test_inconsistent_survivor_sets_are_detected_before_any_reveal(federation):
    lying = LyingServer(federation)
    lying.run_to_masked()
    everyone = list(range(N))
    without_target = everyone[1:]
    signatures = {}
    for c in range(N):  # half are told the target survived, half that it dropped
        ids = everyone if c < 5 else without_target
        if c == TARGET and ids is without_target:
            continue
        signatures[c] = lying.clients[c].consistency(lying.survivors(ids))
    alive_sigs = [signatures[c] for c in range(5)]
    dropped_sigs = [signatures[c] for c in range(5, N)]
    for c in range(1, 5):  # 5 signatures on "target alive": fewer than t = 7
        with pytest.raises(ThresholdError, match=r"consistency check failed: 5 members"):
            lying.clients[c].unmask(lying.request(everyone, alive_sigs))
    for c in range(5, N):  # mixing in signatures on the other set is caught
        with pytest.raises(ConsistencyError, match="signed another survivor set"):
            lying.clients[c].unmask(lying.request(without_target, dropped_sigs + alive_sigs))
        with pytest.raises(ConsistencyError, match="but this client signed"):
            lying.clients[c].unmask(lying.request(everyone, alive_sigs + dropped_sigs))
    assert all(lying.clients[c].stage == "unmask" for c in range(1, N))  # nothing revealed


def test_a_client_signs_one_survivor_set_per_round(federation):
    lying = LyingServer(federation)
    lying.run_to_masked()
    lying.clients[3].consistency(lying.survivors(range(N)))
    with pytest.raises(MessageRejectedError, match="stage 'consistency' called at stage"):
        lying.clients[3].consistency(lying.survivors(range(1, N)))


def test_replayed_and_reordered_stage_messages_are_rejected(federation):
    old = LyingServer(federation, round_id=4)
    old.run_to_masked()
    old_sigs = [old.clients[c].consistency(old.survivors(range(N))) for c in range(N)]
    old_request = old.request(range(N), old_sigs)
    lying = LyingServer(federation, round_id=5)
    lying.run_to_masked()
    client = lying.clients[2]
    # Reordered: the unmask request before the consistency round.
    with pytest.raises(MessageRejectedError, match="stage 'unmask' called at stage 'consistency'"):
        client.unmask(lying.request(range(N), []))
    with pytest.raises(MessageRejectedError, match=r"round 4 rejected in round 5 \(replay\?\)"):
        client.consistency(old.survivors(range(N)))
    client.consistency(lying.survivors(range(N)))
    with pytest.raises(MessageRejectedError, match=r"round 4 rejected in round 5"):
        client.unmask(old_request)
    # Last round's signatures inside this round's request.
    with pytest.raises(MessageRejectedError, match=r"round 4 rejected in round 5"):
        client.unmask(lying.request(range(N), old_sigs))
    assert client.stage == "unmask"


def test_key_substitution_is_detected_with_pinned_keys(federation):
    """The server plays every other client under keys it made, so one honest client's round
    is with the server alone; with relayed keys that opens its update (positive control),
    with pinned keys the honest client aborts."""
    identities, registry, vectors, weights = federation
    fakes = {c: ClientIdentity(c) for c in range(1, N)}
    substituted = IdentityRegistry({**registry.keys,
                                    **{c: f.public_bytes for c, f in fakes.items()}})
    for pinned, expect_error in ((False, None), (True, AuthenticationError)):
        keys = registry if pinned else substituted
        victim = MaskingClientParty(identities[TARGET], keys, PARAMS, 9)
        puppets = {c: MaskingClientParty(fakes[c], substituted, PARAMS, 9) for c in fakes}
        adverts = {TARGET: victim.advertise(weights[TARGET], DIM)}
        adverts |= {c: p.advertise(1.0, DIM) for c, p in puppets.items()}
        keys = pack(KIND, "keys", 9, SERVER_ID, pack_fields([adverts[c] for c in sorted(adverts)]))
        if expect_error:
            with pytest.raises(AuthenticationError, match="does not verify"):
                victim.share_keys(keys)
            with pytest.raises(AuthenticationError, match="key substitution"):
                registry.check_relayed(substituted)
            continue
        server = MaskingServerParty(substituted, PARAMS, 9, DIM, range(N))
        for message in adverts.values():
            server.receive(message)
        keys = server.keys_message()
        server.receive(victim.share_keys(keys))
        for puppet in puppets.values():
            server.receive(puppet.share_keys(keys))
        forward = server.forward_messages()
        masked = victim.masked_input(forward[TARGET], vectors[TARGET])
        # The puppets hold the victim's shares: the server reads both of its seeds.
        b_shares, m_shares = {}, {}
        for puppet in puppets.values():
            puppet.masked_input(forward[puppet.id], np.zeros(DIM))
            index, b_share, m_share = puppet._held[TARGET]
            b_shares[index], m_shares[index] = b_share, m_share
        recovered = recover_update(masked, combine_secret(b_shares, 7),
                                   combine_secret(m_shares, 7), adverts, substituted, 9,
                                   TARGET, {TARGET: weights[TARGET], **dict.fromkeys(fakes, 1.0)})
        assert np.abs(recovered - vectors[TARGET]).max() < 1e-6


def test_honest_rounds_still_decode_under_the_malicious_model(federation):
    lying = LyingServer(federation)
    lying.run_to_masked()
    survivors = lying.server.survivors_message()
    for c in range(N):
        lying.server.receive(lying.clients[c].consistency(survivors))
    request = lying.server.unmask_request()
    for c in range(N):
        lying.server.receive(lying.clients[c].unmask(request))
    assert lying.server.aggregate()


# ============================================================================ HE
KEY_HOLDER = 0
IDS = (0, 1, 2, 3)


class Federation:
    """One key holder, four registered clients, honest client parties."""

    def __init__(self) -> None:
        self.key_holder = HEKeyHolder()
        self.public = self.key_holder.public
        self.identities = {c: ClientIdentity(c) for c in IDS}
        self.registry = IdentityRegistry.from_identities(self.identities.values())
        rng = np.random.default_rng(3)
        self.vectors = {c: rng.uniform(-1, 1, DIM) for c in IDS}
        self.weights = {c: float(c + 1) for c in IDS}

    def uploads(self, round_id, ids=(0, 1, 2), total=None):
        """Honest signed uploads of ``ids`` for ``round_id`` (total: the announced W)."""
        total = sum(self.weights[c] for c in ids) if total is None else total
        return {
            c: HEClientParty(self.identities[c], self.public).encode(
                round_id, self.vectors[c], self.weights[c], total)
            for c in ids
        }

    def honest_server(self, round_id, uploads, cohort=(0, 1, 2)):
        """An honest server of ``cohort`` that received ``uploads``: its aggregate and what it
        forwards."""
        weights = {c: self.weights[c] for c in cohort}
        server = HEServerParty(round_id, weights, self.registry, DIM, public=self.public)
        for msg in uploads.values():
            server.receive(msg)
        return server.aggregate(), server.accepted_uploads()

    def decode(self, message, round_id, uploads, **kwargs):
        return self.key_holder.decode(message, round_id, uploads=list(uploads),
                                      registry=self.registry, **kwargs)


@pytest.fixture(scope="module")
def fed():
    return Federation()


@pytest.fixture
def decryptions(monkeypatch):
    """Counts every CKKS decryption, to show an attack is refused before any."""
    calls = []
    original = ts.CKKSVector.decrypt

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ts.CKKSVector, "decrypt", spy)
    return calls


def ciphertexts(upload):
    """The serialized ciphertexts of a signed upload (the server can read its framing)."""
    return unpack_fields(unpack(upload[:-64]).payload)[1:]


def homomorphic_sum(public, uploads):
    """What a lying server can compute itself: the sum of any uploads' ciphertexts."""
    acc = [ts.ckks_vector_from(public.context, ct) for ct in ciphertexts(uploads[0])]
    for upload in uploads[1:]:
        for a, ct in zip(acc, ciphertexts(upload), strict=True):
            a.add_(ts.ckks_vector_from(public.context, ct))
    return [v.serialize() for v in acc]


def forged_aggregate(fed, round_id, included, cts, *, w_incl=None, total=None):
    """An aggregate message with whatever header and ciphertexts the server chooses."""
    w_incl = sum(fed.weights[c] for c in included) if w_incl is None else w_incl
    total = w_incl if total is None else total
    head = [pack_ids(tuple(included)), struct.pack("<d", w_incl), struct.pack("<d", total)]
    payload = pack_fields([*head, fed.public.fingerprint, *cts])
    return pack("he", "aggregate", round_id, SERVER_ID, payload)


def test_honest_round_decodes_the_exact_mean(fed):
    uploads = fed.uploads(1)
    agg, forwarded = fed.honest_server(1, uploads)
    decoded = fed.decode(agg, 1, forwarded)
    assert decoded.included == (0, 1, 2)
    expected = weighted_mean(fed.vectors, fed.weights, (0, 1, 2))
    assert np.abs(decoded.mean - expected).max() <= fed.key_holder.error_bound(3)
    assert decoded.total_weight == 6.0


# (i) One client's upload framed as the aggregate. -------------------------------------------


def test_single_upload_framed_as_aggregate_is_refused(fed, decryptions):
    uploads = fed.uploads(2)
    # The server "receives" only client 1's upload: included = (1,).
    # Old code: decode(min_clients=1) decrypted it and returned client 1's vector exactly.
    agg, forwarded = fed.honest_server(2, {1: uploads[1]})
    with pytest.raises(ThresholdError, match="holds 1 clients, fewer than min_clients = 2"):
        fed.decode(agg, 2, forwarded)
    with pytest.raises(ThresholdError, match="fewer than min_clients = 2"):
        fed.decode(agg, 2, forwarded, min_clients=1)  # never fewer than 2
    assert decryptions == []


def test_three_clients_listed_but_one_ciphertext_is_caught(fed, decryptions):
    uploads = fed.uploads(3)
    # Header names (0, 1, 2), ciphertext is client 0's upload alone.
    # Old code: decrypted it, i.e. released (w0 / W) * x0 * W / w_incl = x0 / 6: client 0's
    # vector up to a public factor.
    lie = forged_aggregate(fed, 3, (0, 1, 2), ciphertexts(uploads[0]))
    with pytest.raises(ConsistencyError, match="not the sum of the forwarded uploads"):
        fed.decode(lie, 3, uploads.values())
    # The same lie, forwarding only client 0's upload.
    with pytest.raises(ConsistencyError, match=r"lists clients \[0, 1, 2\] but the forwarded "
                                               r"uploads are from \[0\]"):
        fed.decode(lie, 3, [uploads[0]])
    assert decryptions == []


# (ii) An aggregate that is not the sum of the forwarded uploads. ----------------------------


def test_dropped_addend_is_caught(fed, decryptions):
    uploads = fed.uploads(4)
    # The server lists and forwards all three uploads but sums only clients 0 and 1.
    # Old code: decrypted it and released a wrong mean silently; with a second, honest
    # aggregate of the same round the difference is client 2's vector.
    lie = forged_aggregate(fed, 4, (0, 1, 2), homomorphic_sum(fed.public, [uploads[0],
                                                                           uploads[1]]))
    with pytest.raises(ConsistencyError, match="not the sum"):
        fed.decode(lie, 4, uploads.values())
    assert decryptions == []


def test_replayed_upload_is_caught_naming_the_round(fed, decryptions):
    old = fed.uploads(5)
    new = fed.uploads(6)
    # Client 2's upload of round 5 replaces its round-6 upload, in the sum and the forwarded
    # list. Old code: the key holder never saw uploads; it decrypted a sum mixing rounds.
    forwarded = [new[0], new[1], old[2]]
    lie = forged_aggregate(fed, 6, (0, 1, 2), homomorphic_sum(fed.public, forwarded))
    with pytest.raises(MessageRejectedError, match=r"round 5 rejected in round 6 \(replay\?\)"):
        fed.decode(lie, 6, forwarded)
    assert decryptions == []


def test_a_second_cohort_of_the_same_round_is_refused(fed, decryptions):
    uploads = fed.uploads(7)
    agg, forwarded = fed.honest_server(7, uploads)
    first = fed.decode(agg, 7, forwarded)
    assert first.included == (0, 1, 2)
    assert fed.decode(agg, 7, forwarded).included == (0, 1, 2)  # the same cohort: harmless
    count = len(decryptions)
    # Then a genuine sum of clients 0 and 1 (the server drops client 2's upload).
    # Old code: decrypted both; w_012 * mean_012 - w_01 * mean_01 = w_2 * x_2.
    agg01, forwarded01 = fed.honest_server(7, {c: uploads[c] for c in (0, 1)})
    with pytest.raises(ConsistencyError, match=r"already decrypted for clients \[0, 1, 2\]"):
        fed.decode(agg01, 7, forwarded01)
    assert len(decryptions) == count


# (iii) An upload under a foreign key with the right fingerprint. -----------------------------


def test_upload_under_a_foreign_key_fails_the_range_check(fed):
    foreign = HEPublicContext(HEKeyHolder().public_material())
    foreign.fingerprint = fed.public.fingerprint  # lie about the context
    uploads = fed.uploads(8)
    total = sum(fed.weights[c] for c in (0, 1, 2))
    uploads[2] = HEClientParty(fed.identities[2], foreign).encode(8, fed.vectors[2],
                                                             fed.weights[2], total)
    # The honest server cannot tell and accepts it. Old code: decrypted the sum to noise of
    # ~1e7 per coordinate and returned it as the mean.
    agg, forwarded = fed.honest_server(8, uploads)
    result = None
    with pytest.raises(ConsistencyError, match="aggregate outside the range its inputs allow: "
                                               "an upload under a foreign key"):
        result = fed.decode(agg, 8, forwarded)
    assert result is None
    with pytest.raises(ConsistencyError, match="outside the range"):  # and with a clip
        fed.decode(agg, 8, forwarded, clip=1.0)


# (iv) A public context substituted by the server. ----------------------------------------


def test_substituted_public_context_is_refused_by_the_client(fed):
    genuine = fed.key_holder.signed_public_material(fed.identities[KEY_HOLDER])
    assert HEPublicContext.from_signed(genuine, fed.registry, KEY_HOLDER).fingerprint == \
        fed.public.fingerprint
    # The server makes its own key pair and signs it with a key of its own, as client 0.
    # Old code: clients took HEPublicContext(material) as relayed, so the server could
    # decrypt every upload with its own secret key.
    rogue = HEKeyHolder()
    forged = rogue.signed_public_material(ClientIdentity(KEY_HOLDER))
    with pytest.raises(AuthenticationError, match="client 0 does not verify"):
        HEPublicContext.from_signed(forged, fed.registry, KEY_HOLDER)
    # ... or keeps the genuine signature and swaps the material under it.
    tag, signer, _ = unpack_fields(genuine[:-64], 3)
    swapped = pack_fields([tag, signer, rogue.public_material()]) + genuine[-64:]
    with pytest.raises(AuthenticationError, match="client 0 does not verify"):
        HEPublicContext.from_signed(swapped, fed.registry, KEY_HOLDER)
    # ... or relays a context genuinely signed by another client, not the key holder.
    other = rogue.signed_public_material(fed.identities[3])
    with pytest.raises(MessageRejectedError, match="signed by client 3, not by the key holder 0"):
        HEPublicContext.from_signed(other, fed.registry, KEY_HOLDER)


def test_signed_material_holding_a_secret_key_is_refused(fed):
    secret = fed.key_holder.secret_material()
    body = pack_fields([unpack_fields(fed.key_holder.signed_public_material(
        fed.identities[KEY_HOLDER])[:-64], 3)[0], struct.pack("<I", KEY_HOLDER), secret])
    signed = body + fed.identities[KEY_HOLDER].sign(body)
    with pytest.raises(MessageRejectedError, match="must not contain the secret key"):
        HEPublicContext.from_signed(signed, fed.registry, KEY_HOLDER)


def test_uploads_under_a_substituted_context_are_not_decrypted(fed, decryptions):
    # A client that skipped from_signed encrypts under the server's context; the key holder
    # sees another fingerprint in the signed upload. Old code: the key holder checked only
    # the aggregate's fingerprint, which the server sets.
    rogue = HEKeyHolder()
    uploads = fed.uploads(9)
    uploads[1] = HEClientParty(fed.identities[1], rogue.public).encode(9, fed.vectors[1],
                                                                  fed.weights[1], 6.0)
    lie = forged_aggregate(fed, 9, (0, 1, 2), homomorphic_sum(fed.public, [uploads[0],
                                                                           uploads[2]]))
    with pytest.raises(ConsistencyError, match="client 1 is under another context"):
        fed.decode(lie, 9, uploads.values())
    assert decryptions == []


# (v) Weights in the aggregate header inflated by the server. ------------------------------


@pytest.mark.parametrize(("w_incl", "total"), [(60.0, 6.0), (6.0, 60.0)])
def test_inflated_header_weights_are_refused(fed, decryptions, w_incl, total):
    uploads = fed.uploads(10)
    # Genuine sum, lying header. Old code: mean = decrypted * total / w_incl, i.e. scaled by
    # 0.1 or 10 silently.
    lie = forged_aggregate(fed, 10, (0, 1, 2), homomorphic_sum(fed.public, list(uploads.values())),
                           w_incl=w_incl, total=total)
    with pytest.raises(ConsistencyError, match=r"header claims weight .*; the signed uploads "
                                               r"say 6 of 6"):
        fed.decode(lie, 10, uploads.values())
    assert decryptions == []


def test_totals_told_differently_to_clients_are_refused(fed, decryptions):
    # The server tells client 2 that W = 60 (it then encrypts a tenth of its share) and the
    # others W = 6. Old code: decrypted a mean with client 2 under-weighted.
    uploads = {**fed.uploads(13), 2: fed.uploads(13, ids=(2,), total=60.0)[2]}
    lie = forged_aggregate(fed, 13, (0, 1, 2), homomorphic_sum(fed.public,
                                                               list(uploads.values())))
    with pytest.raises(ConsistencyError, match=r"announced different totals W \[6.0, 60.0\]"):
        fed.decode(lie, 13, uploads.values())
    assert decryptions == []


# (vi) An upload re-labelled for another sender. --------------------------------------------


def test_relabelled_upload_fails_authentication(fed, decryptions):
    uploads = fed.uploads(11)
    # The server passes client 1's upload off as client 3's (who did not take part), so the
    # cohort looks like (0, 2, 3). Old code: no upload reached the key holder at all.
    env = unpack(uploads[1][:-64])
    relabelled = pack(env.kind, env.stage, env.round_id, 3, env.payload) + uploads[1][-64:]
    forwarded = [uploads[0], uploads[2], relabelled]
    lie = forged_aggregate(fed, 11, (0, 2, 3), homomorphic_sum(fed.public, forwarded))
    with pytest.raises(AuthenticationError, match="signature of client 3 does not verify"):
        fed.decode(lie, 11, forwarded)
    assert decryptions == []


def test_duplicated_upload_is_refused(fed, decryptions):
    uploads = fed.uploads(12)
    forwarded = [uploads[0], uploads[1], uploads[1]]
    lie = forged_aggregate(fed, 12, (0, 1), homomorphic_sum(fed.public, forwarded))
    with pytest.raises(ConsistencyError, match="two uploads from client 1"):
        fed.decode(lie, 12, forwarded)
    assert decryptions == []


def test_honest_but_curious_key_holder_never_holds_an_upload_and_trusts_the_framing(fed):
    """The trade-off of HE's two server models, measured. Honest-but-curious: the key holder
    receives only the aggregate (it cannot decrypt any one client's upload, having none), and
    so cannot tell a framed single upload from a sum (positive control: the lie that the
    malicious model refuses above is decrypted here). Malicious: it receives every upload."""
    vectors = {c: fed.vectors[c] for c in (0, 1, 2)}
    weights = {c: fed.weights[c] for c in (0, 1, 2)}
    sizes = {}
    for model in ("honest-but-curious", "malicious"):
        agg = HEAggregator(key_holder=HEKeyHolder(secret_material=(
            fed.key_holder.secret_material())), server_model=model)
        result = agg.aggregate(11, vectors, weights)
        assert np.abs(result.mean - weighted_mean(vectors, weights, (0, 1, 2))).max() < 1e-6
        sizes[model] = result.bytes_down[0]
    upload = sum(result.bytes_up.values()) / 3
    assert sizes["honest-but-curious"] < 1.1 * upload  # the aggregate alone
    assert sizes["malicious"] > 3.9 * upload  # three uploads and the aggregate
    uploads = fed.uploads(12)
    lie = forged_aggregate(fed, 12, (0, 1, 2), ciphertexts(uploads[0]))
    framed = HEKeyHolder(secret_material=fed.key_holder.secret_material()).decode(
        lie, 12, uploads=None)
    share = fed.weights[0] / sum(fed.weights[c] for c in (0, 1, 2))
    assert np.abs(framed.mean - share * fed.vectors[0]).max() < 1e-6  # client 0's input
