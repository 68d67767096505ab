"""A server that lies, scripted against the HE parties as it would act (masking:
test_malicious_server.py).

Each test plays one attack from the server's seat: a single client's upload framed as the
aggregate, dropped or replayed addends, uploads under a foreign key or a substituted
context, forged weights. On the code before these checks each attack had one client's
update decrypted or corrupted the aggregate undetected; now the key holder or a client
detects it with a typed error before anything is decrypted.
"""

from __future__ import annotations

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
    MessageRejectedError,
    ThresholdError,
)
from privfed.secure.oneshot import pack_ids
from privfed.secure.wire import SERVER_ID, pack, pack_fields, unpack, unpack_fields

DIM = 64
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
