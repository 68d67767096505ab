"""Parameters of the masking protocol and the SecAgg+ neighbourhood graph."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection
from dataclasses import dataclass

from privfed.secure.errors import InvalidInputError, ThresholdError
from privfed.secure.validation import check_clip, check_out_of_range

from .quantize import MAX_BITS, MIN_BITS


def default_threshold(group_size: int) -> int:
    """Default Shamir threshold ``max(2, floor(2 * group_size / 3) + 1)``.

    Strictly more than two thirds of the group: Bonawitz et al. (CCS 2017, Thm. 6.5) show
    that ``t > 2n/3`` keeps inputs private against a server that lies about dropouts
    and colludes with fewer than ``n/3`` clients, while tolerating up to ``n - t`` (just
    under a third) dropouts.
    """
    return max(2, (2 * group_size) // 3 + 1)


@dataclass(frozen=True)
class MaskingParams:
    """Configuration of :class:`~privfed.secure.masking.MaskingAggregator`.

    Parameters
    ----------
    ring_bits : int
        Masks and sums live in ``Z_{2^ring_bits}`` (default 32: 4 bytes per parameter).
    clip : float
        Max |value| per coordinate; fixes the fixed-point step.
    out_of_range : {"clip", "error"}
        Clip coordinates beyond ``clip``, or reject the vector (default).
    threshold : int or None
        Shamir threshold ``t`` per group (the whole round, or one SecAgg+ neighbourhood);
        ``None`` uses :func:`default_threshold` of the group size.
    neighbourhood : "full" or int
        ``"full"``: every pair of clients shares a mask (Bonawitz et al. 2017, O(n^2)).
        An even int ``k``: SecAgg+ (Bell et al. 2020) with a random k-regular graph; choose
        ``k`` ~ O(log n) for O(n log n) total cost.
    min_clients : int
        The fewest clients whose inputs a decodable sum may hold (>= 2). Each client raises
        its threshold to at least this (within its sharing group) and refuses to reveal
        shares for fewer surviving inputs, so a server that follows the protocol never
        decodes a smaller sum; e.g. distributed DP's K_min, so that every decodable sum
        carries enough noise shares. Enforced by the clients from their own parameters, not
        from anything the server sends.
    """

    ring_bits: int = 32
    clip: float = 10.0
    out_of_range: str = "error"
    threshold: int | None = None
    neighbourhood: str | int = "full"
    min_clients: int = 2

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
        if nb != "full" and (
            isinstance(nb, bool) or not isinstance(nb, int) or nb < 2 or nb % 2
        ):
            raise InvalidInputError(
                f"neighbourhood={nb!r}; allowed: 'full' or an even int >= 2 (SecAgg+ degree)"
            )
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 2):
            raise InvalidInputError(f"threshold={t!r}; allowed: None or an int >= 2")
        m = self.min_clients
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise InvalidInputError(f"min_clients={m!r}; allowed: an int >= 2")

    def group_size(self, participants: int) -> int:
        """Size of a sharing group: all participants, or a neighbourhood plus its owner."""
        if self.neighbourhood == "full":
            return participants
        return min(participants, int(self.neighbourhood) + 1)

    def threshold_for(self, participants: int) -> int:
        """Threshold ``t`` for a round announced with ``participants`` clients.

        Raises
        ------
        InvalidInputError
            If ``t`` exceeds the group size.
        ThresholdError
            With fewer than ``min_clients`` participants (at least 2: a sum of one client
            would be its input).
        """
        if participants < self.min_clients:
            raise ThresholdError(
                f"masking needs at least {self.min_clients} clients (min_clients), got "
                f"{participants}"
            )
        size = self.group_size(participants)
        t = self.threshold if self.threshold is not None else default_threshold(size)
        t = max(t, min(self.min_clients, size))
        if t > size:
            raise InvalidInputError(
                f"threshold={t} exceeds the sharing group size {size} ({participants} clients, "
                f"neighbourhood={self.neighbourhood!r})"
            )
        return t


def neighbours(
    ids: Collection[int], round_id: int, neighbourhood: str | int
) -> dict[int, frozenset[int]]:
    """Who shares masks with whom among the advertised clients ``ids``.

    ``"full"``: everyone with everyone. Even ``k``: a k-regular Harary graph over a
    pseudo-random cyclic order of the clients (each linked to ``k/2`` on each side), the order
    derived from SHA-256 of the round and ids so that every party computes the same graph.
    """
    order = sorted(ids)
    if neighbourhood == "full" or int(neighbourhood) >= len(order) - 1:
        everyone = frozenset(order)
        return {c: everyone - {c} for c in order}
    half = int(neighbourhood) // 2
    order.sort(key=lambda c: hashlib.sha256(struct.pack("<QI", round_id, c)).digest())
    n = len(order)
    return {
        c: frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d)
        for i, c in enumerate(order)
    }
