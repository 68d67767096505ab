"""Which SuperNode is which privfed client, and the clients' public verification keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from privfed.secure import IdentityRegistry
from privfed.secure.identity import pack_registry, unpack_registry

__all__ = ["NodeDirectory", "pack_registry", "unpack_registry"]


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
        return {node: cid for cid, node in self.node_of.items()}

    def add(self, node_id: int, cid: int, weight: float, verify_key: bytes) -> None:
        """Register node ``node_id`` as client ``cid``.

        Raises
        ------
        ValueError
            When another node already registered as client ``cid``.
        """
        if cid in self.node_of and self.node_of[cid] != node_id:
            raise ValueError(
                f"two SuperNodes ({self.node_of[cid]} and {node_id}) have partition-id={cid}; "
                "give every SuperNode its own --node-config partition-id"
            )
        self.node_of[cid] = node_id
        self.weight[cid] = weight
        self.registry.keys[cid] = verify_key
