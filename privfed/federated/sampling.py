"""Which clients take part in a round, and seeds derived from the one experiment seed."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from privfed.config.fields import check_field

__all__ = ["BatchOrder", "ClientSampler", "derive_seed"]


def derive_seed(seed: int, *stream: int) -> int:
    """An independent 32-bit seed for one named random stream of an experiment.

    ``derive_seed(seed, a, b)`` is stable across runs and platforms, and different
    ``stream`` tuples give statistically independent generators (NumPy's SeedSequence).
    """
    return int(np.random.SeedSequence((seed, *stream)).generate_state(1)[0])


class BatchOrder:
    """The seed of each client's batch order in each round (or FedBuff wave).

    ``BatchOrder(seed, stream)(r, c) == derive_seed(seed, stream, r, c)``: independent of
    every other stream of the experiment, the same on every party.

    Parameters
    ----------
    seed : int
        The experiment seed.
    stream : int
        The batch-order stream's number.
    """

    def __init__(self, seed: int, stream: int) -> None:
        self.seed = seed
        self.stream = stream

    def __call__(self, round_id: int, client_id: int) -> int:
        """The batch-order seed of client ``client_id`` in round ``round_id``."""
        return derive_seed(self.seed, self.stream, round_id, client_id)


class ClientSampler:
    """Samples the clients of each round.

    Fixed-size sampling (default) draws ``m = max(1, round(fraction * K))`` distinct clients
    per round (McMahan et al.'s C). Poisson sampling includes each client independently with
    probability ``fraction`` (what the subsampled-Gaussian accountants of user-level DP
    assume); a round may then have no client at all. Cyclic sampling is a public schedule
    without randomness: the clients form ``B = ceil(K / m)`` blocks of m consecutive ids (the
    last may be smaller) and round r takes block ``(r - 1) mod B``, so each client takes part
    once every B rounds (what DP-FTRL's tree accounting uses). With ``fraction == 1`` every
    client takes part and no randomness is used.

    Parameters
    ----------
    num_clients : int
        K, the number of clients.
    fraction : float
        C in (0, 1].
    seed : int
        Seed of the sampler's own generator (one stream for the whole training).
    poisson : bool, default False
        Poisson instead of fixed-size sampling.
    cyclic : bool, default False
        The cyclic schedule instead of fixed-size sampling (not with ``poisson``).
    uniform : callable, optional
        ``n -> n`` uniforms in [0, 1) for Poisson sampling instead of the seeded generator,
        e.g. a cryptographically secure source, so that who took part cannot be regenerated
        from the seed.
    """

    def __init__(
        self,
        num_clients: int,
        fraction: float,
        seed: int,
        poisson: bool = False,
        uniform: Callable[[int], np.ndarray] | None = None,
        cyclic: bool = False,
    ) -> None:
        check_field("federation.fraction", fraction)
        check_field("data.num_clients", num_clients)
        if poisson and cyclic:
            raise ValueError("client sampling is either Poisson or cyclic, not both")
        self.num_clients = num_clients
        self.fraction = fraction
        self.poisson = poisson
        self.cyclic = cyclic
        self.per_round = max(1, min(num_clients, math.floor(fraction * num_clients + 0.5)))
        self._drawn = 0
        self._rng = np.random.default_rng(seed)
        self._uniform = uniform or self._rng.random

    @property
    def rate(self) -> float:
        """Probability that a given client takes part in a round (q); cyclic: 1 / B."""
        if self.cyclic:
            return 1 / self.blocks
        return self.fraction if self.poisson else self.per_round / self.num_clients

    @property
    def blocks(self) -> int:
        """B, the number of cyclic blocks of ``per_round`` clients."""
        return math.ceil(self.num_clients / self.per_round)

    @property
    def period(self) -> int | None:
        """The public number of rounds between two participations of every client: 1 when
        every client takes every round, B under cyclic sampling; None when random."""
        if self.fraction == 1.0:
            return 1
        return self.blocks if self.cyclic else None

    @property
    def expected_per_round(self) -> float:
        """Expected number of clients per round (q * K)."""
        return self.rate * self.num_clients

    def sample(self) -> list[int]:
        """The sorted ids of the next round's clients."""
        if self.fraction == 1.0:
            return list(range(self.num_clients))
        if self.cyclic:
            block = self._drawn % self.blocks
            self._drawn += 1
            return list(range(block * self.per_round,
                              min(self.num_clients, (block + 1) * self.per_round)))
        if self.poisson:
            return [int(c) for c in np.flatnonzero(self._uniform(self.num_clients) < self.rate)]
        chosen = self._rng.choice(self.num_clients, size=self.per_round, replace=False)
        return sorted(int(c) for c in chosen)

    def state_dict(self) -> dict[str, Any]:
        """The seeded generator's state (NumPy's ``bit_generator.state``) and the rounds
        drawn (the cyclic schedule's position), for a checkpoint. A secure ``uniform``
        source keeps no state that could be saved: after a restore it draws fresh, as it
        would have."""
        return {"rng": self._rng.bit_generator.state, "drawn": self._drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the seeded draws from :meth:`state_dict`'s output.

        Raises
        ------
        ValueError
            ``state`` is not the state of this sampler's kind of generator.
        """
        try:
            self._rng.bit_generator.state = dict(state["rng"])
            self._drawn = int(state.get("drawn", 0))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a client sampler's state: {err}") from None
