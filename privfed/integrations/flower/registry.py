"""Which SuperNode is which privfed client, and the clients' public verification keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from privfed.secure import IdentityRegistry

__all__ = ["NodeDirectory"]


@dataclass
class NodeDirectory:
    """The registered SuperNodes of a run.

    Attributes
    ----------
    node_of : dict of int to int
        privfed client id -> Flower node id.
    weight : dict of int to float
        privfed client id -> its aggregation weight (plain FedAvg: its number of training
        records; under DP: 1, the count being private).
    registry : IdentityRegistry
        The clients' Ed25519 verification keys.
    """

    node_of: dict[int, int] = field(default_factory=dict)
    weight: dict[int, float] = field(default_factory=dict)
    registry: IdentityRegistry = field(default_factory=IdentityRegistry)

    @property
    def cid_of(self) -> dict[int, int]:
        """Flower node id -> privfed client id."""
        return {node: client_id for client_id, node in self.node_of.items()}

    def add(self, node_id: int, client_id: int, weight: float, verify_key: bytes) -> None:
        """Register node ``node_id`` as client ``client_id``.

        Raises
        ------
        ValueError
            When another node already registered as client ``client_id``.
        """
        if client_id in self.node_of and self.node_of[client_id] != node_id:
            raise ValueError(
                f"two SuperNodes ({self.node_of[client_id]} and {node_id}) have "
                f"partition-id={client_id}; give every SuperNode its own --node-config partition-id"
            )
        self.node_of[client_id] = node_id
        self.weight[client_id] = weight
        self.registry.keys[client_id] = verify_key
