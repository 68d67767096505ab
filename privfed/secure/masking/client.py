"""Client side of the masking protocol (Bonawitz et al. 2017, optional SecAgg+ graph).

One :class:`MaskingClient` object serves one round: all key material is fresh per round.
Its state can be saved between stages with :meth:`MaskingClient.to_bytes` and restored with
:meth:`MaskingClient.from_bytes`, so each stage may run in a new process.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privfed.secure.errors import MessageRejectedError, ThresholdError
from privfed.secure.identity import ClientIdentity, IdentityRegistry
from privfed.secure.oneshot import pack_ids, unpack_ids
from privfed.secure.validation import (
    OUT_OF_RANGE_MODES,
    check_round_id,
    check_weight,
    prepare_vector,
)
from privfed.secure.wire import expect, open_signed, pack_fields, seal, unpack, unpack_fields

from .crypto import (
    SEED_SIZE,
    agree,
    hkdf,
    open_share,
    prg,
    public_bytes,
    seal_share,
    split_secret,
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
    unpack_addressed,
)
from .params import MaskingParams, neighbours
from .quantize import Ring

_STAGES = ("advertise", "share", "masked", "unmask", "done")
"""Client stages in protocol order; a saved state stores the index of its stage."""
STATE_MAGIC = b"PFMC"
STATE_VERSION = 1
_STATE_PREFIX = struct.Struct("<4sB")
_STATE_HEAD = struct.Struct("<QIB")  # round id, client id, stage index
_STATE_PARAMS = struct.Struct("<BdBQQ")  # ring bits, clip, out_of_range, threshold, neighbourhood
_STATE_ROUND = struct.Struct("<II")  # threshold, announced participant count
_STATE_HELD = struct.Struct("<IH")  # share owner, Shamir index
_STATE_FIELDS = 10
_DIGEST_SIZE = 32
_X25519_SIZE = 32


def _params_bytes(params: MaskingParams) -> bytes:
    """Canonical encoding of ``params``, so a state is only restored under the same ones."""
    nb = params.neighbourhood
    return _STATE_PARAMS.pack(
        params.ring_bits,
        float(params.clip),
        OUT_OF_RANGE_MODES.index(params.out_of_range),
        0 if params.threshold is None else params.threshold,
        0 if nb == "full" else int(nb),
    )


def self_mask_key(seed: bytes, round_id: int, client_id: int) -> bytes:
    """ChaCha20 key of a client's self mask."""
    return hkdf(seed, b"self-mask", round_id, client_id)


