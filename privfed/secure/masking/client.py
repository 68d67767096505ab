"""Client side of the masking protocol (Bonawitz et al. 2017, optional SecAgg+ graph).

One :class:`MaskingClientParty` object serves one round: all key material is fresh per round.
Its state can be saved between stages with :meth:`MaskingClientParty.to_bytes` and restored with
:meth:`MaskingClientParty.from_bytes`, so each stage may run in a new process.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privfed.secure.errors import ConsistencyError, MessageRejectedError, ThresholdError
from privfed.secure.identity import ClientIdentity, IdentityRegistry
from privfed.secure.validation import (
    check_round_id,
    check_weight,
    prepare_vector,
)
from privfed.secure.wire import (
    expect,
    open_signed,
    seal,
    sender_of,
    unpack,
    unpack_fields,
    unpack_ids,
)

from .crypto import (
    SEED_SIZE,
    MaskSum,
    agree,
    hkdf,
    open_share,
    public_bytes,
    seal_share,
    x25519_from_seed,
)
from .messages import (
    KEY_SEED,
    KIND,
    SELF_MASK,
    Advert,
    commit,
    pack_addressed,
    pack_reveals,
    parse_share_plaintext,
    share_aad,
    share_plaintext,
    survivors_digest,
    unpack_addressed,
)
from .params import MaskingParams, neighbours
from .quantize import Ring
from .shamir import split_secret
from .state import restore_client, save_client


def self_mask_key(seed: bytes, round_id: int, client_id: int) -> bytes:
    """ChaCha20 key of a client's self mask."""
    return hkdf(seed, b"self-mask", round_id, client_id)


