"""How clients take part in rounds, and what user-level accounting may credit for it.

One :class:`Participation` per federation, from public values only (``federation.
client_sampling``, ``federation.fraction``, ``federation.cyclic_groups``, K). It turns a
number of released rounds into the Gaussian releases an accountant composes
(:class:`~privfed.privacy.accounting.GaussianEvent`) and names the neighbouring relation
the epsilon holds for:

=============  =================================  =========================================
scheme         relation (one client)              accounted event after T rounds
=============  =================================  =========================================
``full``       add or remove                      Gaussian(z), T times (every client, every
                                                  round: no amplification)
``poisson``    add or remove                      Poisson-subsampled Gaussian(z), rate q, T
                                                  times (McMahan et al. 2018)
``fixed``      replace one (K and m public)       m of K without replacement: Poisson-
                                                  subsampled Gaussian(z / 2), rate m / K, T
                                                  times, both directions (see below)
``cyclic``     add or remove                      Gaussian(z), ceil(T / b) times: b public
                                                  groups in turn, no amplification
=============  =================================  =========================================

**Fixed-size cohorts** (m of K uniformly without replacement each round). Removing a client
would change the cohort size, so the relation is replace-one (dp-accounting's
``SampledWithoutReplacementDpEvent`` is defined for it). Replacing a clipped update moves
the sum by up to 2S. With q = m / K, a dominating pair of one round is
``((1 - q) N(0, z^2) + q N(2, z^2), N(0, z^2))`` and its reverse (Dong, Roth & Su 2022,
Theorem 9: sampling without replacement under replace-one gives ``min(f_q, f_q^-1)**`` with
``f = G_{2/z}``; composed over rounds as in their Section 5.1), which is exactly
dp-accounting's add/remove Poisson-subsampled Gaussian of noise multiplier z / 2, whose PLD
holds both directions. It is reached: a client of update ``+S e`` replaced by one of
``-S e`` while every other client sends ``-S e``. So it can be far above the Poisson
figure (Lebeda, Regehr, Kamath & Steinke 2024: "Avoiding pitfalls for privacy accounting
of subsampled mechanisms under composition"). dp-accounting 0.6.0's PLD accountant does
not accept ``SampledWithoutReplacementDpEvent`` itself; its RDP accountant does (Wang,
Balle & Kasiviswanathan 2019), an upper bound that the tests check this figure against.

**Cyclic participation** (b groups, client c in group ``c mod b``, round r trains group
``r mod b``): a public, deterministic schedule, so nothing is amplified; each client takes
part at most once every b rounds, ``ceil(T / b)`` times in T rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privfed.privacy.accounting import (
    GaussianEvent,
    calibrate_noise,
    gaussian_epsilon,
    replace_one_epsilon,
)

__all__ = ["Participation", "SCHEMES"]

SCHEMES = ("full", "poisson", "fixed", "cyclic")
"""What user-level accounting distinguishes (``full``: every client in every round)."""

_RELATIONS = {"full": "add/remove one client", "poisson": "add/remove one client",
              "fixed": "replace one client", "cyclic": "add/remove one client"}

_METHODS = {
    "full": "gaussian, every client every round (no amplification)",
    "poisson": "poisson-subsampled gaussian, q = {q:.4g}",
    "fixed": "sampled without replacement, {m} of {k} (replace-one: poisson-subsampled "
             "gaussian of z/2, q = {q:.4g})",
    "cyclic": "cyclic, {b} groups: gaussian over ceil(T/{b}) participations (no amplification)",
}


@dataclass(frozen=True)
class Participation:
    """A federation's client participation, as user-level accounting sees it.

    Attributes
    ----------
    scheme : {"full", "poisson", "fixed", "cyclic"}
    num_clients : int
        K >= 1.
    rate : float
        q in (0, 1]: Poisson's rate, or m / K of a fixed-size cohort; 1 / b when cyclic.
    groups : int
        b >= 1, the cyclic groups (1 otherwise).

    Raises
    ------
    ValueError
        An unknown scheme, q outside (0, 1], b outside [1, K].
    """

    scheme: str
    num_clients: int
    rate: float = 1.0
    groups: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"participation scheme must be one of {SCHEMES}, got "
                             f"{self.scheme!r}")
        if not 0 < self.rate <= 1:
            raise ValueError(f"client sample rate must be in (0, 1], got {self.rate!r}")
        if not 1 <= self.groups <= self.num_clients:
            raise ValueError(f"federation.cyclic_groups must be in [1, {self.num_clients}] "
                             f"(data.num_clients), got {self.groups!r}")

    @classmethod
    def of(cls, num_clients: int, rate: float, poisson: bool,
           groups: int | None = None) -> Participation:
        """The participation of a :class:`~privfed.federated.ClientSampler` with these
        parameters (``groups``: cyclic; else Poisson or fixed-size at ``rate``, full at 1)."""
        if groups is not None:
            return cls("cyclic", num_clients, 1 / groups, groups)
        if rate == 1:
            return cls("full", num_clients)
        return cls("poisson" if poisson else "fixed", num_clients, rate)

    @property
    def relation(self) -> str:
        """The neighbouring relation the user-level epsilon holds for."""
        return _RELATIONS[self.scheme]

    @property
    def method(self) -> str:
        """How rounds are accounted, in words (reported beside epsilon)."""
        cohort = max(1, math.floor(self.rate * self.num_clients + 0.5))
        return _METHODS[self.scheme].format(q=self.rate, m=cohort, k=self.num_clients,
                                            b=self.groups)

    def participations(self, rounds: int) -> int:
        """The most rounds one client can take part in among ``rounds`` released ones
        (cyclic: ``ceil(rounds / b)``, whatever group goes first)."""
        return -(-rounds // self.groups)

    def event(self, noise_multiplier: float, rounds: int) -> GaussianEvent:
        """The accounted release of ``rounds`` rounds with noise multiplier z, in the
        add/remove form every accountant of :func:`~privfed.privacy.accounting.
        gaussian_epsilon` composes (see the module's table)."""
        if self.scheme == "fixed":
            return GaussianEvent(noise_multiplier / 2, self.rate, rounds)
        if self.scheme == "poisson":
            return GaussianEvent(noise_multiplier, self.rate, rounds)
        return GaussianEvent(noise_multiplier, 1.0, self.participations(rounds))

    def epsilon(self, noise_multiplier: float, rounds: int, delta: float,
                accountant: str = "pld") -> float:
        """User-level epsilon, for :attr:`relation`, of ``rounds`` released rounds."""
        return gaussian_epsilon([self.event(noise_multiplier, rounds)], delta, accountant)

    def calibrate(self, target: float, delta: float, rounds: int,
                  accountant: str = "pld") -> float:
        """The noise multiplier z whose :meth:`epsilon` over ``rounds`` rounds is in
        ``[0.99, 1] * target`` (:func:`~privfed.privacy.accounting.calibrate_noise`; fixed
        size: twice the Poisson z/2 found at q = m / K).

        Raises
        ------
        ValueError
            The target is out of reach.
        """
        event = self.event(1.0, rounds)
        z = calibrate_noise(target, delta, event.sample_rate, event.count, accountant)
        return 2 * z if self.scheme == "fixed" else z

    def replace_one_epsilon(self, noise_multiplier: float, rounds: int, delta: float) -> float:
        """Epsilon for changing one client's data when it takes part either way (replace
        one), after ``rounds`` rounds, by dp-accounting's PLD: the headline for fixed-size
        cohorts; Poisson and full: :func:`~privfed.privacy.accounting.replace_one_epsilon`;
        cyclic: Gaussian(z / 2) over its participations (the update may move by 2S)."""
        if self.scheme == "fixed":
            return self.epsilon(noise_multiplier, rounds, delta)
        if self.scheme == "cyclic":
            event = GaussianEvent(noise_multiplier / 2, 1.0, self.participations(rounds))
            return gaussian_epsilon([event], delta)
        return replace_one_epsilon(noise_multiplier, self.rate, rounds, delta)
