"""Which SuperNode is which privfed client, and the clients' public verification keys."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from privfed.secure import IdentityRegistry
from privfed.secure.errors import MessageRejectedError

__all__ = ["NodeDirectory", "pack_registry", "unpack_registry"]

_ENTRY = struct.Struct("<I32s")


def pack_registry(registry: IdentityRegistry) -> bytes:
    """``client id (uint32) + raw Ed25519 key (32 bytes)`` per client, by id."""
    return b"".join(_ENTRY.pack(cid, registry.keys[cid]) for cid in sorted(registry.keys))


def unpack_registry(data: bytes) -> IdentityRegistry:
    """Inverse of :func:`pack_registry`.

    Raises
    ------
    MessageRejectedError
        When ``data`` is not a whole number of entries.
    """
    if len(data) % _ENTRY.size:
        raise MessageRejectedError(
            f"key registry of {len(data)} bytes is not a multiple of {_ENTRY.size}"
        )
    return IdentityRegistry.from_mapping(dict(_ENTRY.iter_unpack(data)))


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
