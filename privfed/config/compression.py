"""The ``[compression]`` section and its rules with secure aggregation and privacy."""

from __future__ import annotations

from dataclasses import dataclass

from privfed.config.validation import ConfigError, OneOf, Range, Rule, check_rules

__all__ = ["BITS", "CompressionConfig", "METHODS", "RULES", "check_compatible"]

METHODS = ("none", "quantize", "topk", "randomk")
BITS = (1, 2, 4, 8)
"""The bit widths of ``privfed.compression.StochasticQuantizer``."""

RULES: dict[str, Rule] = {
    "method": OneOf(METHODS),
    "bits": OneOf(BITS),
    "block_size": Range(1),
    "density": Range(0, 1, low_open=True),
}
"""The rule of each field (None, where allowed, means "not set" and is not checked)."""


@dataclass(frozen=True)
class CompressionConfig:
    """Compression of the clients' updates; the default sends float32 uncompressed.

    Attributes
    ----------
    method : str
        "none"; "quantize" (unbiased stochastic quantisation to ``bits`` per coordinate);
        "topk" (the ``density`` largest-magnitude coordinates); "randomk" (``density`` of the
        coordinates, chosen from a seed shared by the round's clients and the server).
    bits : int
        "quantize": bits per coordinate, one of 1, 2, 4, 8.
    block_size : int or None
        "quantize": coordinates per float32 scale, >= 1; None = one scale per vector.
    density : float
        "topk", "randomk": fraction of coordinates sent, in (0, 1].
    rescale : bool
        "randomk": multiply the kept values by d/k (unbiased); false sends a plain projection
        (required with error feedback and with central DP).
    error_feedback : bool
        Clients keep what compression dropped and add it to their next update.
    """

    method: str = "none"
    bits: int = 8
    block_size: int | None = None
    density: float = 0.1
    rescale: bool = True
    error_feedback: bool = False

    def __post_init__(self) -> None:
        check_rules("compression", self, RULES)
        if self.error_feedback and self.method == "none":
            raise ConfigError(
                "compression.error_feedback needs a lossy compression.method; allowed: "
                f"{[m for m in METHODS if m != 'none']}"
            )
        if self.error_feedback and self.method == "randomk" and self.rescale:
            raise ConfigError(
                "compression.error_feedback with method 'randomk' needs compression.rescale = "
                "false (the d/k rescaling makes the residual d/k times the update)"
            )

    @property
    def preserves_norm_bound(self) -> bool:
        """Whether a decoded update is never longer than the update (a projection).

        True for "none", "topk" and non-rescaled "randomk" without error feedback; false for
        quantisation (rounding up to the scale), rescaled random-k and error feedback (the
        residual of earlier rounds is added).
        """
        projection = self.method in ("none", "topk") or (
            self.method == "randomk" and not self.rescale
        )
        return projection and not self.error_feedback


def check_compatible(
    compression: CompressionConfig, secure_kind: str, privacy_mechanism: str
) -> None:
    """Reject compression settings that break secure aggregation or the DP guarantee.

    Rules (see ``docs/communication.md``):

    * "he": no compression (CKKS ciphertexts are not compressible this way).
    * "masking": only "randomk" (every client sends the same index set, so the masked sum is
      the restriction of the sum). "topk" index sets differ between clients and would
      reveal which coordinates are large; "quantize" is redundant because masking already
      quantises into Z_(2^ring_bits): lower ``secure.ring_bits`` instead.
    * privacy "local": anything (compression after DP-SGD is post-processing).
    * privacy "central": only methods that never lengthen an update (the noise is calibrated
      to the clip norm of each client's contribution): "topk" or "randomk" with
      ``rescale = false``, without error feedback.
    * privacy "distributed": only "randomk" without error feedback (the restriction of the
      noised sum is post-processing; compressing each noise share separately is not).

    Raises
    ------
    ConfigError
        Naming the conflicting fields and what is supported.
    """
    method = compression.method
    if method == "none":
        return
    if secure_kind == "he":
        raise ConfigError(
            f"compression.method {method!r} cannot be combined with secure.kind 'he': CKKS "
            "ciphertexts carry the update; use compression.method 'none'"
        )
    if secure_kind == "masking" and method != "randomk":
        reason = (
            "top-k index sets differ between clients, so the masked sums would not line up "
            "and the indices would reveal each client's large coordinates"
            if method == "topk"
            else "masking already quantises into Z_(2^ring_bits); lower secure.ring_bits "
            "to send fewer bits per coordinate instead of quantising twice"
        )
        raise ConfigError(
            f"compression.method {method!r} cannot be combined with secure.kind 'masking': "
            f"{reason}; supported with masking: compression.method 'randomk' (shared seed)"
        )
    if privacy_mechanism in ("central", "ftrl") and not compression.preserves_norm_bound:
        raise ConfigError(
            f"compression.method {method!r} (error_feedback={compression.error_feedback}, "
            f"rescale={compression.rescale}) can make a client's update longer than "
            f"privacy.clip_norm, so central DP noise would no longer cover it; with privacy."
            f"mechanism {privacy_mechanism!r} use 'topk' or 'randomk' with "
            "compression.rescale = false, without compression.error_feedback"
        )
    if privacy_mechanism == "distributed" and (
        method != "randomk" or compression.error_feedback
    ):
        raise ConfigError(
            f"compression.method {method!r} (error_feedback={compression.error_feedback}) "
            "cannot be combined with privacy.mechanism 'distributed': compressing each "
            "client's noise share is not post-processing of the noised sum; use "
            "compression.method 'randomk' without compression.error_feedback"
        )
