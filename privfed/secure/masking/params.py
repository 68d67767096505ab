"""Parameters of the masking protocol and the SecAgg+ neighbourhood graph.

The threshold ``t`` and the SecAgg+ degree ``k`` are fixed before the round from the
configuration every party holds (:class:`MaskingParams`, with the planned ``cohort_size``),
never from a server message: :meth:`MaskingParams.for_view` turns the number of *signed*
adverts a party actually received into the round's parameters, and a server can only raise
them by showing more signed adverts, never lower them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection
from dataclasses import dataclass, replace

from privfed.secure.errors import InvalidInputError, ThresholdError
from privfed.secure.validation import check_clip, check_out_of_range
from privfed.secure.wire import SERVER_MODELS

from .quantize import MAX_BITS, MIN_BITS
from .security import RoundParameters, ThreatModel, round_parameters

NEIGHBOURHOODS = ("auto", "full", "secagg+")
"""The named values of :attr:`MaskingParams.neighbourhood` (besides an even degree)."""
FULL_GRAPH_MAX_COHORT = 200
"""Largest planned cohort for which ``neighbourhood="auto"`` (the default) picks the complete
graph; larger cohorts get SecAgg+. Measured at 1e5 parameters (``benchmarks/secure_agg.py
--scaling``, table in docs/secure.md): up to 200 clients the complete graph keeps a round
within 0.1 s per client and 0.5 s of server time and its privacy does not rest on a random
graph; at 500 it takes 0.2 s per client and 2.2 s of server time, SecAgg+ 0.08 s and 1.1 s."""


def default_neighbourhood(cohort_size: int) -> str:
    """What ``neighbourhood="auto"`` means for a planned cohort of ``cohort_size`` clients.

    ``"full"`` up to :data:`FULL_GRAPH_MAX_COHORT` clients (no failure probability, no
    assumption on how the corrupt and dropped clients fall on the graph), ``"secagg+"``
    above (its degree and threshold meet the threat model's ``2**-security_bits``).
    """
    return "full" if cohort_size <= FULL_GRAPH_MAX_COHORT else "secagg+"


def default_threshold(group_size: int) -> int:
    """Default Shamir threshold ``max(2, floor(2 * group_size / 3) + 1)``.

    Strictly more than two thirds of the group: with the consistency round, a server that
    lies about dropouts and colludes with ``c`` clients gets both shares of a client only if
    ``2t <= n + c`` (Bonawitz et al. CCS 2017, Sec. 4 and Thm. 6.5), so this ``t`` holds for
    ``c < n/3`` while tolerating up to ``n - t`` (just under a third) dropouts.
    """
    return max(2, (2 * group_size) // 3 + 1)


@dataclass(frozen=True)
class MaskingParams:
    """Configuration of the masking protocol, held by every party before the round.

    Parameters
    ----------
    ring_bits : int
        Masks and sums live in ``Z_{2^ring_bits}`` (default 32: 4 bytes per parameter).
    clip : float
        Max |value| per coordinate; fixes the fixed-point step.
    out_of_range : {"clip", "error"}
        Clip coordinates beyond ``clip``, or reject the vector (default).
    threshold : int or None
        Shamir threshold ``t`` per sharing group (the whole round, or one SecAgg+
        neighbourhood). ``None``: derived from ``cohort_size`` and the threat model (see
        :func:`~privfed.secure.masking.security.round_parameters`). An explicit ``t`` below
        what the threat model needs is refused.
    neighbourhood : "auto", "full", "secagg+" or int
        ``"auto"`` (default): :func:`default_neighbourhood` of the planned cohort
        (``max(cohort_size, min_clients)``, fixed before the round): ``"full"`` up to
        :data:`FULL_GRAPH_MAX_COHORT` clients, ``"secagg+"`` above.
        ``"full"``: every pair of clients shares a mask (Bonawitz et al. 2017, O(n^2)).
        ``"secagg+"``: SecAgg+ (Bell et al. CCS 2020) with the smallest even degree ``k``
        that meets the threat model (the complete graph when none below ``n - 1`` does).
        An even int ``k``: that degree, refused if it does not meet the threat model.
    min_clients : int
        The fewest clients whose inputs a decodable sum may hold (>= 2); e.g. distributed
        DP's K_min. ``t`` is at least this (within its group) and a client refuses to
        reveal shares for fewer surviving inputs.
    cohort_size : int or None
        ``n``, the clients a round is planned for, fixed before the round (e.g. the
        configuration's clients per round). ``t`` and ``k`` are derived for it (or for
        ``min_clients``, if larger: no smaller sum is ever decoded). ``None``:
        set per round by the in-process driver (:class:`MaskingAggregator`), which plays
        every party; the party objects require it.
    corrupt_fraction : float
        ``gamma``: fraction of the cohort that may collude with the server, in ``[0, 1/2)``.
    dropout_fraction : float
        ``delta``: fraction of the cohort that may drop out and still leave the round
        decodable, in ``[0, 1)``.
    security_bits : int
        ``sigma``: the parameters must keep every input private except with probability
        ``2**-sigma``.
    server_model : {"malicious", "honest-but-curious"}
        Against which server: ``"malicious"`` runs the signed consistency round before
        any share is revealed; ``"honest-but-curious"`` skips it.
    """

    ring_bits: int = 32
    clip: float = 10.0
    out_of_range: str = "error"
    threshold: int | None = None
    neighbourhood: str | int = "auto"
    min_clients: int = 2
    cohort_size: int | None = None
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    security_bits: int = 40
    server_model: str = "malicious"

    def __post_init__(self) -> None:
        if isinstance(self.ring_bits, bool) or not isinstance(self.ring_bits, int) or not (
            MIN_BITS <= self.ring_bits <= MAX_BITS
        ):
            raise InvalidInputError(
                f"ring_bits={self.ring_bits!r}; allowed: an int in {MIN_BITS}..{MAX_BITS}"
            )
        check_clip(self.clip, required=True)
        check_out_of_range(self.out_of_range)
        nb = self.neighbourhood
        if nb not in NEIGHBOURHOODS and (
            isinstance(nb, bool) or not isinstance(nb, int) or nb < 2 or nb % 2
        ):
            raise InvalidInputError(
                f"neighbourhood={nb!r}; allowed: 'full', 'secagg+' or an even int >= 2 "
                f"(SecAgg+ degree), or 'auto' (the default: 'full' up to "
                f"{FULL_GRAPH_MAX_COHORT} clients, 'secagg+' above)"
            )
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 2):
            raise InvalidInputError(f"threshold={t!r}; allowed: None or an int >= 2")
        m = self.min_clients
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise InvalidInputError(f"min_clients={m!r}; allowed: an int >= 2")
        n = self.cohort_size
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidInputError(f"cohort_size={n!r}; allowed: None or an int >= 1")
        if self.server_model not in SERVER_MODELS:
            raise InvalidInputError(
                f"server_model={self.server_model!r}; allowed: {SERVER_MODELS}"
            )
        _ = self.threat_model  # validates the fractions and security_bits
        if n is not None:
            self.planned()  # refuse a threshold or degree below the threat model now

    @property
    def threat_model(self) -> ThreatModel:
        """The adversary the parameters are derived for."""
        return ThreatModel(corrupt_fraction=self.corrupt_fraction,
                           dropout_fraction=self.dropout_fraction,
                           security_bits=self.security_bits)

    @property
    def consistency_round(self) -> bool:
        """Whether survivors sign the survivor set before any share is revealed."""
        return self.server_model == "malicious"

    def for_cohort(self, cohort_size: int) -> MaskingParams:
        """These parameters with ``cohort_size`` fixed (what the in-process driver does)."""
        return replace(self, cohort_size=cohort_size)

    def planned(self) -> RoundParameters:
        """``t`` and ``k`` for the planned ``cohort_size``.

        Raises
        ------
        InvalidInputError
            ``cohort_size`` unset, or a threshold/degree the threat model refuses.
        ThresholdError
            ``cohort_size`` below ``min_clients``.
        """
        if self.cohort_size is None:
            raise InvalidInputError(
                "MaskingParams.cohort_size must be fixed before the round (the clients a "
                "round is planned for); the threshold is never taken from the server"
            )
        return self._derive(max(self.cohort_size, self.min_clients), self.threshold,
                            self.min_clients)

    def for_view(self, advertised: int) -> RoundParameters:
        """The round's ``t`` and ``k`` for a party that holds ``advertised`` signed adverts.

        The planned parameters, unless the round has more clients than planned: then those
        of the larger cohort, with ``t`` never below the planned one.

        Raises
        ------
        ThresholdError
            Fewer signed adverts than the planned threshold ``t`` (or than ``min_clients``);
            under SecAgg+, fewer than the ``n - floor(dropout_fraction * n)`` the degree was
            derived for; or more than planned, with a configured degree that is not safe for
            that many.
        """
        planned = self.planned()
        if advertised < max(planned.threshold, self.min_clients):
            raise ThresholdError(
                f"{advertised} signed adverts reached this party, fewer than the threshold "
                f"t={planned.threshold} fixed by the configuration (cohort_size="
                f"{planned.cohort_size}, min_clients={self.min_clients}); aborting the round"
            )
        fewest = planned.cohort_size - self.threat_model.dropped_clients(planned.cohort_size)
        if not planned.complete and advertised < fewest:
            raise ThresholdError(
                f"{advertised} signed adverts reached this party, fewer than the {fewest} "
                f"that SecAgg+'s degree k={planned.degree} was derived for (cohort_size="
                f"{planned.cohort_size}, dropout_fraction={self.dropout_fraction}); a server "
                "that hides adverts could choose a client's neighbours; aborting the round"
            )
        if advertised <= planned.cohort_size:
            return planned
        floor = max(self.min_clients, planned.threshold)
        try:
            return self._derive(advertised, None, floor)
        except InvalidInputError as err:
            raise ThresholdError(
                f"{advertised} signed adverts, more than the planned cohort_size="
                f"{planned.cohort_size}, and the configuration is not safe for them: {err}"
            ) from None

    @property
    def graph(self) -> str | int:
        """``neighbourhood`` with ``"auto"`` resolved for the planned cohort.

        Raises
        ------
        InvalidInputError
            ``"auto"`` with ``cohort_size`` unset.
        """
        if self.neighbourhood != "auto":
            return self.neighbourhood
        if self.cohort_size is None:
            raise InvalidInputError(
                "neighbourhood='auto' needs MaskingParams.cohort_size (the graph is chosen "
                "for the planned cohort before the round)"
            )
        return default_neighbourhood(max(self.cohort_size, self.min_clients))

    def _derive(self, n: int, threshold: int | None, min_clients: int) -> RoundParameters:
        if n < self.min_clients:
            raise ThresholdError(
                f"masking needs at least {self.min_clients} clients (min_clients), got {n}"
            )
        graph = self.graph
        degree = None if graph == "full" else graph
        return round_parameters(n, self.threat_model, degree=degree, threshold=threshold,
                                min_clients=min_clients)


def neighbours(
    ids: Collection[int], round_id: int, degree: int | str
) -> dict[int, frozenset[int]]:
    """Who shares masks with whom among the advertised clients ``ids``.

    ``"full"`` or ``degree >= len(ids) - 1``: everyone with everyone. Even ``degree``: a
    k-regular Harary graph over a pseudo-random cyclic order of the clients (each linked to
    ``k/2`` on each side), the order derived from SHA-256 of the round and ids so that every
    party computes the same graph.
    """
    order = sorted(ids)
    if degree == "full" or int(degree) >= len(order) - 1:
        everyone = frozenset(order)
        return {c: everyone - {c} for c in order}
    half = int(degree) // 2
    order.sort(key=lambda c: hashlib.sha256(struct.pack("<QI", round_id, c)).digest())
    n = len(order)
    return {
        c: frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d)
        for i, c in enumerate(order)
    }
