"""What a valid upload ciphertext looks like, and the parsing that checks it.

A CKKS ciphertext that deserializes under the server's context may still be one the sum
cannot take: another scale (SEAL refuses to add it, or a sum would decrypt to a wrong
value), another level of the modulus chain, a product that was never relinearised (three
polynomials), or another number of slots. :func:`load_ciphertext` checks all of them against
the :class:`CiphertextLayout` that the protocol's parameters and the public context fix, so a
party parses and checks every ciphertext of an upload before it adds any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tenseal as ts

from privfed.secure.errors import MessageRejectedError

from .material import HEParams

FRESH_POLYNOMIALS = 2
"""Polynomials of a fresh (or summed) ciphertext; a product before relinearisation has 3."""


@dataclass(frozen=True)
class CiphertextLayout:
    """The layout of a fresh encryption under one public context.

    Attributes
    ----------
    parms_id : tuple of int
        SEAL's id of the top data level of the modulus chain (the level a fresh encryption
        is at; a lower level drops primes).
    coeff_modulus_size : int
        Primes at that level: ``len(coeff_mod_bit_sizes) - 1`` (the special prime excluded).
    poly_modulus_degree : int
        Ring degree.
    scale : float
        ``2**scale_bits``.
    """

    parms_id: tuple[int, ...]
    coeff_modulus_size: int
    poly_modulus_degree: int
    scale: float

    @classmethod
    def of(cls, context: ts.Context, params: HEParams) -> CiphertextLayout:
        """The layout that ``params`` fix for ciphertexts under ``context``.

        The level's id is read from one encryption of zero under ``context`` (it is a hash
        of the chain's parameters); every other field comes from ``params``.
        """
        scale = 2.0**params.scale_bits
        probe = ts.ckks_vector(context, [0.0], scale=scale).ciphertext()[0]
        return cls(
            parms_id=tuple(probe.parms_id()),
            coeff_modulus_size=len(params.coeff_mod_bit_sizes) - 1,
            poly_modulus_degree=params.poly_modulus_degree,
            scale=scale,
        )

    def mismatch(self, ciphertext: Any) -> str | None:
        """What in SEAL ``ciphertext`` departs from this layout, or ``None``."""
        found = {
            "scale": ciphertext.scale,
            "primes (level)": ciphertext.coeff_modulus_size(),
            "parms_id (level)": tuple(ciphertext.parms_id()),
            "ring degree": ciphertext.poly_modulus_degree(),
            "polynomials": ciphertext.size(),
            "NTT form": ciphertext.is_ntt_form(),
        }
        expected = {
            "scale": self.scale,
            "primes (level)": self.coeff_modulus_size,
            "parms_id (level)": self.parms_id,
            "ring degree": self.poly_modulus_degree,
            "polynomials": FRESH_POLYNOMIALS,
            "NTT form": True,
        }
        for name, value in found.items():
            if value != expected[name]:
                return f"{name} {_show(value)}, expected {_show(expected[name])}"
        return None


def load_ciphertext(
    context: ts.Context, blob: bytes, layout: CiphertextLayout, size: int | None, who: str
) -> ts.CKKSVector:
    """Deserialize one CKKS vector under ``context`` and check it against ``layout``.

    Parameters
    ----------
    context : tenseal.Context
        The party's context (public, or the key holder's).
    blob : bytes
        The serialized vector as received.
    layout : CiphertextLayout
        What a fresh encryption under ``context`` looks like.
    size : int or None
        Number of values it must hold (``None``: any).
    who : str
        Names the ciphertext in errors, e.g. ``"client 3: ciphertext 1"``.

    Returns
    -------
    tenseal.CKKSVector

    Raises
    ------
    MessageRejectedError
        Not a CKKS vector under ``context`` (TenSEAL's own error, wrapped), or one of another
        scale, level, ring degree, polynomial count or number of values.
    """
    try:
        vec = ts.ckks_vector_from(context, blob)
        parts = vec.ciphertext()
    except Exception as exc:  # TenSEAL raises ValueError, RuntimeError, TypeError, ...
        raise MessageRejectedError(f"{who} invalid: {exc}") from None
    if len(parts) != 1:
        raise MessageRejectedError(f"{who}: {len(parts)} SEAL ciphertexts, expected 1")
    problem = layout.mismatch(parts[0])
    if problem is not None:
        raise MessageRejectedError(f"{who}: {problem}")
    if size is not None and vec.size() != size:
        raise MessageRejectedError(f"{who} holds {vec.size()} values, expected {size}")
    return vec


def _show(value: Any) -> str:
    """A field's value for an error message (scales as powers of two)."""
    if isinstance(value, float) and value > 0 and float(value).is_integer():
        exponent = int(value).bit_length() - 1
        if 2.0**exponent == value:
            return f"2**{exponent}"
    return repr(value)
