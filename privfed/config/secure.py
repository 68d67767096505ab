"""The ``[secure]`` section: secure aggregation, what the server can read of each update."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privfed.config.validation import ConfigError, OneOf, Range, Rule, check_rules

__all__ = ["HE_MAX_COEFF_BITS", "RULES", "SECURE_KINDS", "SERVER_MODELS", "SecureConfig",
           "he_max_abs"]

SECURE_KINDS = ("none", "he", "masking")
"""The aggregators of ``privfed.secure.AGGREGATORS``."""
SERVER_MODELS = ("malicious", "honest-but-curious")
"""The server models of ``privfed.secure.wire.SERVER_MODELS``."""
HE_MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""CKKS ring degree -> largest total coefficient modulus (bits) for 128-bit security
(HomomorphicEncryption.org), as ``privfed.secure.HEParams`` enforces it."""
_PRIME_BITS = Range(20, 60)

RULES: dict[str, Rule] = {
    "kind": OneOf(SECURE_KINDS),
    "clip": Range(0, low_open=True),
    "out_of_range": OneOf(("error", "clip")),
    "ring_bits": Range(8, 62),
    "threshold": Range(2),
    "cohort_size": Range(1),
    "corrupt_fraction": Range(0, 0.5, high_open=True),
    "dropout_fraction": Range(0, 1, high_open=True),
    "security_bits": Range(1),
    "server_model": OneOf(SERVER_MODELS),
    "poly_modulus_degree": OneOf(tuple(HE_MAX_COEFF_BITS)),
}
"""The rule of each field with a range or a set of values (None, where allowed, means
"not set" and is not checked); ``neighbourhood_degree``, ``coeff_mod_bit_sizes`` and
``scale_bits`` have rules of their own."""


