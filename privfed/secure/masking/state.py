"""Saving a masking client between protocol stages, and restoring it.

The format is ``"PFMC" | version | length-prefixed fields | SHA-256 of what precedes``. It
holds the round's secrets (X25519 private key, both seeds, the Shamir shares received): keep
it as confidential as the client's identity key, and never send it.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privfed.secure.errors import MessageRejectedError
from privfed.secure.identity import ClientIdentity, IdentityRegistry
from privfed.secure.validation import OUT_OF_RANGE_MODES
from privfed.secure.wire import pack_fields, pack_ids, unpack_fields, unpack_ids

from .crypto import SEED_SIZE, public_bytes, x25519_from_seed
from .messages import Advert, commit, pack_addressed, unpack_addressed
from .params import SERVER_MODELS, MaskingParams

if TYPE_CHECKING:
    from .client import MaskingClientParty

__all__ = ["STAGES", "restore_client", "save_client"]

STAGES = ("advertise", "share", "masked", "consistency", "unmask", "done")
"""Client stages in protocol order; a saved state stores the index of its stage."""
STATE_MAGIC = b"PFMC"
STATE_VERSION = 2
_STATE_PREFIX = struct.Struct("<4sB")
_STATE_HEAD = struct.Struct("<QIB")  # round id, client id, stage index
# ring bits, clip, out_of_range, threshold, neighbourhood, min_clients, cohort_size,
# corrupt fraction, dropout fraction, security bits, server model
_STATE_PARAMS = struct.Struct("<BdBQqQQddIB")
_NEIGHBOURHOOD_CODES = {"full": 0, "secagg+": -1, "auto": -2}
_STATE_ROUND = struct.Struct("<I")  # threshold
_STATE_HELD = struct.Struct("<IH")  # share owner, Shamir index
_STATE_FIELDS = 11
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
        _NEIGHBOURHOOD_CODES.get(nb, nb) if isinstance(nb, str) else int(nb),
        params.min_clients,
        0 if params.cohort_size is None else params.cohort_size,
        float(params.corrupt_fraction),
        float(params.dropout_fraction),
        params.security_bits,
        SERVER_MODELS.index(params.server_model),
    )


def save_client(client: MaskingClientParty) -> bytes:
    """The complete state of ``client`` at whatever stage it is (see
    :meth:`MaskingClientParty.to_bytes`)."""
    later = STAGES.index(client._stage) >= STAGES.index("masked")
    advert = b"" if client._stage == "advertise" else client.advert.to_bytes()
    adverts = {c: a.to_bytes() for c, a in client._adverts.items()}
    round_meta = _STATE_ROUND.pack(client._threshold) if later else b""
    signed = STAGES.index(client._stage) >= STAGES.index("unmask") and (
        client.params.consistency_round
    )
    survivors = pack_ids(tuple(sorted(client._survivors))) if signed else b""
    peers = pack_ids(tuple(sorted(client._peers))) if later else b""
    held = [
        _STATE_HELD.pack(owner, index) + b_share + m_share
        for owner, (index, b_share, m_share) in sorted(client._held.items())
    ]
    body = _STATE_PREFIX.pack(STATE_MAGIC, STATE_VERSION) + pack_fields([
        _STATE_HEAD.pack(client.round_id, client.id, STAGES.index(client._stage)),
        _params_bytes(client.params),
        client._enc_key.private_bytes_raw(),
        client._key_seed,
        client._self_seed,
        advert,
        pack_addressed(adverts),
        round_meta,
        peers,
        pack_fields(held),
        survivors,
    ])
    return body + hashlib.sha256(body).digest()


def restore_client(
    cls: type[MaskingClientParty],
    data: bytes,
    identity: ClientIdentity,
    registry: IdentityRegistry,
    params: MaskingParams,
) -> MaskingClientParty:
    """A ``cls`` instance restored from :func:`save_client`'s bytes (see
    :meth:`MaskingClientParty.from_bytes`); raises MessageRejectedError naming the problem."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageRejectedError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _STATE_PREFIX.size + _DIGEST_SIZE:
        raise MessageRejectedError(f"only {len(data)} bytes")
    magic, version = _STATE_PREFIX.unpack_from(data)
    if magic != STATE_MAGIC:
        raise MessageRejectedError(f"not a MaskingClientParty state (magic={magic!r})")
    if version != STATE_VERSION:
        raise MessageRejectedError(f"format version {version}, this code reads {STATE_VERSION}")
    body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        raise MessageRejectedError("checksum mismatch (truncated or corrupted)")
    fields = unpack_fields(body[_STATE_PREFIX.size :], _STATE_FIELDS)
    head, params_raw, enc_raw, key_seed, self_seed = fields[:5]
    advert_raw, adverts_raw, round_raw, peers_raw, held_raw, survivors_raw = fields[5:]

    if len(head) != _STATE_HEAD.size:
        raise MessageRejectedError("malformed header field")
    round_id, client_id, stage_index = _STATE_HEAD.unpack(head)
    if stage_index >= len(STAGES):
        raise MessageRejectedError(f"unknown stage index {stage_index}")
    stage = STAGES[stage_index]
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
    client._share_keys = {}
    if stage == "advertise":
        if advert_raw:
            raise MessageRejectedError("stage 'advertise' with an advert")
    else:
        client.advert = Advert.from_bytes(advert_raw, client_id)
        _check_own_advert(client)
    later = stage_index >= STAGES.index("masked")
    adverts = unpack_addressed(adverts_raw, "saved adverts")
    held = unpack_fields(held_raw)
    if not later:
        if adverts or held or round_raw or peers_raw or survivors_raw:
            raise MessageRejectedError(f"stage {stage!r} with data of later stages")
        return client

    client._adverts = {c: Advert.from_bytes(raw, c) for c, raw in adverts.items()}
    if client._adverts.get(client_id) != client.advert:
        raise MessageRejectedError("own advert missing from the saved adverts")
    if len(round_raw) != _STATE_ROUND.size:
        raise MessageRejectedError("malformed threshold field")
    (client._threshold,) = _STATE_ROUND.unpack(round_raw)
    if not 2 <= client._threshold <= len(client._adverts):
        raise MessageRejectedError(
            f"threshold {client._threshold} with {len(client._adverts)} adverts"
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
    signed = stage_index >= STAGES.index("unmask") and params.consistency_round
    if signed != bool(survivors_raw):
        raise MessageRejectedError(f"stage {stage!r} with a wrong signed survivor set")
    if signed:
        client._survivors = frozenset(unpack_ids(survivors_raw))
        if client_id not in client._survivors or not client._survivors <= set(client._adverts):
            raise MessageRejectedError("signed survivor set omits the client or is unknown")
    return client


def _check_own_advert(client: MaskingClientParty) -> None:
    """Check that the restored advert matches the restored keys and seed."""
    if (
        client.advert.enc_pk != public_bytes(client._enc_key)
        or client.advert.mask_pk != public_bytes(client._mask_key)
        or client.advert.commitment != commit(client._self_seed, client.round_id, client.id)
    ):
        raise MessageRejectedError("advert does not match the saved keys and seeds")
