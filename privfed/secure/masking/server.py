"""Server side of the masking protocol: relays keys and shares, unmasks only the sum.

The server never holds a secret that opens a single client's masked input: for each client
it recovers either the self-mask seed (client survived) or the pairwise-key seed (client
dropped), never both, and only from at least ``t`` shares. Against a malicious server this
rests on the clients' own checks (see :class:`~privfed.secure.masking.MaskingClientParty`); the
server's checks here protect the honest clients' result from malformed client messages.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Collection
from functools import partial

import numpy as np

from privfed.secure.errors import MessageRejectedError, ThresholdError
from privfed.secure.identity import IdentityRegistry
from privfed.secure.oneshot import open_aggregate
from privfed.secure.validation import check_round_id
from privfed.secure.wire import SERVER_ID, open_signed, pack, pack_fields, pack_ids

from .client import pair_sign, self_mask_key
from .crypto import MaskSum, agree, public_bytes, x25519_from_seed
from .messages import (
    KEY_SEED,
    KIND,
    SELF_MASK,
    Advert,
    commit,
    pack_addressed,
    survivors_digest,
    unpack_addressed,
    unpack_reveals,
)
from .params import MaskingParams, neighbours
from .quantize import Ring
from .recovery import recover_verified
from .shamir import combine_secrets

logger = logging.getLogger(__name__)

_STAGES = ("advertise", "share", "masked", "consistency", "unmask", "done")
_RING_META = struct.Struct("<IId")
_F64 = struct.Struct("<d")


class MaskingServerParty:
    """Server of one round of masked secure aggregation.

    Receive each stage's client messages with :meth:`receive`, then close the stage with
    :meth:`keys_message`, :meth:`forward_messages`, :meth:`survivors_message` (malicious
    server model only), :meth:`unmask_request` and finally :meth:`aggregate`.

    Parameters
    ----------
    registry : IdentityRegistry
        Verification keys of the clients.
    params : MaskingParams
        Protocol parameters, with ``cohort_size`` fixed.
    round_id : int
        The round served.
    dim : int
        Vector length.
    participants : Collection[int]
        Clients invited to the round.
    """

    def __init__(
        self,
        registry: IdentityRegistry,
        params: MaskingParams,
        round_id: int,
        dim: int,
        participants: Collection[int],
    ) -> None:
        self.registry = registry
        self.params = params
        self.round_id = check_round_id(round_id)
        self.dim = int(dim)
        self.participants = frozenset(participants)
        self.threshold = params.planned().threshold
        self.ring: Ring | None = None
        self.stage = "advertise"
        self._signed_adverts: dict[int, bytes] = {}
        self.adverts: dict[int, Advert] = {}
        self._shares: dict[int, dict[int, bytes]] = {}
        self._masked: dict[int, np.ndarray] = {}
        self._signatures: dict[int, bytes] = {}
        self._reveals: dict[int, dict[int, tuple[int, int, bytes]]] = {}
        self._graph: dict[int, frozenset[int]] = {}
        self._indices: dict[int, dict[int, int]] = {}  # owner -> holder -> Shamir index
        self.bad_shares: dict[int, tuple[int, ...]] = {}
        """Client -> the clients whose seed it revealed a wrong share of (found by
        :meth:`aggregate`, which recovered those seeds without them)."""

    # ------------------------------------------------------------------ receiving
    def _allowed(self) -> Collection[int]:
        return {
            "advertise": self.participants,
            "share": self.adverts,
            "masked": self._shares,
            "consistency": self._masked,
            "unmask": self._signatures if self.params.consistency_round else self._masked,
        }.get(self.stage, ())

    def _store(self) -> dict:
        return {
            "advertise": self.adverts,
            "share": self._shares,
            "masked": self._masked,
            "consistency": self._signatures,
            "unmask": self._reveals,
        }[self.stage]

    def receive(self, message: bytes) -> int:
        """Check and store a client message of the current stage; return its sender.

        Raises
        ------
        MessageRejectedError
            Malformed, wrong stage or round (replay), unknown/duplicate/dropped sender.
        AuthenticationError
            Bad signature. The server state is unchanged in every case.
        """
        if self.stage == "done":
            raise MessageRejectedError(f"round {self.round_id} is finished")
        env = open_signed(message, self.registry, kind=KIND, stage=self.stage,
                          round_id=self.round_id, allowed=self._allowed())
        sender, store = env.sender, self._store()
        if sender in store:
            raise MessageRejectedError(
                f"duplicate {self.stage!r} message from client {sender} in round {self.round_id}"
            )
        if self.stage == "advertise":
            advert = Advert.from_bytes(env.payload, sender)
            if advert.dim != self.dim:
                raise MessageRejectedError(
                    f"client {sender}: vector length {advert.dim}, expected {self.dim}"
                )
            self._signed_adverts[sender] = bytes(message)
            store[sender] = advert
        elif self.stage == "share":
            shares = unpack_addressed(env.payload, f"client {sender}")
            if set(shares) != self._graph[sender]:
                raise MessageRejectedError(
                    f"client {sender}: shares addressed to {sorted(shares)}, expected its "
                    f"neighbours {sorted(self._graph[sender])}"
                )
            store[sender] = shares
        elif self.stage == "masked":
            assert self.ring is not None
            values = self.ring.from_bytes(env.payload, self.dim)
            if values is None:
                raise MessageRejectedError(
                    f"client {sender}: masked vector of {len(env.payload)} bytes, expected "
                    f"{self.dim} elements of {self.ring.dtype.itemsize} bytes in Z_2^"
                    f"{self.ring.bits}"
                )
            store[sender] = values
        elif self.stage == "consistency":
            if env.payload != survivors_digest(self.round_id, self._masked):
                raise MessageRejectedError(
                    f"client {sender} signed another survivor set than the one announced"
                )
            store[sender] = bytes(message)
        else:
            store[sender] = self._check_reveals(sender, unpack_reveals(env.payload, sender))
        return sender

    def _check_reveals(
        self, sender: int, reveals: dict[int, tuple[int, int, bytes]]
    ) -> dict[int, tuple[int, int, bytes]]:
        """The reveals of ``sender`` if each is a share it holds, of the right kind and
        under the Shamir index the owner gave it (its place in the owner's group)."""
        for owner, (kind, index, _) in reveals.items():
            expected_index = self._indices.get(owner, {}).get(sender)
            if owner not in self._shares or expected_index is None:
                raise MessageRejectedError(f"client {sender}: revealed a share of {owner}, "
                                           "which it cannot hold")
            expected = SELF_MASK if owner in self._masked else KEY_SEED
            if kind != expected:
                raise MessageRejectedError(f"client {sender}: wrong share type for {owner}")
            if index != expected_index:
                raise MessageRejectedError(
                    f"client {sender}: revealed its share of client {owner} under Shamir index "
                    f"{index}, expected {expected_index} (its place in {owner}'s group)"
                )
        return reveals

    # ------------------------------------------------------------------ closing stages
    def _closable(self, stage: str, survivors: Collection[int]) -> str:
        """The stage after ``stage`` if ``stage`` can be closed now; changes nothing."""
        if self.stage != stage:
            raise MessageRejectedError(
                f"cannot close stage {stage!r}: server is at stage {self.stage!r}"
            )
        if len(survivors) < self.threshold:
            raise ThresholdError(
                f"round {self.round_id}, stage {stage!r}: only {len(survivors)} clients "
                f"responded, fewer than the threshold t={self.threshold}; aborting without "
                "unmasking anything"
            )
        following = _STAGES[_STAGES.index(stage) + 1]
        if following == "consistency" and not self.params.consistency_round:
            following = "unmask"
        return following

    def _close(self, stage: str, survivors: Collection[int]) -> None:
        self.stage = self._closable(stage, survivors)

    def keys_message(self) -> bytes:
        """Close stage ``advertise``; the broadcast of all signed adverts (same for all)."""
        self._close("advertise", self.adverts)
        plan = self.params.for_view(len(self.adverts))
        self.threshold = plan.threshold
        self.ring = Ring(self.params.ring_bits, self.params.clip, len(self.adverts))
        self._graph = neighbours(self.adverts, self.round_id, plan.degree)
        self._indices = {
            owner: {holder: pos + 1 for pos, holder in enumerate(sorted(peers | {owner}))}
            for owner, peers in self._graph.items()
        }
        fields = [self._signed_adverts[c] for c in sorted(self._signed_adverts)]
        return pack(KIND, "keys", self.round_id, SERVER_ID, pack_fields(fields))

    def forward_messages(self) -> dict[int, bytes]:
        """Close stage ``share``; per client, the encrypted shares addressed to it."""
        self._close("share", self._shares)
        inbox: dict[int, dict[int, bytes]] = {c: {} for c in self._shares}
        for sender, shares in self._shares.items():
            for recipient, blob in shares.items():
                if recipient in inbox:
                    inbox[recipient][sender] = blob
        return {
            c: pack(KIND, "forward", self.round_id, SERVER_ID, pack_addressed(items))
            for c, items in inbox.items()
        }

    def survivors_message(self) -> bytes:
        """Close stage ``masked`` (malicious server model): the survivor set to sign."""
        if not self.params.consistency_round:
            raise MessageRejectedError(
                "no consistency round under server_model='honest-but-curious'; call "
                "unmask_request()"
            )
        self._close("masked", self._masked)
        payload = pack_fields([pack_ids(tuple(sorted(self._masked)))])
        return pack(KIND, "survivors", self.round_id, SERVER_ID, payload)

    def unmask_request(self) -> bytes:
        """Close stage ``consistency`` (or ``masked`` under the honest-but-curious model).

        Returns
        -------
        bytes
            The survivor set, with the clients' signatures on it under the malicious model.
        """
        survivors = pack_ids(tuple(sorted(self._masked)))
        if self.params.consistency_round:
            self._close("consistency", self._signatures)
            signed = [self._signatures[c] for c in sorted(self._signatures)]
        else:
            self._close("masked", self._masked)
            signed = []
        return pack(KIND, "unmask_request", self.round_id, SERVER_ID,
                    pack_fields([survivors, *signed]))

    def aggregate(self) -> bytes:
        """Close stage ``unmask``: recover the needed seeds, remove masks, return the sum.

        Each seed is recovered from its ``t`` shares of smallest index and checked against
        the owner's signed advert (the self-mask seed against its commitment, the mask-key
        seed against the advertised public key). A seed that fails is recovered from other
        ``t``-subsets of its shares until one verifies (:func:`recover_verified`); the
        clients whose shares disagree with it are named in :attr:`bad_shares` and a warning.
        The stage is closed only when the aggregate is built: after an error, more unmask
        messages can be received and ``aggregate`` called again.

        Raises
        ------
        ThresholdError
            Fewer than ``t`` responses, fewer than ``t`` shares of a needed seed, or too many
            wrong shares of a seed to find ``t`` that verify.
        MessageRejectedError
            Not at stage ``unmask``.
        """
        following = self._closable("unmask", self._reveals)
        assert self.ring is not None
        survivors = sorted(self._masked)
        dropped = sorted(set(self._shares) - set(self._masked))
        seeds = self._recover_seeds(survivors + dropped)
        total = np.zeros(self.dim, dtype=self.ring.dtype)
        masks = MaskSum(total)
        for c in survivors:
            total += self._masked[c]
            masks.add(self_mask_key(seeds[c], self.round_id, c), -1)
        for v in dropped:
            key = x25519_from_seed(seeds[v], self.round_id, v)
            for u in sorted(self._graph[v] & set(survivors)):
                pair = agree(key, self.adverts[u].mask_pk, b"pair-mask", self.round_id, u, v)
                masks.add(pair, -pair_sign(u, v))
        announced = sum(a.weight for a in self.adverts.values())
        included = sum(self.adverts[c].weight for c in survivors)
        meta = _RING_META.pack(self.ring.bits, self.ring.clients, self.ring.clip)
        fields = [pack_ids(tuple(survivors)), _F64.pack(included), _F64.pack(announced), meta,
                  self.ring.to_bytes(total)]
        self.stage = following
        return pack(KIND, "aggregate", self.round_id, SERVER_ID, pack_fields(fields))

    def _recover_seeds(self, owners: list[int]) -> dict[int, bytes]:
        """The verified seed of each owner (self-mask seed if it survived, else its mask-key
        seed); records the holders of wrong shares in :attr:`bad_shares`."""
        collected: dict[int, dict[int, bytes]] = {c: {} for c in owners}
        for reveals in self._reveals.values():
            for owner, (_, index, share) in reveals.items():
                collected[owner][index] = share
        short = {c: len(s) for c, s in collected.items() if len(s) < self.threshold}
        if short:
            raise ThresholdError(
                f"round {self.round_id}: too few shares (threshold t={self.threshold}) to "
                f"recover the seeds of clients {short}; aborting"
            )
        seeds = combine_secrets(collected, self.threshold)
        bad: dict[int, list[int]] = {}
        for owner in owners:
            if self._verifies(owner, seeds[owner]):
                continue
            found = recover_verified(
                collected[owner], self.threshold, partial(self._verifies, owner),
                who=f"round {self.round_id}, seed of client {owner}",
            )
            seeds[owner] = found.secret
            holders = {index: holder for holder, index in self._indices[owner].items()}
            for index in found.bad:
                bad.setdefault(holders[index], []).append(owner)
        self.bad_shares = {h: tuple(owned) for h, owned in sorted(bad.items())}
        for holder, owned in self.bad_shares.items():
            logger.warning("round %d: client %d revealed wrong Shamir shares of client(s) %s; "
                           "their seeds were recovered without them", self.round_id, holder,
                           list(owned))
        return seeds

    def _verifies(self, owner: int, seed: bytes) -> bool:
        """Whether ``seed`` is the one ``owner`` committed to in its signed advert."""
        advert = self.adverts[owner]
        if owner in self._masked:
            return commit(seed, self.round_id, owner) == advert.commitment
        return public_bytes(x25519_from_seed(seed, self.round_id, owner)) == advert.mask_pk


def decode_masking(message: bytes, round_id: int) -> tuple[np.ndarray, float, tuple[int, ...]]:
    """Dequantise a masking aggregate message.

    Returns
    -------
    mean : np.ndarray
        Weighted mean of the included clients.
    total_weight : float
        Their total weight.
    included : tuple of int
        The included clients.
    """
    included, w_incl, announced, body = open_aggregate(message, KIND, round_id)
    if len(body) != 2 or len(body[0]) != _RING_META.size:
        raise MessageRejectedError("malformed masking aggregate")
    bits, clients, clip = _RING_META.unpack(body[0])
    ring = Ring(bits, clip, clients)
    values = ring.from_bytes(body[1], len(body[1]) // ring.dtype.itemsize)
    if values is None:
        raise MessageRejectedError("malformed masking aggregate vector")
    mean = ring.dequantize(values) * (announced / w_incl)
    warn_if_coarse(mean, ring, announced / w_incl, round_id)
    return mean, w_incl, included


COARSE_ROUNDING = 0.1
"""The share of the aggregate's root mean square above which :func:`warn_if_coarse` warns."""


def warn_if_coarse(mean: np.ndarray, ring: Ring, rescale: float, round_id: int) -> None:
    """Log a warning when the fixed-point rounding is not small beside the released mean.

    Stochastic rounding is unbiased but adds up to one ``ring.step`` per client, so the
    mean carries noise of standard deviation at most ``sqrt(clients) * step / 2`` (times
    the weight rescaling). A ``clip`` far above the updates' scale makes that noise
    swamp the mean; the released mean (which the server holds anyway) shows it.
    """
    bound = np.sqrt(ring.clients) * ring.step / 2 * rescale
    rms = float(np.sqrt(np.mean(np.square(mean)))) if mean.size else 0.0
    if bound > COARSE_ROUNDING * rms:
        logger.warning(
            "round %d: masking's fixed-point rounding (noise up to %.3g per coordinate) is "
            "not small beside the aggregate (root mean square %.3g): lower secure.clip "
            "(now %g) toward the updates' scale, or raise secure.ring_bits", round_id, bound,
            rms, ring.clip)
