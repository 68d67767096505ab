"""Per-round metrics of a training run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from privfed import jsonsafe

__all__ = ["RoundRecord", "History"]


@dataclass
class RoundRecord:
    """What happened in one round.

    Attributes
    ----------
    round : int
        1-based round number.
    clients : list of int
        Ids of the clients whose updates were aggregated.
    train_loss : float or None
        Sample-weighted mean of the clients' local training losses (None: no client).
    test_loss, test_accuracy : float or None
        Global model on the test set after the round (None where not evaluated).
    seconds : float
        Wall-clock time of the round, evaluation excluded.
    bytes_up, bytes_down : int
        Bytes sent client->server and server->client in the round, all clients together.
    federated : dict or None
        Federated evaluation after the round (None where not run): ``"pooled"`` metrics
        from the summed counts, ``"clients"`` (each client's, where the aggregation reveals
        them), ``"worst"`` (the client with the lowest accuracy and its metrics),
        ``"included"`` (the clients counted) and ``"skipped"`` (why the protocol released
        no sum, or None).
    extra : dict
        Further JSON-able per-round figures from plug-ins (privacy budget, timings...).
    """

    round: int
    clients: list[int]
    train_loss: float | None
    seconds: float
    bytes_up: int
    bytes_down: int
    test_loss: float | None = None
    test_accuracy: float | None = None
    federated: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class History:
    """The ordered list of :class:`RoundRecord` of one training run.

    Attributes
    ----------
    rounds : list of RoundRecord
    stop_reason : str or None
        Why training stopped before the planned rounds (e.g. the privacy budget was spent).
    """

    rounds: list[RoundRecord] = field(default_factory=list)
    stop_reason: str | None = None

    def append(self, record: RoundRecord) -> None:
        """Add the record of the round just finished."""
        self.rounds.append(record)

    def evaluated(self) -> list[RoundRecord]:
        """The rounds after which the global model was evaluated."""
        return [r for r in self.rounds if r.test_accuracy is not None]

    @property
    def final_accuracy(self) -> float | None:
        """Test accuracy at the last evaluation, or None if never evaluated."""
        evaluated = self.evaluated()
        return evaluated[-1].test_accuracy if evaluated else None

    def total(self, name: str) -> float:
        """Sum of a numeric field ("seconds", "bytes_up", "bytes_down") over all rounds."""
        return sum(getattr(r, name) for r in self.rounds)

    def without_participants(self) -> History:
        """A copy whose records list no client ids (``clients`` empty; the count is kept in
        ``extra["num_clients"]``) and no ``extra["epsilon_per_client"]`` (a function of each
        client's participation count): what user-level DP with client sampling may release,
        since amplification by sampling holds only while who took part stays secret."""
        records = [
            replace(r, clients=[], extra={
                **{k: v for k, v in r.extra.items() if k != "epsilon_per_client"},
                "num_clients": len(r.clients)})
            for r in self.rounds
        ]
        return History(records, self.stop_reason)

    def state_dict(self) -> dict[str, Any]:
        """The records as plain dicts and the stop reason, for a checkpoint."""
        return {"rounds": [asdict(r) for r in self.rounds], "stop_reason": self.stop_reason}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> History:
        """The history :meth:`state_dict` saved."""
        return cls([RoundRecord(**record) for record in state["rounds"]], state["stop_reason"])

    def write_jsonl(self, path: str | Path) -> None:
        """Write one strict JSON object per round to ``path``.

        NaN figures are written as null and infinities as ``"inf"``/``"-inf"``
        (:mod:`privfed.jsonsafe`).
        """
        with open(path, "w", encoding="utf-8") as out:
            for record in self.rounds:
                out.write(jsonsafe.dumps(asdict(record)) + "\n")

    @classmethod
    def read_jsonl(cls, path: str | Path) -> History:
        """Read a history written by :meth:`write_jsonl`.

        ``"inf"``/``"-inf"`` come back as floats; a NaN figure, written as null, as None.
        """
        with open(path, encoding="utf-8") as src:
            return cls([RoundRecord(**jsonsafe.loads(line)) for line in src if line.strip()])
