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
    per round (McMahan et al.'s C), uniformly without replacement. Poisson sampling includes
    each client independently with probability ``fraction``; a round may then have no
    client at all. With ``fraction == 1`` every client takes part and no randomness is used.
    Cyclic participation (``groups = b``) uses no randomness either: client c belongs to
    group ``c mod b`` and the r-th round (from 0) takes group ``r mod b``, so each client
    takes part once every b rounds, ``ceil(T / b)`` times in T rounds at most.

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
    uniform : callable, optional
        ``n -> n`` uniforms in [0, 1) for Poisson and fixed-size sampling instead of the
        seeded generator, e.g. a cryptographically secure source, so that who took part
        cannot be regenerated from the seed (a fixed-size cohort: the m clients of smallest
        uniform).
    groups : int, optional
        b in [1, K]: cyclic participation in b groups (``fraction`` must then be 1).

    Raises
    ------
    ValueError
        ``groups`` outside [1, K], or with ``fraction < 1`` or Poisson sampling.
    """

    def __init__(
        self,
        num_clients: int,
        fraction: float,
        seed: int,
        poisson: bool = False,
        uniform: Callable[[int], np.ndarray] | None = None,
        groups: int | None = None,
    ) -> None:
        check_field("federation.fraction", fraction)
        check_field("data.num_clients", num_clients)
        if groups is not None:
            _check_groups(groups, num_clients, fraction, poisson)
        self.num_clients = num_clients
        self.fraction = fraction
        self.poisson = poisson
        self.groups = groups
        self.per_round = (-(-num_clients // groups) if groups is not None else
                          max(1, min(num_clients, math.floor(fraction * num_clients + 0.5))))
        self._rng = np.random.default_rng(seed)
        self._uniform = uniform
        self._draws = 0

    @property
    def rate(self) -> float:
        """Probability that a given client takes part in a round (q; cyclic: 1 / b)."""
        if self.groups is not None:
            return 1 / self.groups
        return self.fraction if self.poisson else self.per_round / self.num_clients

    @property
    def expected_per_round(self) -> float:
        """Expected number of clients per round (q * K)."""
        return self.rate * self.num_clients

    def sample(self) -> list[int]:
        """The sorted ids of the next round's clients."""
        draw, self._draws = self._draws, self._draws + 1
        if self.groups is not None:
            return list(range(draw % self.groups, self.num_clients, self.groups))
        if self.fraction == 1.0:
            return list(range(self.num_clients))
        if self.poisson:
            uniform = self._uniform or self._rng.random
            return [int(c) for c in np.flatnonzero(uniform(self.num_clients) < self.rate)]
        if self._uniform is not None:
            chosen = np.argsort(self._uniform(self.num_clients), kind="stable")[:self.per_round]
        else:
            chosen = self._rng.choice(self.num_clients, size=self.per_round, replace=False)
        return sorted(int(c) for c in chosen)

    def state_dict(self) -> dict[str, Any]:
        """The seeded generator's state (NumPy's ``bit_generator.state``) and the number of
        rounds drawn (the cyclic schedule's position), for a checkpoint. A secure
        ``uniform`` source keeps no state that could be saved: after a restore it draws
        fresh, as it would have."""
        return {"rng": self._rng.bit_generator.state, "draws": self._draws}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the seeded draws from :meth:`state_dict`'s output.

        Raises
        ------
        ValueError
            ``state`` is not the state of this sampler's kind of generator.
        """
        try:
            self._rng.bit_generator.state = dict(state["rng"])
            self._draws = int(state.get("draws", 0))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a client sampler's state: {err}") from None


def _check_groups(groups: int, num_clients: int, fraction: float, poisson: bool) -> None:
    """Raise ValueError naming the fields unless cyclic participation in ``groups`` groups
    is possible (b in [1, K], every client of the round's group, no Poisson sampling)."""
    check_field("federation.cyclic_groups", groups)
    if groups > num_clients:
        raise ValueError(f"federation.cyclic_groups ({groups}) must be at most "
                         f"data.num_clients ({num_clients})")
    if fraction != 1.0 or poisson:
        raise ValueError("federation.cyclic_groups: a cyclic round trains its whole group; "
                         "federation.fraction must be 1 and federation.client_sampling "
                         f"'cyclic', got fraction {fraction} (poisson: {poisson})")