def pair_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds the pairwise mask shared with ``peer``, -1 if it subtracts it."""
    return 1 if owner < peer else -1


class MaskingClient:
    """One client for one round of masked secure aggregation.

    Call, in order, :meth:`advertise`, :meth:`share_keys`, :meth:`masked_input` and
    :meth:`unmask`, each with the server's message of the previous stage.

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
        self._stage = "advertise"
        self._enc_key = X25519PrivateKey.generate()
        self._key_seed = os.urandom(SEED_SIZE)
        self._mask_key = x25519_from_seed(self._key_seed, self.round_id, self.id)
        self._self_seed = os.urandom(SEED_SIZE)
        self._adverts: dict[int, Advert] = {}
        self._held: dict[int, tuple[int, bytes, bytes]] = {}

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
        later = _STAGES.index(self._stage) >= _STAGES.index("masked")
        advert = b"" if self._stage == "advertise" else self.advert.to_bytes()
        adverts = {c: a.to_bytes() for c, a in self._adverts.items()}
        round_meta = _STATE_ROUND.pack(self._threshold, self._participants) if later else b""
        peers = pack_ids(tuple(sorted(self._peers))) if later else b""
        held = [
            _STATE_HELD.pack(owner, index) + b_share + m_share
            for owner, (index, b_share, m_share) in sorted(self._held.items())
        ]
        body = _STATE_PREFIX.pack(STATE_MAGIC, STATE_VERSION) + pack_fields([
            _STATE_HEAD.pack(self.round_id, self.id, _STAGES.index(self._stage)),
            _params_bytes(self.params),
            self._enc_key.private_bytes_raw(),
            self._key_seed,
            self._self_seed,
            advert,
            pack_addressed(adverts),
            round_meta,
            peers,
            pack_fields(held),
        ])
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        identity: ClientIdentity,
        registry: IdentityRegistry,
        params: MaskingParams,
    ) -> MaskingClient:
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
        MaskingClient
            A client in the saved stage, with the saved keys, seeds, adverts and shares.

        Raises
        ------
        MessageRejectedError
            If ``data`` is not a saved state of this version, is truncated or corrupted, is
            internally inconsistent, belongs to another client, or was saved with other
            parameters.
        """
        try:
            return cls._restore(data, identity, registry, params)
        except MessageRejectedError as exc:
            raise MessageRejectedError(f"invalid saved MaskingClient state: {exc}") from None

    @classmethod
    def _restore(
        cls,
        data: bytes,
        identity: ClientIdentity,
        registry: IdentityRegistry,
        params: MaskingParams,
    ) -> MaskingClient:
        """Body of :meth:`from_bytes`; raises MessageRejectedError naming the problem."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MessageRejectedError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _STATE_PREFIX.size + _DIGEST_SIZE:
            raise MessageRejectedError(f"only {len(data)} bytes")
        magic, version = _STATE_PREFIX.unpack_from(data)
        if magic != STATE_MAGIC:
            raise MessageRejectedError(f"not a MaskingClient state (magic={magic!r})")
        if version != STATE_VERSION:
            raise MessageRejectedError(f"format version {version}, this code reads {STATE_VERSION}")
        body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
        if hashlib.sha256(body).digest() != digest:
            raise MessageRejectedError("checksum mismatch (truncated or corrupted)")
        fields = unpack_fields(body[_STATE_PREFIX.size :], _STATE_FIELDS)
        head, params_raw, enc_raw, key_seed, self_seed = fields[:5]
        advert_raw, adverts_raw, round_raw, peers_raw, held_raw = fields[5:]

        if len(head) != _STATE_HEAD.size:
            raise MessageRejectedError("malformed header field")
        round_id, client_id, stage_index = _STATE_HEAD.unpack(head)
        if stage_index >= len(_STAGES):
            raise MessageRejectedError(f"unknown stage index {stage_index}")
        stage = _STAGES[stage_index]
        if identity.client_id != client_id:
            raise MessageRejectedError(
                f"saved by client {client_id}, cannot be restored with the identity of client "
                f"{identity.client_id}"
            )
        if params_raw != _params_bytes(params):
            raise MessageRejectedError(f"saved with other MaskingParams than {params!r}")
        if len(enc_raw) != _X25519_SIZE or len(key_seed) != SEED_SIZE or (
            len(self_seed) != SEED_SIZE
        ):
            raise MessageRejectedError("key or seed of the wrong length")

        client = cls.__new__(cls)
        client.identity = identity
        client.id = client_id
        client.registry = registry
        client.params = params
        client.round_id = round_id
        client._stage = stage
        client._enc_key = X25519PrivateKey.from_private_bytes(enc_raw)
        client._key_seed = key_seed
        client._mask_key = x25519_from_seed(key_seed, round_id, client_id)
        client._self_seed = self_seed
        client._adverts = {}
        client._held = {}
        if stage == "advertise":
            if advert_raw:
                raise MessageRejectedError("stage 'advertise' with an advert")
        else:
            client.advert = Advert.from_bytes(advert_raw, client_id)
            client._check_own_advert()
        later = stage_index >= _STAGES.index("masked")
        adverts = unpack_addressed(adverts_raw, "saved adverts")
        held = unpack_fields(held_raw)
        if not later:
            if adverts or held or round_raw or peers_raw:
                raise MessageRejectedError(f"stage {stage!r} with data of later stages")
            return client

        client._adverts = {c: Advert.from_bytes(raw, c) for c, raw in adverts.items()}
        if client._adverts.get(client_id) != client.advert:
            raise MessageRejectedError("own advert missing from the saved adverts")
        if len(round_raw) != _STATE_ROUND.size:
            raise MessageRejectedError("malformed threshold field")
        client._threshold, client._participants = _STATE_ROUND.unpack(round_raw)
        if not 2 <= client._threshold <= client._participants or (
            client._participants < len(client._adverts)
        ):
            raise MessageRejectedError(
                f"threshold {client._threshold} with {client._participants} participants and "
                f"{len(client._adverts)} adverts"
            )
        peers = unpack_ids(peers_raw)
        client._peers = frozenset(peers)
        if len(client._peers) != len(peers) or not client._peers <= set(client._adverts) - {
            client_id
        }:
            raise MessageRejectedError(
                "neighbours repeated, unknown or including the client itself"
            )
        group = client._peers | {client_id}
        for item in held:
            if len(item) != _STATE_HELD.size + 2 * SEED_SIZE:
                raise MessageRejectedError("malformed held share")
            owner, index = _STATE_HELD.unpack_from(item)
            if owner not in group or owner in client._held:
                raise MessageRejectedError(
                    f"share of client {owner}: duplicate or not a group member"
                )
            share = item[_STATE_HELD.size :]
            client._held[owner] = (index, share[:SEED_SIZE], share[SEED_SIZE:])
        if client_id not in client._held:
            raise MessageRejectedError("the client's own shares are missing")
        return client

    def _check_own_advert(self) -> None:
        """Check that the restored advert matches the restored keys and seed."""
        if (
            self.advert.enc_pk != public_bytes(self._enc_key)
            or self.advert.mask_pk != public_bytes(self._mask_key)
            or self.advert.commitment != commit(self._self_seed, self.round_id, self.id)
        ):
            raise MessageRejectedError("advert does not match the saved keys and seeds")

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
        """Stage 1: verify the relayed keys, send encrypted Shamir shares to neighbours."""
        self._require("share")
        fields = unpack_fields(self._open(keys_message, "keys"))
        if not fields or len(fields[0]) != 4:
            raise MessageRejectedError("keys message lacks the participant count")
        participants = int.from_bytes(fields[0], "little")
        adverts = {}
        for signed in fields[1:]:
            env = open_signed(signed, self.registry, kind=KIND, stage="advertise",
                              round_id=self.round_id, allowed=self.registry.keys)
            if env.sender in adverts:
                raise MessageRejectedError(f"keys message repeats client {env.sender}")
            adverts[env.sender] = Advert.from_bytes(env.payload, env.sender)
        if adverts.get(self.id) != self.advert:
            raise MessageRejectedError(f"keys message misses or alters client {self.id}'s keys")
        if any(a.dim != self.advert.dim for a in adverts.values()):
            raise MessageRejectedError("advertised vector lengths differ")
        if participants < len(adverts):
            raise MessageRejectedError(f"participant count {participants} < {len(adverts)} keys")
        threshold = self.params.threshold_for(participants)
        peers = neighbours(adverts, self.round_id, self.params.neighbourhood)[self.id]
        group = sorted(peers | {self.id})
        if len(group) < threshold:
            raise ThresholdError(
                f"client {self.id}: {len(group)} clients in its group < threshold {threshold}"
            )
        self._stage = "masked"
        self._adverts, self._peers, self._threshold = adverts, peers, threshold
        self._participants = participants
        b_shares = split_secret(self._self_seed, threshold, len(group))
        m_shares = split_secret(self._key_seed, threshold, len(group))
        out = {}
        for pos, peer in enumerate(group):
            if peer == self.id:
                self._held[self.id] = (pos + 1, b_shares[pos], m_shares[pos])
                continue
            key = agree(self._enc_key, adverts[peer].enc_pk, b"share-enc", self.round_id,
                        self.id, peer)
            plain = share_plaintext(self.id, peer, pos + 1, b_shares[pos], m_shares[pos])
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
            key = agree(self._enc_key, self._adverts[sender].enc_pk, b"share-enc",
                        self.round_id, self.id, sender)
            plain = open_share(key, blob, share_aad(self.round_id, sender, self.id),
                               f"client {sender}")
            held[sender] = parse_share_plaintext(plain, sender, self.id)
        if len(held) + 1 < self._threshold:
            raise ThresholdError(
                f"client {self.id}: shares from {len(held) + 1} group members < threshold "
                f"{self._threshold}"
            )
        self._stage = "unmask"
        self._held.update(held)
        ring = Ring(self.params.ring_bits, self.params.clip, self._participants)
        total = sum(a.weight for a in self._adverts.values())
        y = ring.quantize(x * (self.advert.weight / total))
        y += prg(self_mask_key(self._self_seed, self.round_id, self.id), y.size, ring.dtype)
        for peer in sorted(held):
            key = agree(self._mask_key, self._adverts[peer].mask_pk, b"pair-mask",
                        self.round_id, self.id, peer)
            stream = prg(key, y.size, ring.dtype)
            if pair_sign(self.id, peer) > 0:
                y += stream
            else:
                y -= stream
        return seal(self.identity, KIND, "masked", self.round_id, ring.to_bytes(y))

    def unmask(self, request_message: bytes) -> bytes:
        """Stage 3: reveal self-mask shares of survivors and key-seed shares of dropouts.

        Never reveals both for the same client, and answers at most once per round.
        """
        self._require("unmask")
        payload = unpack_fields(self._open(request_message, "unmask_request"), 1)
        survivors = set(unpack_ids(payload[0]))
        group = self._peers | {self.id}
        if (
            self.id not in survivors
            or not survivors <= set(self._adverts)
            or not survivors & group <= set(self._held)
        ):
            raise MessageRejectedError(
                f"client {self.id}: unmask request omits this client or lists a neighbour "
                "that never shared with it"
            )
        alive = len(survivors & set(self._held))
        if alive < self._threshold:
            raise ThresholdError(
                f"client {self.id}: {alive} surviving group members < threshold {self._threshold}"
            )
        self._stage = "done"
        reveals = {}
        for owner, (index, b_share, m_share) in self._held.items():
            if owner in survivors:
                reveals[owner] = (SELF_MASK, index, b_share)
            else:
                reveals[owner] = (KEY_SEED, index, m_share)
        return seal(self.identity, KIND, "unmask", self.round_id, pack_reveals(reveals))
