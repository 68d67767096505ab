"""The ``[audit]`` section: the sizes of ``privfed audit``'s leakage measurement."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from privfed.config.validation import ConfigError, Range, Rule, check_rules

__all__ = ["FULL", "QUICK", "RULES", "AuditConfig", "AuditSizes"]


@dataclass(frozen=True)
class AuditSizes:
    """How much work each attack of an audit does.

    Attributes
    ----------
    num_reference : int
        Reference federations of the membership inference (LiRA), even and >= 2.
    inversion_examples : int
        One-example clients whose updates the gradient inversion attacks, >= 1.
    aggregate_clients : int
        Clients in the aggregate that the inversion of an aggregate attacks, >= 2.
    multi_step : int
        Local SGD steps of the multi-step update the inversion attacks, >= 1.
    num_canaries : int
        Canaries of the one-run epsilon audit, >= 1.
    one_shot_canaries : int
        Canary clients of the one-run user-level estimate (Andrew et al. 2024), >= 2.
    """

    num_reference: int
    inversion_examples: int
    aggregate_clients: int
    multi_step: int
    num_canaries: int
    one_shot_canaries: int


FULL = AuditSizes(num_reference=16, inversion_examples=8, aggregate_clients=10, multi_step=4,
                  num_canaries=200, one_shot_canaries=64)
"""The default audit."""
QUICK = AuditSizes(num_reference=4, inversion_examples=2, aggregate_clients=4, multi_step=2,
                   num_canaries=50, one_shot_canaries=16)
"""A smoke-test audit: a few seconds on the embedded data."""

RULES: dict[str, Rule] = {
    "num_reference": Range(2),
    "inversion_examples": Range(1),
    "aggregate_clients": Range(2),
    "multi_step": Range(1),
    "num_canaries": Range(1),
    "one_shot_canaries": Range(2),
    "confidence": Range(0, 1, low_open=True, high_open=True),
}
"""The rule of each field (None means "the size of the quick or full audit")."""


@dataclass(frozen=True)
class AuditConfig:
    """What ``privfed audit`` (``attacks.run_audit``) measures, and how hard it tries.

    Part of the config's hash, so a quick and a full audit of one federation have different
    identities (and neither is taken for the other).

    Attributes
    ----------
    quick : bool
        A small, fast audit: the sizes of :data:`QUICK` instead of :data:`FULL`.
    num_reference, inversion_examples, aggregate_clients, multi_step, num_canaries,
    one_shot_canaries : int or None
        Override one size of the quick or full audit (see :class:`AuditSizes` for their
        meaning and allowed values); None keeps it.
    confidence : float
        Confidence of the canary audit's epsilon lower bound, in (0, 1).
    """

    quick: bool = False
    num_reference: int | None = None
    inversion_examples: int | None = None
    aggregate_clients: int | None = None
    multi_step: int | None = None
    num_canaries: int | None = None
    one_shot_canaries: int | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check_rules("audit", self, RULES)
        if self.num_reference is not None and self.num_reference % 2:
            raise ConfigError(
                f"audit.num_reference must be even (each candidate is IN half of the reference "
                f"models), got {self.num_reference}"
            )

    def sizes(self) -> AuditSizes:
        """The sizes of this audit: :data:`QUICK` or :data:`FULL`, with the sizes set here."""
        base = QUICK if self.quick else FULL
        given = {f.name: getattr(self, f.name) for f in fields(AuditSizes)}
        return replace(base, **{k: v for k, v in given.items() if v is not None})
