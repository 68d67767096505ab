"""The HE client (encrypts and signs its update) and server (adds ciphertexts)."""

from __future__ import annotations

from typing import Any

import tenseal as ts

from privfed.secure.errors import InvalidInputError, MessageRejectedError
from privfed.secure.identity import ClientIdentity
from privfed.secure.oneshot import OneShotServerParty
from privfed.secure.validation import prepare_upload, prepare_vector
from privfed.secure.wire import pack_fields, seal, unpack_fields

from .ciphertexts import CiphertextLayout, load_ciphertext
from .material import KIND, HEPublicContext, _pack_upload_head, _unpack_upload_head


class HEClientParty:
    """Client of the HE protocol: encrypts ``(w_k / W) * x`` with the public key.

    Parameters
    ----------
    identity : ClientIdentity
        Signing identity of the client.
    public : HEPublicContext
        Public key material of the key holders (authenticate it with
        :meth:`HEPublicContext.from_signed` when a relay could substitute it).
    clip : float or None
        Maximum absolute value per coordinate (``None``: only the CKKS range limit).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates or raise.
    """

    kind = KIND

    def __init__(
        self,
        identity: ClientIdentity,
        public: HEPublicContext,
        *,
        clip: float | None = None,
        out_of_range: str = "error",
    ) -> None:
        self.identity = identity
        self.public = public
        limit = public.params.max_abs
        if clip is not None and clip > limit:
            raise InvalidInputError(f"clip={clip:g} exceeds the CKKS range limit {limit:g}")
        self.clip = clip
        self.out_of_range = out_of_range

    def encode(self, round_id: int, vector: Any, weight: float, total_weight: float) -> bytes:
        """Return the signed upload: its head (fingerprint, ``weight``, ``total_weight``) and
        the ciphertexts of ``weight / total_weight * vector``.

        Raises
        ------
        InvalidInputError
            Bad vector or weights, or ``weight > total_weight``.
        """
        x, share = prepare_upload(round_id, vector, weight, total_weight, clip=self.clip,
                                  out_of_range=self.out_of_range,
                                  client_id=self.identity.client_id)
        if share > 1:
            raise InvalidInputError(
                f"weight {weight:g} of client {self.identity.client_id} exceeds the announced "
                f"total {total_weight:g}"
            )
        if self.clip is None:
            prepare_vector(x, None, clip=self.public.params.max_abs, out_of_range="error",
                           client_id=self.identity.client_id)
        x *= share
        slots = self.public.params.slots
        cts = [
            ts.ckks_vector(self.public.context, x[i : i + slots].tolist()).serialize()
            for i in range(0, x.size, slots)
        ]
        head = _pack_upload_head(self.public.fingerprint, float(weight), float(total_weight))
        return seal(self.identity, KIND, "upload", round_id, pack_fields([head, *cts]))


class HEServerParty(OneShotServerParty):
    """Server of the HE protocol: adds ciphertexts under a public context (cannot decrypt).

    Parameters
    ----------
    round_id, weights, registry, dim
        See :class:`~privfed.secure.oneshot.OneShotServerParty`.
    public : HEPublicContext
        Public key material; it holds no secret key.
    """

    kind = KIND
    keeps_uploads = True

    def __init__(self, *args: Any, public: HEPublicContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.public = public
        slots = public.params.slots
        self._sizes = [min(slots, self.dim - i) for i in range(0, self.dim, slots)]
        self._layout = CiphertextLayout.of(public.context, public.params)
        self._sum: list[ts.CKKSVector] | None = None

    def _parse(self, sender: int, payload: bytes) -> list[ts.CKKSVector]:
        fields = unpack_fields(payload)
        if len(fields) < 2:
            raise MessageRejectedError(f"client {sender}: upload without ciphertexts")
        fingerprint, weight, total = _unpack_upload_head(fields[0], sender)
        if fingerprint != self.public.fingerprint:
            raise MessageRejectedError(
                f"client {sender}: ciphertexts under a different context (fingerprint "
                f"{fingerprint.hex()}, expected {self.public.fingerprint.hex()})"
            )
        if weight != self.weights[sender] or total != self.total_weight:
            raise MessageRejectedError(
                f"client {sender}: signed weight {weight:g} of total {total:g}, announced "
                f"{self.weights[sender]:g} of {self.total_weight:g}"
            )
        if len(fields) - 1 != len(self._sizes):
            raise MessageRejectedError(
                f"client {sender}: {len(fields) - 1} ciphertexts, expected {len(self._sizes)} "
                f"for a vector of length {self.dim}"
            )
        return [
            load_ciphertext(self.public.context, ct, self._layout, size,
                            f"client {sender}: ciphertext {i}")
            for i, (ct, size) in enumerate(zip(fields[1:], self._sizes, strict=True))
        ]

    def _add(self, parsed: list[ts.CKKSVector]) -> None:
        """Add a checked upload: the new sums are computed aside and replace the old ones
        only once every ciphertext is added, so a failing addition changes nothing."""
        if self._sum is None:
            self._sum = parsed
            return
        try:
            summed = [acc + vec for acc, vec in zip(self._sum, parsed, strict=True)]
        except Exception as exc:  # not expected after _parse's checks; never half-added
            raise MessageRejectedError(f"upload could not be added: {exc}") from None
        self._sum = summed

    def _aggregate_fields(self) -> list[bytes]:
        assert self._sum is not None
        return [self.public.fingerprint, *(v.serialize() for v in self._sum)]
