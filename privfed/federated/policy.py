"""The participation policy: who may release an update, and what releasing costs.

A privacy mechanism's accounting enters the round here (and nowhere else): whether a client
can afford another release within its budget, the fewest clients a released sum must hold,
whether a client's training statistics may be reported, and the epsilon spent so far. The
base class is plain FedAvg: everyone may always take part and nothing is accounted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

__all__ = ["Ledger", "ParticipationPolicy"]


class Ledger(Protocol):
    """A record of releases a policy keeps (e.g.
    :class:`privfed.privacy.ledger.ParticipationLedger`)."""

    def state_dict(self) -> dict[str, Any]:
        """The record, for a checkpoint."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


class ParticipationPolicy:
    """Plain FedAvg: no budget, no accounting; subclasses override what they change."""

    @property
    def releases_statistics(self) -> bool:
        """Whether clients report their training loss and sample count to the server.

        Both are computed from private data without noise, so a mechanism that protects
        the data does not release them."""
        return True

    @property
    def releases_exact_diagnostics(self) -> bool:
        """Whether clients report exact diagnostics of their training (DP-SGD's count of
        clipped examples): as :attr:`releases_statistics` unless a mechanism's
        ``privacy.diagnostics = "exact"`` asks for them despite the privacy they cost."""
        return self.releases_statistics

    @property
    def min_cohort(self) -> int:
        """The fewest clients a round's aggregate may hold; smaller cohorts are skipped."""
        return 1

    def may_participate(self, client_id: int) -> bool:
        """Whether client ``client_id`` may release another update (e.g. its budget)."""
        return True

    def round_allowed(self) -> bool:
        """Whether another round may be released (e.g. a per-round privacy budget)."""
        return True

    def record_participation(self, release_id: int, client_ids: Iterable[int]) -> None:
        """``client_ids`` were asked to release an update in ``release_id`` (a round, or a
        FedBuff job); called by the server before they train, and by each client for
        itself. Recording the same release twice counts once."""

    def record_release(self, round_id: int) -> None:
        """The server released round ``round_id``'s aggregate (also an empty one)."""

    def client_ledger(self, client_id: int) -> dict[str, Any]:
        """Client ``client_id``'s privacy record (JSON-able); the server sends its record to
        the client with each request, and a client keeps its own between rounds."""
        return {}

    def merge_client_ledger(self, client_id: int, ledger: Mapping[str, Any]) -> None:
        """Adopt another party's record of ``client_id`` where it is longer (never shrinks)."""

    def metrics(self) -> dict[str, Any]:
        """JSON-able figures for the round's record (e.g. epsilon spent so far)."""
        return {}

    def ledgers(self) -> dict[str, Ledger]:
        """The policy's records of what each privacy unit released, by name: all the state
        its epsilon and budgets depend on (the mechanism parameters are fixed)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Every ledger's state (:meth:`ledgers`), for a checkpoint."""
        return {name: ledger.state_dict() for name, ledger in self.ledgers().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output: the epsilon spent and every budget decision
        continue from it.

        Raises
        ------
        ValueError
            ``state`` names other ledgers than this policy keeps.
        """
        ledgers = self.ledgers()
        if set(state) != set(ledgers):
            raise ValueError(f"privacy ledger state has {sorted(state)}, this policy keeps "
                             f"{sorted(ledgers)}")
        for name, ledger in ledgers.items():
            ledger.load_state_dict(state[name])
