"""What each privacy unit has released, and the epsilon that costs, against one party.

Every mechanism parameter is public and fixed for the whole training (noise multiplier,
sampling rates, steps per round), so what a unit has spent is determined by how many
times it has released something: a :class:`ParticipationLedger` counts them. It only ever
grows (a record is never replaced by a shorter one), and with a budget it tells whether
the next participation would exceed it: ``privacy.epsilon`` is a cap, not a target that
a unit sampled more often than expected overshoots.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["ClientLedgerMixin", "ParticipationLedger", "RoundLedgerMixin",
           "planned_participations"]


class ParticipationLedger:
    """Per privacy unit, the number of releases so far and their epsilon.

    Parameters
    ----------
    num_units : int
        Units are ``0 .. num_units - 1`` (clients; or one unit for a per-round release that
        every client shares, e.g. user-level DP against an outsider).
    epsilon_after : callable
        ``k -> epsilon`` after ``k`` releases, from public parameters only; non-decreasing.
        Called at most once per distinct ``k``.
    budget : float or None
        The cap on every unit's epsilon; None: no cap (epsilon is only reported).
    """

    def __init__(
        self, num_units: int, epsilon_after: Callable[[int], float], budget: float | None = None
    ) -> None:
        if num_units < 1:
            raise ValueError(f"a ledger needs at least one unit, got {num_units}")
        self.counts = np.zeros(num_units, dtype=np.int64)
        self.budget = budget
        self._last_release = np.full(num_units, -1, dtype=np.int64)
        self._epsilon_after = functools.lru_cache(maxsize=None)(epsilon_after)
        self._epsilons: list[float] | None = None  # by unit, kept up to date once asked for

    def record(self, release_id: int, units: Iterable[int]) -> None:
        """``units`` released something in release ``release_id`` (a round, or a FedBuff
        job); recording the same release twice counts once."""
        for unit in units:
            if self._last_release[unit] != release_id:
                self._last_release[unit] = release_id
                self.counts[unit] += 1
                self._changed(unit)

    def merge(self, unit: int, count: int) -> None:
        """Adopt another party's record of ``unit`` if it is longer (never shrink)."""
        self.counts[unit] = max(int(self.counts[unit]), int(count))
        self._changed(unit)

    def _changed(self, unit: int) -> None:
        """Bring :meth:`epsilons`' entry of ``unit`` up to date with its count."""
        if self._epsilons is not None:
            self._epsilons[unit] = self.epsilon(unit)

    def epsilon(self, unit: int) -> float:
        """Epsilon ``unit`` has spent so far."""
        return self._epsilon_after(int(self.counts[unit]))

    def max_epsilon(self) -> float:
        """The largest epsilon any unit has spent (0 before any release)."""
        return self._epsilon_after(int(self.counts.max()))

    def epsilons(self) -> list[float]:
        """Every unit's epsilon, by unit id (a new list; kept up to date as units release,
        so a call costs a copy, not an epsilon per unit)."""
        if self._epsilons is None:
            self._epsilons = [self._epsilon_after(int(k)) for k in self.counts]
        return list(self._epsilons)

    def state_dict(self) -> dict[str, list[int]]:
        """Every unit's release count and the id of its last release, for a checkpoint."""
        return {"counts": self.counts.tolist(), "last_release": self._last_release.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises
        ------
        ValueError
            ``state`` is for another number of units, or a count is negative.
        """
        counts = np.asarray(state["counts"], dtype=np.int64)
        last = np.asarray(state["last_release"], dtype=np.int64)
        if counts.shape != self.counts.shape or last.shape != counts.shape:
            raise ValueError(f"ledger state for {counts.size} units, this ledger has "
                             f"{self.counts.size}")
        if (counts < 0).any():
            raise ValueError("ledger state has a negative release count")
        self.counts, self._last_release, self._epsilons = counts, last, None

    def affordable(self, unit: int) -> bool:
        """Whether one more release keeps ``unit`` within the budget (always without one)."""
        if self.budget is None:
            return True
        return self._epsilon_after(int(self.counts[unit]) + 1) <= self.budget


def planned_participations(releases: int, rate: float) -> int:
    """The participations noise is calibrated for when each of ``releases`` rounds takes a
    unit with probability ``rate``: the mean plus two standard deviations of
    Binomial(releases, rate), rounded up, at most ``releases``.

    A unit sampled more often than that stops contributing when its budget is spent
    (about 2% of units under the normal approximation); a plan for every round would add
    noise for a worst case that almost never happens.
    """
    if rate >= 1:
        return releases
    mean = releases * rate
    return min(releases, max(1, math.ceil(mean + 2 * math.sqrt(mean * (1 - rate)))))


class ClientLedgerMixin:
    """The participation hooks of a policy whose epsilon is per client.

    Mixed into :class:`~privfed.federated.policy.ParticipationPolicy` subclasses that set
    :attr:`client_spend` (their record of each client's releases to the server).
    """

    client_spend: ParticipationLedger

    def may_participate(self, client_id: int) -> bool:
        """Whether client ``client_id`` can afford one more release within the budget."""
        return self.client_spend.affordable(client_id)

    def round_allowed(self) -> bool:
        """Whether any client can still afford a release (and the base class allows it)."""
        fewest = int(np.argmin(self.client_spend.counts))
        return self.client_spend.affordable(fewest) and super().round_allowed()  # type: ignore[misc]

    def record_participation(self, release_id: int, client_ids: Iterable[int]) -> None:
        """Count one release for each of ``client_ids`` (idempotent per ``release_id``)."""
        self.client_spend.record(release_id, client_ids)

    def client_ledger(self, client_id: int) -> dict[str, int]:
        """``{"participations": k}``, the releases recorded for ``client_id``."""
        return {"participations": int(self.client_spend.counts[client_id])}

    def merge_client_ledger(self, client_id: int, ledger: Mapping[str, Any]) -> None:
        """Adopt ``ledger``'s count for ``client_id`` where it is larger (never shrinks)."""
        self.client_spend.merge(client_id, int(ledger.get("participations", 0)))

    def ledgers(self) -> dict[str, ParticipationLedger]:
        """The base policy's ledgers and :attr:`client_spend`."""
        return {**super().ledgers(), "client_spend": self.client_spend}  # type: ignore[misc]


class RoundLedgerMixin:
    """The participation hooks of a user-level policy whose epsilon counts every released
    round, one unit that all clients share.

    Mixed into :class:`~privfed.federated.policy.ParticipationPolicy` subclasses that set
    :attr:`rounds_spend` (a one-unit ledger whose budget caps the headline epsilon).
    """

    rounds_spend: ParticipationLedger

    @property
    def releases_statistics(self) -> bool:
        """False: a client's training loss and record count are not protected."""
        return False

    def ledgers(self) -> dict[str, ParticipationLedger]:
        """:attr:`rounds_spend`, the rounds released."""
        return {"rounds_spend": self.rounds_spend}

    def round_allowed(self) -> bool:
        """Whether one more round keeps the rounds' epsilon within the budget."""
        return self.rounds_spend.affordable(0)

    def record_release(self, round_id: int) -> None:
        """Count round ``round_id`` (with or without clients, discarded or not) once."""
        self.rounds_spend.record(round_id, [0])
