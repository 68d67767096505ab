"""The CKKS key holder: key generation and the checked decryption of the aggregate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tenseal as ts

from privfed.secure.base import DecodedAggregate
from privfed.secure.errors import (
    ConsistencyError,
    InvalidInputError,
    MessageRejectedError,
    ThresholdError,
)
from privfed.secure.identity import ClientIdentity, IdentityRegistry
from privfed.secure.oneshot import open_aggregate, open_uploads
from privfed.secure.validation import check_clip
from privfed.secure.wire import Envelope, pack_fields, unpack_fields

from .ciphertexts import CiphertextLayout, load_ciphertext
from .material import (
    _PUBLIC_TAG,
    _U32,
    KIND,
    HEParams,
    HEPublicContext,
    _pack_material,
    _unpack_material,
    _unpack_upload_head,
)

# Bound on the CKKS error of ONE fresh ciphertext, per slot, in units of N / 2**scale_bits
# (N = poly_modulus_degree). SEAL encrypts modulo q * p (p the special prime) and divides p out,
# so the error left is that division's rounding, r0 + r1 * s (r uniform in [-1/2, 1/2] per
# coefficient, s the ternary secret key). In slot j it is ~ r1(z_j) * s(z_j): two
# near-Gaussian factors of RMS sqrt(N/12) and sqrt(2N/3), product RMS sqrt(2/36) N = 0.24 N
# (0.17 N per real part, as measured). Each factor exceeds 6x its RMS with probability
# exp(-36) ~ 2e-16, so 36 * 0.24 N = 8.5 N holds but with probability ~ 5e-16 per slot; the
# encoding rounding (RMS sqrt(N/12)) and the divided-out encryption noise add < 1 %; 16 leaves
# a factor 2 on top. Errors of n ciphertexts add (their RMS grows like sqrt(n), the bound like
# n): n * 16 * N / 2**scale_bits bounds the weighted sum's error. The brief's n * N /
# 2**scale_bits is not safe: one ciphertext's worst slot reached 1.4 N / 2**scale_bits in 8e4.
_CKKS_ERROR_PER_CIPHERTEXT = 16.0



class HEKeyHolder:
    """Holder of the CKKS secret key: generates keys, checks and decodes the aggregate.

    It decrypts at most one cohort per round (:meth:`decode`); a key holder rebuilt from
    ``secret_material`` for each call forgets which, so keep the object for the session.

    Parameters
    ----------
    params : HEParams, optional
        CKKS parameters (ignored with ``secret_material``).
    secret_material : bytes, optional
        Output of :meth:`secret_material` of another key holder, to share its key.
    """

    def __init__(self, params: HEParams | None = None, *, secret_material: bytes | None = None):
        if secret_material is not None:
            self.params, self._context = _unpack_material(secret_material)
            if not self._context.has_secret_key():
                raise InvalidInputError("secret_material holds no secret key")
        else:
            self.params = params or HEParams()
            self._context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                self.params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(self.params.coeff_mod_bit_sizes),
            )
        self._context.global_scale = 2.0**self.params.scale_bits
        public = self._context.serialize(
            save_public_key=True, save_secret_key=False,
            save_galois_keys=False, save_relin_keys=False,
        )
        self.public = HEPublicContext(_pack_material(self.params, public))
        self._layout = CiphertextLayout.of(self._context, self.params)
        self.cohorts: dict[int, tuple[int, ...]] = {}
        """Round -> the cohort decrypted in it (persist it where the object does not live on)."""

    def public_material(self) -> bytes:
        """Serialized public context (no secret key) for clients and the server."""
        return self.public.data

    def signed_public_material(self, identity: ClientIdentity) -> bytes:
        """The public material signed by the key holder's long-term ``identity``.

        Format: ``pack_fields([tag, signer id (<u4), public material])`` followed by the
        Ed25519 signature of those bytes; :meth:`HEPublicContext.from_signed` checks it.
        """
        body = pack_fields([_PUBLIC_TAG, _U32.pack(identity.client_id), self.public_material()])
        return body + identity.sign(body)

    def secret_material(self) -> bytes:
        """Serialized context WITH the secret key, to share with other key holders only."""
        secret = self._context.serialize(
            save_public_key=True, save_secret_key=True,
            save_galois_keys=False, save_relin_keys=False,
        )
        return _pack_material(self.params, secret)

    def error_bound(self, n_clients: int) -> float:
        """Bound on the CKKS error of a sum of ``n_clients`` fresh ciphertexts, per slot."""
        unit = self.params.poly_modulus_degree / 2.0**self.params.scale_bits
        return n_clients * _CKKS_ERROR_PER_CIPHERTEXT * unit

    def decode(
        self,
        message: bytes,
        round_id: int,
        *,
        uploads: Sequence[bytes] | None,
        registry: IdentityRegistry | None = None,
        min_clients: int = 2,
        clip: float | None = None,
    ) -> DecodedAggregate:
        """Check an aggregate against the signed uploads it claims to sum; decrypt the mean.

        With ``uploads=None`` (the honest-but-curious server model) checks 3-6 are skipped:
        the key holder never sees an individual upload, and trusts the server to have summed
        the uploads it names with the weights it states.

        Checks, in order; all but the last run before anything is decrypted:

        1. the aggregate is an HE aggregate of ``round_id`` that names at least
           ``max(2, min_clients)`` clients (``ThresholdError``): one client's upload framed
           as an aggregate, or a cohort below the threshold;
        2. no other cohort of this round was decrypted by this object (``ConsistencyError``):
           differencing, e.g. the sums of {a, b, c} and {a, b} give c;
        3. every upload is signed by a registered client for this kind, stage and round, one
           per sender (``AuthenticationError``: forged, tampered or relabelled for another
           sender; ``MessageRejectedError``: another round, i.e. a replay; ``ConsistencyError``:
           a duplicate);
        4. the uploads' senders are the aggregate's ``included`` list, each upload carries this
           key holder's fingerprint and the same announced total ``W`` (``ConsistencyError``):
           listed clients whose uploads are withheld, uploads under a substituted context, a
           ``W`` told differently to different clients;
        5. the included weight is the sum of the signed weights: the header must agree and it
           may not exceed ``W`` (``ConsistencyError``): inflated or made-up weights;
        6. the homomorphic sum of the uploads, recomputed in sorted sender order, is
           byte-identical to the aggregate's ciphertexts (``ConsistencyError``): a dropped or
           doubled addend, a substituted or forged ciphertext. (CKKS addition is exact
           arithmetic mod q, so equal sums serialize to equal bytes in any order: measured
           with TenSEAL 0.3; the bytes are compared, not decryptions.)
        7. every coordinate of the decrypted mean lies in ``[-clip, clip]`` widened by the
           CKKS error bound times ``W / w_included`` (``ConsistencyError``): an upload under a
           foreign key with the right fingerprint, whose decryption is noise of ~1e7 per
           coordinate (missed with probability < 1 % per coordinate at ``clip`` = the CKKS
           limit, so only for vectors of a few coordinates). The mean is not returned.

        Not caught: a client's in-range vector, however made (not a zero-knowledge proof),
        and a cohort the server chose (it may leave clients out; ``included`` names them).

        Parameters
        ----------
        message : bytes
            The aggregate message from the server.
        round_id : int
        uploads : Sequence[bytes] or None
            The round's signed uploads the server says it summed, exactly as the clients sent
            them (e.g. :meth:`OneShotServerParty.accepted_uploads`); ``None``: trust the server
            (honest-but-curious model).
        registry : IdentityRegistry, optional
            The clients' long-term verification keys (required with ``uploads``). Only as
            good as they are authentic: with keys the server relayed (and could have
            substituted) or identities it registered, it can sign uploads of its own and
            frame one honest upload as a sum.
        min_clients : int
            Decrypt only a sum of at least ``max(2, min_clients)`` clients (e.g. distributed
            DP's K_min).
        clip : float or None
            The clients' clip (``None``: the CKKS range limit ``params.max_abs``).

        Raises
        ------
        ThresholdError, ConsistencyError, AuthenticationError, MessageRejectedError
            As listed above, or a malformed message; nothing is revealed.
        """
        need = max(2, int(min_clients))
        bound = self.params.max_abs if clip is None else check_clip(clip)
        included, w_header, total_header, fields = open_aggregate(message, KIND, round_id)
        if len(included) < need:
            raise ThresholdError(
                f"round {round_id}: the aggregate holds {len(included)} clients, fewer than "
                f"min_clients = {need}; not decrypting it (never one client's upload alone)"
            )
        done = self.cohorts.get(round_id)
        if done is not None and done != included:
            raise ConsistencyError(
                f"round {round_id}: already decrypted for clients {list(done)}; refusing a "
                f"second cohort {list(included)} (the difference would reveal inputs)"
            )
        if not fields or fields[0] != self.public.fingerprint:
            raise ConsistencyError("aggregate is not under this key holder's context")
        if uploads is None:
            summed = self._ciphertexts(fields[1:], "the aggregate")
            w_incl, total = w_header, total_header
        else:
            if registry is None:
                raise InvalidInputError("decode: checking uploads needs the clients' registry")
            summed, w_incl, total = self._verified_sum(uploads, registry, included, fields,
                                                       round_id, w_header, total_header)
        weighted = np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in summed])
        mean = weighted * (total / w_incl)
        slack = self.error_bound(len(included)) * (total / w_incl)
        peak = int(np.argmax(np.abs(mean)))
        if abs(mean[peak]) > bound + slack:
            raise ConsistencyError(
                f"round {round_id}: aggregate outside the range its inputs allow: an upload "
                f"under a foreign key or a forged ciphertext (coordinate {peak} = "
                f"{mean[peak]:.3g}, |x| <= clip {bound:g} + CKKS error {slack:.2g})"
            )
        self.cohorts[round_id] = included
        return DecodedAggregate(mean, w_incl, included)

    def _verified_sum(
        self, uploads: Sequence[bytes], registry: IdentityRegistry, included: tuple[int, ...],
        fields: list[bytes], round_id: int, w_header: float, total_header: float,
    ) -> tuple[list[ts.CKKSVector], float, float]:
        """Checks 3-6 of :meth:`decode`: the sum, the included and the total weight."""
        envs = open_uploads(uploads, registry, kind=KIND, round_id=round_id)
        weights, total = self._check_uploads(envs, included, round_id)
        w_incl = math.fsum(weights)
        if w_incl > total * (1 + 1e-12):
            raise ConsistencyError(
                f"round {round_id}: signed weights sum to {w_incl:g} > announced total {total:g}"
            )
        if not (math.isclose(w_header, w_incl, rel_tol=1e-12)
                and math.isclose(total_header, total, rel_tol=1e-12)):
            raise ConsistencyError(
                f"round {round_id}: aggregate header claims weight {w_header:g} of {total_header:g}"
                f"; the signed uploads say {w_incl:g} of {total:g}"
            )
        summed = self._sum(envs)
        if [v.serialize() for v in summed] != fields[1:]:
            raise ConsistencyError(
                f"round {round_id}: the aggregate ciphertext is not the sum of the forwarded "
                f"uploads of clients {list(included)}"
            )
        return summed, w_incl, total

    def _ciphertexts(self, blobs: Sequence[bytes], who: str) -> list[ts.CKKSVector]:
        """Parse serialized ciphertexts under this key holder's context, each checked against
        the layout of a fresh encryption (scale, level, polynomials)."""
        return [load_ciphertext(self._context, ct, self._layout, None, f"{who}: ciphertext {i}")
                for i, ct in enumerate(blobs)]

    def _check_uploads(
        self, envs: list[Envelope], included: tuple[int, ...], round_id: int
    ) -> tuple[list[float], float]:
        """Check 4 of :meth:`decode`; return the signed weights (sorted sender order) and W."""
        senders = tuple(env.sender for env in envs)
        if senders != included:
            raise ConsistencyError(
                f"round {round_id}: the aggregate lists clients {list(included)} but the "
                f"forwarded uploads are from {list(senders)}"
            )
        weights, totals = [], set()
        for env in envs:
            fields = unpack_fields(env.payload)
            if len(fields) < 2:
                raise MessageRejectedError(f"client {env.sender}: upload without ciphertexts")
            fingerprint, weight, total = _unpack_upload_head(fields[0], env.sender)
            if fingerprint != self.public.fingerprint:
                raise ConsistencyError(
                    f"round {round_id}: the upload of client {env.sender} is under another "
                    f"context (fingerprint {fingerprint.hex()}, this key holder's "
                    f"{self.public.fingerprint.hex()}): was its public context substituted?"
                )
            weights.append(weight)
            totals.add(total)
        if len(totals) != 1:
            raise ConsistencyError(
                f"round {round_id}: the clients were announced different totals W "
                f"{sorted(totals)}"
            )
        return weights, totals.pop()

    def _sum(self, envs: list[Envelope]) -> list[ts.CKKSVector]:
        """Homomorphic sum of the uploads' ciphertexts, in the order given (check 6)."""
        total: list[ts.CKKSVector] | None = None
        for env in envs:
            vecs = self._ciphertexts(unpack_fields(env.payload)[1:], f"client {env.sender}")
            if total is None:
                total = vecs
                continue
            if [v.size() for v in vecs] != [v.size() for v in total]:
                raise ConsistencyError(
                    f"client {env.sender}: ciphertexts of sizes {[v.size() for v in vecs]}, the "
                    f"other uploads {[v.size() for v in total]}"
                )
            for acc, vec in zip(total, vecs, strict=True):
                acc.add_(vec)
        assert total is not None
        return total