def pair_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds the pairwise mask shared with ``peer``, -1 if it subtracts it."""
    return 1 if owner < peer else -1


class MaskingClientParty:
    """One client for one round of masked secure aggregation.

    Call, in order, :meth:`advertise`, :meth:`share_keys`, :meth:`masked_input`,
    :meth:`consistency` (skipped when ``params.server_model`` is ``"honest-but-curious"``)
    and :meth:`unmask`, each with the server's message of the previous stage.

    Against a malicious server (Bonawitz et al. CCS 2017, Sec. 4): the threshold comes from
    ``params`` and the number of *signed* adverts received, never from a server message;
    the client aborts with fewer than ``t`` signed adverts in its group; it signs one
    survivor set per round and reveals shares only for a set that at least ``t`` members of
    its group signed; it never reveals both shares of one client.

    Parameters
    ----------
    identity : ClientIdentity
        Long-term signing identity.
    registry : IdentityRegistry
        Verification keys of all clients (to check the advertised keys the server relays).
    params : MaskingParams
        Protocol parameters (the same for all parties).
    round_id : int
        The round; bound into every key derivation, signature and AEAD tag.
    """

    def __init__(
        self,
        identity: ClientIdentity,
        registry: IdentityRegistry,
        params: MaskingParams,
        round_id: int,
    ) -> None:
        self.identity = identity
        self.id = identity.client_id
        self.registry = registry
        self.params = params
        self.round_id = check_round_id(round_id)
        params.planned()  # the threshold must be fixed before the round
        self._stage = "advertise"
        self._enc_key = X25519PrivateKey.generate()
        self._key_seed = os.urandom(SEED_SIZE)
        self._mask_key = x25519_from_seed(self._key_seed, self.round_id, self.id)
        self._self_seed = os.urandom(SEED_SIZE)
        self._adverts: dict[int, Advert] = {}
        self._held: dict[int, tuple[int, bytes, bytes]] = {}
        self._share_keys: dict[int, bytes] = {}

    # ------------------------------------------------------------------ persistence
    @property
    def stage(self) -> str:
        """The next stage this client expects (``"done"`` after :meth:`unmask`)."""
        return self._stage

    def to_bytes(self) -> bytes:
        """Serialize the client's complete state, at whatever stage it is.

        The result holds the round's secrets (X25519 private key, both seeds and the Shamir
        shares received): store it as confidentially as the client's identity key, and
        never send it. The long-term identity, registry and parameters are not included;
        pass them to :meth:`from_bytes`.

        Returns
        -------
        bytes
            ``"PFMC" | version | length-prefixed fields | SHA-256 of what precedes``.
        """
        return save_client(self)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        identity: ClientIdentity,
        registry: IdentityRegistry,
        params: MaskingParams,
    ) -> MaskingClientParty:
        """Restore a client saved by :meth:`to_bytes`, ready for its next stage.

        Parameters
        ----------
        data : bytes
            The saved state.
        identity : ClientIdentity
            The client's long-term identity; its id must be the saved client's.
        registry : IdentityRegistry
            Verification keys of all clients.
        params : MaskingParams
            Protocol parameters; must equal those the state was saved with.

        Returns
        -------
        MaskingClientParty
            A client in the saved stage, with the saved keys, seeds, adverts and shares.

        Raises
        ------
        MessageRejectedError
            If ``data`` is not a saved state of this version, is truncated or corrupted, is
            internally inconsistent, belongs to another client, or was saved with other
            parameters.
        """
        try:
            return restore_client(cls, data, identity, registry, params)
        except MessageRejectedError as exc:
            raise MessageRejectedError(f"invalid saved MaskingClientParty state: {exc}") from None

    def _require(self, stage: str) -> None:
        if self._stage != stage:
            raise MessageRejectedError(
                f"client {self.id}: stage {stage!r} called at stage {self._stage!r} of round "
                f"{self.round_id}"
            )

    def _open(self, message: bytes, stage: str) -> bytes:
        env = unpack(message)
        expect(env, kind=KIND, stage=stage, round_id=self.round_id)
        return env.payload

    def advertise(self, weight: float, dim: int) -> bytes:
        """Stage 0: signed public keys, self-mask commitment, public weight and length."""
        self._require("advertise")
        advert = Advert(
            public_bytes(self._enc_key),
            public_bytes(self._mask_key),
            commit(self._self_seed, self.round_id, self.id),
            check_weight(weight, self.id),
            int(dim),
        )
        self._stage = "share"
        self.advert = advert
        return seal(self.identity, KIND, "advertise", self.round_id, advert.to_bytes())

    def share_keys(self, keys_message: bytes) -> bytes:
        """Stage 1: verify the relayed adverts, send encrypted Shamir shares to neighbours.

        Raises
        ------
        AuthenticationError
            An advert's signature does not verify under this client's registry (with pinned
            keys: a substituted key).
        ThresholdError
            Fewer signed adverts (in this client's group) than the threshold fixed by
            ``params``.
        MessageRejectedError
            Malformed, repeated, or altered adverts.
        """
        self._require("share")
        adverts = {}
        for signed in unpack_fields(self._open(keys_message, "keys")):
            env = open_signed(signed, self.registry, kind=KIND, stage="advertise",
                              round_id=self.round_id, allowed=self.registry.keys)
            if env.sender in adverts:
                raise MessageRejectedError(f"keys message repeats client {env.sender}")
            adverts[env.sender] = Advert.from_bytes(env.payload, env.sender)
        if adverts.get(self.id) != self.advert:
            raise MessageRejectedError(f"keys message misses or alters client {self.id}'s keys")
        if any(a.dim != self.advert.dim for a in adverts.values()):
            raise MessageRejectedError("advertised vector lengths differ")
        plan = self.params.for_view(len(adverts))
        peers = neighbours(adverts, self.round_id, plan.degree)[self.id]
        group = sorted(peers | {self.id})
        if len(group) < plan.threshold:
            raise ThresholdError(
                f"client {self.id}: {len(group)} clients in its group < threshold "
                f"{plan.threshold}"
            )
        self._stage = "masked"
        self._adverts, self._peers, self._threshold = adverts, peers, plan.threshold
        # Both seeds in one sharing: each 16-byte block has its own random polynomial.
        shares = split_secret(self._self_seed + self._key_seed, plan.threshold, len(group))
        out = {}
        for pos, (peer, share) in enumerate(zip(group, shares, strict=True)):
            b_share, m_share = share[:SEED_SIZE], share[SEED_SIZE:]
            if peer == self.id:
                self._held[self.id] = (pos + 1, b_share, m_share)
                continue
            key = self._share_key(peer)
            plain = share_plaintext(self.id, peer, pos + 1, b_share, m_share)
            out[peer] = seal_share(key, plain, share_aad(self.round_id, self.id, peer))
        return seal(self.identity, KIND, "share", self.round_id, pack_addressed(out))

    def masked_input(self, forward_message: bytes, vector: Any) -> bytes:
        """Stage 2: decrypt the shares received, send the masked quantised input.

        Raises
        ------
        InvalidInputError
            Bad vector (length, NaN/Inf, out of range with ``out_of_range="error"``).
        AuthenticationError
            A forwarded share was tampered with; nothing is stored, the call can be retried.
        """
        self._require("masked")
        x = prepare_vector(vector, self.advert.dim, clip=self.params.clip,
                           out_of_range=self.params.out_of_range, client_id=self.id)
        received = unpack_addressed(self._open(forward_message, "forward"), "forward message")
        held = {}
        for sender, blob in received.items():
            if sender not in self._peers:
                raise MessageRejectedError(f"client {self.id}: share from non-neighbour {sender}")
            key = self._share_key(sender)
            plain = open_share(key, blob, share_aad(self.round_id, sender, self.id),
                               f"client {sender}")
            held[sender] = parse_share_plaintext(plain, sender, self.id)
        if len(held) + 1 < self._threshold:
            raise ThresholdError(
                f"client {self.id}: shares from {len(held) + 1} group members < threshold "
                f"{self._threshold}"
            )
        self._stage = "consistency" if self.params.consistency_round else "unmask"
        self._held.update(held)
        ring = Ring(self.params.ring_bits, self.params.clip, len(self._adverts))
        total = sum(a.weight for a in self._adverts.values())
        y = ring.quantize(x * (self.advert.weight / total))
        masks = MaskSum(y)
        masks.add(self_mask_key(self._self_seed, self.round_id, self.id))
        for peer in sorted(held):
            key = agree(self._mask_key, self._adverts[peer].mask_pk, b"pair-mask",
                        self.round_id, self.id, peer)
            masks.add(key, pair_sign(self.id, peer))
        return seal(self.identity, KIND, "masked", self.round_id, ring.to_bytes(y))

    def consistency(self, survivors_message: bytes) -> bytes:
        """Stage 3 (malicious server): sign the survivor set the server announces.

        The set of clients whose masked input the server says it received; this client
        signs exactly one such set per round, and later reveals shares only for a set that
        at least ``t`` members of its group signed (Bonawitz et al. 2017, ConsistencyCheck).

        Raises
        ------
        ThresholdError
            Fewer than ``t`` survivors in this client's group, or fewer than
            ``min_clients`` in the set.
        MessageRejectedError
            The set omits this client or lists a client it never saw advertise.
        """
        self._require("consistency")
        payload = unpack_fields(self._open(survivors_message, "survivors"), 1)[0]
        survivors = self._check_survivors(unpack_ids(payload))
        self._stage = "unmask"
        self._survivors = survivors
        return seal(self.identity, KIND, "consistency", self.round_id,
                    survivors_digest(self.round_id, survivors))

    def unmask(self, request_message: bytes) -> bytes:
        """Last stage: reveal self-mask shares of survivors and key-seed shares of dropouts.

        Never reveals both for the same client, and answers at most once per round. Against
        a malicious server the request must carry the survivor set this client signed and
        at least ``t`` valid signatures on it from members of this client's group (under
        SecAgg+ the signatures of clients outside the group are not read: they count for
        nothing here).

        Raises
        ------
        ConsistencyError
            The request's survivor set differs from the one this client signed, or a
            signature in it is on another set.
        ThresholdError
            Fewer than ``t`` signatures from this client's group, too few survivors.
        AuthenticationError
            A signature does not verify.
        """
        self._require("unmask")
        if self.params.consistency_round:
            survivors = self._check_signed_survivors(request_message)
        else:
            payload = unpack_fields(self._open(request_message, "unmask_request"), 1)
            survivors = self._check_survivors(unpack_ids(payload[0]))
        self._stage = "done"
        reveals = {}
        for owner, (index, b_share, m_share) in self._held.items():
            if owner in survivors:
                reveals[owner] = (SELF_MASK, index, b_share)
            else:
                reveals[owner] = (KEY_SEED, index, m_share)
        return seal(self.identity, KIND, "unmask", self.round_id, pack_reveals(reveals))

    def _share_key(self, peer: int) -> bytes:
        """The AEAD key of the shares exchanged with ``peer``, agreed once per round."""
        key = self._share_keys.get(peer)
        if key is None:
            key = agree(self._enc_key, self._adverts[peer].enc_pk, b"share-enc",
                        self.round_id, self.id, peer)
            self._share_keys[peer] = key
        return key

    def _check_survivors(self, ids: tuple[int, ...]) -> frozenset[int]:
        """Check a survivor set against this client's view; raise before any state change."""
        survivors = frozenset(ids)
        group = self._peers | {self.id}
        if len(survivors) != len(ids):
            raise MessageRejectedError(f"client {self.id}: the survivor set repeats a client")
        if (
            self.id not in survivors
            or not survivors <= set(self._adverts)
            or not survivors & group <= set(self._held)
        ):
            raise MessageRejectedError(
                f"client {self.id}: the survivor set omits this client or lists a neighbour "
                "that never shared with it"
            )
        if len(survivors) < self.params.min_clients:
            raise ThresholdError(
                f"client {self.id}: the survivor set lists {len(survivors)} surviving inputs, "
                f"fewer than min_clients = {self.params.min_clients}; revealing nothing"
            )
        alive = len(survivors & set(self._held))
        if alive < self._threshold:
            raise ThresholdError(
                f"client {self.id}: {alive} surviving group members < threshold {self._threshold}"
            )
        return survivors

    def _check_signed_survivors(self, request_message: bytes) -> frozenset[int]:
        """The survivor set of an unmask request, once ``t`` signatures on it verify."""
        fields = unpack_fields(self._open(request_message, "unmask_request"))
        if not fields:
            raise MessageRejectedError(f"client {self.id}: empty unmask request")
        survivors = frozenset(unpack_ids(fields[0]))
        if survivors != self._survivors:
            raise ConsistencyError(
                f"client {self.id}: consistency check failed: the unmask request lists "
                f"survivors {sorted(survivors)}, but this client signed "
                f"{sorted(self._survivors)}; revealing nothing"
            )
        signed_set = survivors_digest(self.round_id, survivors)
        group = self._peers | {self.id}
        signers: set[int] = set()
        for signed in fields[1:]:
            if sender_of(signed) not in group:
                continue  # SecAgg+: only the group's signatures count (Bell et al. 2020)
            env = open_signed(signed, self.registry, kind=KIND, stage="consistency",
                              round_id=self.round_id, allowed=self._adverts)
            if env.payload != signed_set or env.sender not in survivors:
                raise ConsistencyError(
                    f"client {self.id}: consistency check failed: client {env.sender} signed "
                    "another survivor set than the unmask request's (or is not in it); "
                    "revealing nothing"
                )
            if env.sender in signers:
                raise MessageRejectedError(
                    f"client {self.id}: unmask request repeats client {env.sender}'s signature"
                )
            signers.add(env.sender)
        if len(signers & group) < self._threshold:
            raise ThresholdError(
                f"client {self.id}: consistency check failed: {len(signers & group)} members "
                f"of its group signed the survivor set, fewer than the threshold "
                f"t={self._threshold}; revealing nothing"
            )
        return survivors