@dataclass(frozen=True)
class SecureConfig:
    """Secure aggregation: what the server can read of the clients' updates.

    Attributes
    ----------
    kind : str
        "none" (float32 in the clear), "he" (TenSEAL CKKS: the server adds ciphertexts) or
        "masking" (Bonawitz et al. 2017 pairwise masks with dropout recovery).
    clip : float or None
        Largest |value| per coordinate a client may send, > 0 and finite ("he": at most
        :func:`he_max_abs`); None: "masking" uses 10.0, the others check only what their
        encoding can represent.
    out_of_range : str
        "error" (reject the update; the default, nothing is changed silently) or "clip".
    ring_bits : int
        "masking": masked sums live in Z_(2^ring_bits); 8..62, with room for the sum of the
        largest round's clients.
    threshold : int or None
        "masking": Shamir threshold t >= 2, fixed before the round (None: derived from the
        cohort size and the threat model, about 2/3 of the group). A t the threat model
        does not allow is refused.
    neighbourhood_degree : int, "secagg+", "full" or None
        "masking": "full" for the complete graph (O(n^2)); "secagg+" for SecAgg+ with the
        smallest degree that meets the threat model; an even k >= 2 for that degree
        (refused if it does not meet the threat model). None (the default): "full" for a
        planned cohort of up to 200 clients, "secagg+" above
        (``privfed.secure.masking.FULL_GRAPH_MAX_COHORT``; up to 200 the complete graph
        costs at most 0.1 s per client and 0.5 s of server time per round at 1e5
        parameters and has no failure probability; at 500 it costs 0.2 s and 2.2 s against
        SecAgg+'s 0.08 s and 1.1 s; docs/secure.md). The choice enters the run's identity
        (:meth:`~privfed.config.ExperimentConfig.short_hash`).
    cohort_size : int or None
        "masking": the clients a round is planned for (>= 1), which t and k are derived for
        (None: the clients per round, or FedBuff's buffer size).
    corrupt_fraction : float
        "masking": fraction of a round's clients that may collude with the server, in
        [0, 0.5).
    dropout_fraction : float
        "masking": fraction of a round's clients that may drop out, in [0, 1).
    security_bits : int
        "masking": the parameters keep inputs private except with probability
        2^-security_bits; >= 1.
    server_model : str
        "malicious" (the default; masking: a signed consistency round before any share is
        revealed; HE: the key holder decrypts only the verified sum of the round's signed
        uploads, which it then holds) or "honest-but-curious" (masking skips that round;
        the HE key holder gets the aggregate only and trusts the server's framing).
    poly_modulus_degree : int
        "he": CKKS ring degree, one of 4096, 8192, 16384, 32768 (8192: 4096 values per
        ciphertext, 128-bit secure).
    coeff_mod_bit_sizes : list of int
        "he": CKKS coefficient moduli: at least two primes of 20..60 bits, totalling at most
        ``HE_MAX_COEFF_BITS[poly_modulus_degree]`` bits; [60, 40] is the cheapest secure
        choice for addition.
    scale_bits : int
        "he": fixed-point precision of the encoding, 20..(first prime's bits - 10).
    """

    kind: str = "none"
    clip: float | None = None
    out_of_range: str = "error"
    ring_bits: int = 32
    threshold: int | None = None
    neighbourhood_degree: int | str | None = None
    cohort_size: int | None = None
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    security_bits: int = 40
    server_model: str = "malicious"
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: list[int] = field(default_factory=lambda: [60, 40])
    scale_bits: int = 40

    def __post_init__(self) -> None:
        check_rules("secure", self, RULES)
        _check_degree(self.neighbourhood_degree)
        self._check_ckks()
        if self.kind == "he" and self.clip is not None and self.clip > he_max_abs(self):
            raise ConfigError(
                f"secure.clip ({self.clip:g}) exceeds what CKKS can sum without wrapping "
                f"around, 2**(coeff_mod_bit_sizes[0] - scale_bits - 2) = {he_max_abs(self):g}; "
                "lower secure.clip or raise the first prime / lower secure.scale_bits"
            )

    def _check_ckks(self) -> None:
        bits, budget = self.coeff_mod_bit_sizes, HE_MAX_COEFF_BITS[self.poly_modulus_degree]
        if len(bits) < 2:
            raise ConfigError(f"secure.coeff_mod_bit_sizes must hold at least 2 primes, got "
                              f"{bits}")
        for i, prime in enumerate(bits):
            _PRIME_BITS.check(f"secure.coeff_mod_bit_sizes[{i}]", prime)
        if sum(bits) > budget:
            raise ConfigError(
                f"secure.coeff_mod_bit_sizes must total at most {budget} bits for 128-bit "
                f"security at secure.poly_modulus_degree {self.poly_modulus_degree}, got "
                f"{bits} ({sum(bits)} bits)"
            )
        high = bits[0] - 10
        if not 20 <= self.scale_bits <= high:
            raise ConfigError(
                f"secure.scale_bits must be in [20, {high}] (secure.coeff_mod_bit_sizes[0] = "
                f"{bits[0]} bits minus 10 of integer head-room), got {self.scale_bits!r}"
            )

    def aggregator_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`privfed.secure.make_aggregator` for :attr:`kind`."""
        common: dict[str, Any] = {"out_of_range": self.out_of_range}
        if self.clip is not None:
            common["clip"] = self.clip
        if self.kind == "masking":
            return {
                **common,
                "ring_bits": self.ring_bits,
                "threshold": self.threshold,
                "neighbourhood": self.neighbourhood_degree or "auto",
                "cohort_size": self.cohort_size,
                "corrupt_fraction": self.corrupt_fraction,
                "dropout_fraction": self.dropout_fraction,
                "security_bits": self.security_bits,
                "server_model": self.server_model,
            }
        if self.kind == "he":
            return {
                **common,
                "poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": tuple(self.coeff_mod_bit_sizes),
                "scale_bits": self.scale_bits,
                "server_model": self.server_model,
            }
        return common


def he_max_abs(secure: SecureConfig) -> float:
    """Largest |value| a client may encrypt under ``secure``'s CKKS parameters so that the
    sum does not wrap around: ``2**(coeff_mod_bit_sizes[0] - scale_bits - 2)``."""
    return float(2 ** (secure.coeff_mod_bit_sizes[0] - secure.scale_bits - 2))


def _check_degree(degree: int | str | None) -> None:
    if degree is None or degree in ("full", "secagg+"):
        return
    if isinstance(degree, str | bool) or degree < 2 or degree % 2:
        raise ConfigError(
            f"secure.neighbourhood_degree: {degree!r} is not allowed; allowed: 'full', "
            "'secagg+' or an even int >= 2 (the SecAgg+ degree k), or unset for the default "
            "('full' up to 200 clients per round, 'secagg+' above)"
        )
