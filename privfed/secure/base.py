"""The interface shared by all aggregators and the per-round result."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .identity import ClientIdentity, IdentityRegistry
from .validation import (
    check_clip,
    check_dropouts,
    check_out_of_range,
    check_round_id,
    check_round_inputs,
)

ServerHook = Callable[[int, str, bytes], None]


@dataclass(frozen=True)
class DecodedAggregate:
    """What the key holders learn: the weighted mean of the included clients.

    Attributes
    ----------
    mean : np.ndarray
        Weighted mean (float64) over ``included``.
    total_weight : float
        Sum of the included clients' weights.
    included : tuple of int
        Clients whose inputs are in the sum.
    """

    mean: np.ndarray
    total_weight: float
    included: tuple[int, ...]


@dataclass(frozen=True)
class AggregationResult:
    """Outcome and cost of one aggregation round.

    Attributes
    ----------
    mean : np.ndarray
        Weighted mean (float64) of the included clients' vectors.
    total_weight : float
        Sum of the included clients' weights.
    included : tuple of int
        Clients whose inputs are in the mean.
    dropped : tuple of int
        Clients of the round whose inputs are not.
    bytes_up : dict of int to int
        Bytes each client sent to the server, all stages.
    bytes_down : dict of int to int
        Bytes the server sent each client, broadcast key material included.
    seconds : dict of str to float
        ``"encode"`` (client time summed over clients), ``"aggregate"`` (server time),
        ``"decode"`` (one key holder's decoding time).
    """

    mean: np.ndarray
    total_weight: float
    included: tuple[int, ...]
    dropped: tuple[int, ...]
    bytes_up: dict[int, int]
    bytes_down: dict[int, int]
    seconds: dict[str, float]


class RoundMeter:
    """Records every message's size and the time spent by each role during one round."""

    def __init__(self, ids: Collection[int], hook: ServerHook | None) -> None:
        self._hook = hook
        self.bytes_up: dict[int, int] = dict.fromkeys(ids, 0)
        self.bytes_down: dict[int, int] = dict.fromkeys(ids, 0)
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def up(self, client_id: int, stage: str, data: bytes) -> bytes:
        """Record a client-to-server message, notify the hook, and return it unchanged."""
        self.bytes_up[client_id] += len(data)
        if self._hook is not None:
            self._hook(client_id, stage, data)
        return data

    def down(self, client_id: int, data: bytes) -> bytes:
        """Record a server-to-client message and return it unchanged."""
        self.bytes_down[client_id] += len(data)
        return data

    @contextmanager
    def timed(self, role: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``seconds[role]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[role] += time.perf_counter() - start

    def result(self, decoded: DecodedAggregate, ids: Collection[int]) -> AggregationResult:
        """Assemble the :class:`AggregationResult` of the round."""
        return AggregationResult(
            mean=decoded.mean,
            total_weight=decoded.total_weight,
            included=decoded.included,
            dropped=tuple(c for c in sorted(ids) if c not in decoded.included),
            bytes_up=dict(self.bytes_up),
            bytes_down=dict(self.bytes_down),
            seconds={k: self.seconds[k] for k in ("encode", "aggregate", "decode")},
        )


class SecureAggregator(ABC):
    """A secure-aggregation protocol run in-process.

    It runs the real party objects (clients, server, key holder) through the protocol's
    driver over a :class:`~privfed.secure.LocalTransport`, so only bytes pass between them,
    and records their sizes and timings. Subclasses set ``kind`` and ``stages`` and
    implement :meth:`_run`.

    Parameters
    ----------
    clip : float or None
        Maximum absolute value per coordinate (``None``: no range check).
    out_of_range : {"clip", "error"}
        Clip out-of-range coordinates, or reject the vector with ``InvalidInputError``.
    """

    kind: ClassVar[str]
    stages: tuple[str, ...]
    """The stages a client can drop before (an instance may run fewer, e.g. masking's
    honest-but-curious model has no ``"consistency"``)."""

    def __init__(self, *, clip: float | None = None, out_of_range: str = "error") -> None:
        self.clip = check_clip(clip)
        self.out_of_range = check_out_of_range(out_of_range)
        self._identities: dict[int, ClientIdentity] = {}
        self._registry = IdentityRegistry()

    def identity(self, client_id: int) -> ClientIdentity:
        """Return the long-term identity of ``client_id``, registering it on first use."""
        identity = self._identities.get(client_id)
        if identity is None:
            identity = self._identities[client_id] = ClientIdentity(client_id)
            self._registry.keys[client_id] = identity.public_bytes
        return identity

    @property
    def registry(self) -> IdentityRegistry:
        """Public verification keys of all clients registered so far (one registry, kept up
        to date as clients register: read it, do not change it)."""
        return self._registry

    def aggregate(
        self,
        round_id: int,
        vectors: Mapping[int, Any],
        weights: Mapping[int, float],
        *,
        on_server_message: ServerHook | None = None,
        dropouts: Mapping[str, Collection[int]] | None = None,
    ) -> AggregationResult:
        """Run one round and return the weighted mean of the surviving clients' vectors.

        Parameters
        ----------
        round_id : int
            Round number; part of every signature and key derivation (replay protection).
        vectors : Mapping[int, array_like]
            Client id -> flat vector; all of the same length.
        weights : Mapping[int, float]
            Client id -> weight > 0 (e.g. sample count); weights are public.
        on_server_message : callable, optional
            Called as ``(client_id, stage, data)`` for every message the server receives,
            exactly as received.
        dropouts : Mapping[str, Collection[int]], optional
            Stage name -> clients that drop before answering that stage (see ``stages``):
            the server's message of the stage is sent to them (and counted in
            ``bytes_down``), their answer never comes.

        Returns
        -------
        AggregationResult

        Raises
        ------
        InvalidInputError
            Bad vectors, weights, ids or dropouts; raised before any message is sent.
        ThresholdError
            Too many dropouts for the protocol to finish.
        """
        round_id = check_round_id(round_id)
        ids, arrays, wts = check_round_inputs(
            vectors, weights, clip=self.clip, out_of_range=self.out_of_range
        )
        drops = check_dropouts(dropouts, self.stages, ids)
        meter = RoundMeter(ids, on_server_message)
        for c in ids:
            self.identity(c)
        decoded = self._run(round_id, arrays, wts, drops, meter)
        return meter.result(decoded, ids)

    @abstractmethod
    def _run(
        self,
        round_id: int,
        vectors: dict[int, np.ndarray],
        weights: dict[int, float],
        dropouts: dict[str, frozenset[int]],
        meter: RoundMeter,
    ) -> DecodedAggregate:
        """Run the parties of one round over validated inputs."""
