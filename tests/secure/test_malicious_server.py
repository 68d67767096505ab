"""A server that lies, scripted against the masking parties as it would act (HE:
test_malicious_server_he.py).

Each test plays one attack from the server's seat, holding only what a server holds: the
clients' messages, the public registry, and the freedom to send each party whatever it likes.
On the code before these checks each attack recovered a client's exact update or corrupted
the aggregate undetected (each test says what the old code did); now each is detected by an
honest party with a typed error naming the check, before that party reveals anything.
Positive controls show that the attack scripts do recover an update where the protocol's
assumption is removed, so a passing test means the check held.

Masking: wrong participant counts, inconsistent survivor sets, replayed or reordered stage
messages, key substitution with pinned keys.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from privfed.secure import (
    AuthenticationError,
    ClientIdentity,
    ConsistencyError,
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


def test_secagg_plus_counts_only_the_group_signatures(federation):
    """Under SecAgg+ a client's decision rests on its group's signatures alone: a forged
    signature of a non-neighbour is not read, a forged neighbour's signature aborts."""
    params = MaskingParams(cohort_size=N, neighbourhood="secagg+")
    assert params.planned().degree < N - 1
    lying = LyingServer(federation, params=params)
    lying.run_to_masked()
    signatures = {c: lying.clients[c].consistency(lying.survivors(range(N))) for c in range(N)}
    client = lying.clients[2]
    outsider = min(set(range(N)) - client._peers - {2})
    neighbour = min(client._peers)

    def forged(c):
        return signatures[c][:-1] + bytes([signatures[c][-1] ^ 1])

    with pytest.raises(AuthenticationError):
        client.unmask(lying.request(range(N), [*signatures.values(), forged(neighbour)]))
    assert client.stage == "unmask"
    others = [s for c, s in signatures.items() if c != outsider]
    reply = client.unmask(lying.request(range(N), [*others, forged(outsider)]))
    assert set(unpack_reveals(unpack(reply).payload[:-64], 2)) == client._peers | {2}
