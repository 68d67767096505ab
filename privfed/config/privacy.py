"""The ``[privacy]`` section: which differential privacy mechanism, and its parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from privfed.config.validation import ConfigError, OneOf, Range, Rule, check_choice, check_rules

__all__ = ["ACCOUNTANTS", "DIAGNOSTICS", "EPSILON_MAX", "FACTORIZATIONS", "MECHANISMS",
           "NOISES", "PrivacyConfig", "RULES", "check_accountant"]

MECHANISMS = ("none", "local", "central", "distributed", "ftrl")
ACCOUNTANTS = ("pld", "prv", "rdp")
NOISES = ("gaussian", "skellam")
FACTORIZATIONS = ("tree", "banded")
DIAGNOSTICS = ("private", "exact")
"""``privacy.diagnostics``: "private" releases only figures that cost no privacy beyond what
is accounted; "exact" adds un-noised statistics of the clients' data (see docs/privacy.md)."""

_POSITIVE = Range(0, low_open=True)

EPSILON_MAX = 100.0
"""The largest target epsilon: beyond, ``e**epsilon`` > 1e43 leaves no guarantee to state, and
calibrating the noise for it takes minutes (the search goes down to z = 1e-6)."""

RULES: dict[str, Rule] = {
    "mechanism": OneOf(MECHANISMS),
    "epsilon": Range(0, EPSILON_MAX, low_open=True),
    "delta": Range(0, 1, low_open=True, high_open=True),
    "noise_multiplier": Range(0),
    "max_grad_norm": _POSITIVE,
    "sample_rate": Range(0, 1, low_open=True),
    "clip_norm": Range(0, math.inf, low_open=True),
    "target_quantile": Range(0, 1),
    "clip_lr": _POSITIVE,
    "clipped_count_stddev": _POSITIVE,
    "noise": OneOf(NOISES),
    "quantization_step": _POSITIVE,
    "min_surviving_clients": Range(1),
    "factorization": OneOf(FACTORIZATIONS),
    "bands": Range(1),
    "noise_cohort_size": Range(1),
    "diagnostics": OneOf(DIAGNOSTICS),
}
"""The rule of each field but ``accountant`` (:func:`check_accountant`); None, where
allowed, means "not set" and is not checked."""


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy of a federated run; the defaults are non-private.

    Attributes
    ----------
    mechanism : str
        "none"; "local" (record-level DP-SGD at each client, through Opacus); "central"
        (user-level DP-FedAvg, the server clips and adds noise); "distributed" (user-level,
        each client clips and adds its share of the noise before its update leaves it);
        "ftrl" (user-level DP-FTRL, Kairouz et al. 2021: the server noises the prefix sums
        of the clipped updates with correlated noise, see ``factorization``; for a public
        schedule, no client sampling).
    epsilon : float or None
        Target epsilon, in (0, 100] (:data:`EPSILON_MAX`); the noise is calibrated to reach
        it at the end of training. Give exactly one of ``epsilon`` and ``noise_multiplier``
        (unless mechanism is "none").
    delta : float
        Target delta, in (0, 1); should be below 1/n (records per client for "local",
        number of clients for "central" and "distributed").
    noise_multiplier : float or None
        Noise std as a multiple of the clip norm (z); >= 0 and finite.
    max_grad_norm : float
        Per-example gradient clip norm C of local DP-SGD, > 0 and finite.
    sample_rate : float or None
        "local" only: the Poisson rate q at which each record joins a DP-SGD batch, in
        (0, 1]. Public and the same at every client (it must not depend on a client's
        private record count); None = ``federation.batch_size`` / the reference client size
        (the configured dataset's training records / ``data.num_clients``).
    clip_norm : float
        User-level clip norm S of a client's update ("central", "distributed", "ftrl"), > 0;
        ``inf`` is allowed only with ``noise_multiplier = 0`` (plain FedAvg with uniform
        weights). With adaptive clipping, the initial S.
    adaptive_clipping : bool
        Adapt S to a quantile of the update norms (Andrew et al. 2021).
    target_quantile : float
        Quantile gamma of the update norms S tracks, in [0, 1].
    clip_lr : float
        Geometric learning rate eta of S, > 0: ``S <- S * exp(-eta * (b - gamma))``.
    clipped_count_stddev : float or None
        Noise std sigma_b on the count of unclipped updates, > 0; None = expected clients
        / 20.
    accountant : str
        "pld" (dp-accounting's privacy loss distributions, the tightest), "prv" or "rdp"
        (Opacus); all upper bounds.
    noise : str
        Distributed DP noise: "gaussian", or "skellam" (integer noise for the masking
        aggregator, Agarwal et al. 2021).
    quantization_step : float or None
        "skellam" only: the lattice step gamma (> 0) of the client's integer encoding;
        None = S / 2**16.
    min_surviving_clients : int or None
        "distributed" only: the fewest clients (>= 1) whose noise shares must be in a
        released sum; rounds with fewer are discarded. None = the round's cohort size for
        fixed-size client sampling; under Poisson sampling, the expected cohort minus two
        standard deviations.
    factorization : str
        "ftrl" only: the correlated noise of the prefix sums, "tree" (binary-tree
        aggregation, Kairouz et al. 2021) or "banded" (a b-banded Toeplitz factorisation
        with the square root's coefficients, Choquette-Choo et al. 2023 / Kalinin & Lampert
        2024).
    bands : int or None
        "banded" only: b >= 1, the bands of the factorisation; None = the schedule's period
        (the rounds between two participations of a client: 1 with every client every
        round).
    noise_cohort_size : int or None
        "central" only: C >= 1, the deployed cohort (clients per round) whose noise the run
        adds per client (pfl-research's ``noise_cohort_size``). The run adds noise of std
        ``z * S * c / C`` to its sum of c expected clients (``federation.fraction *
        data.num_clients``; cyclic: a group), so its mean update carries the noise ``z * S /
        C`` of a deployment of C clients per round with the same participation scheme and
        rate (a population of C / rate clients); z is accounted, and ``privacy.epsilon``
        calibrated, for that deployment. Must be at least c. None = the run's own cohort.
    secure_mode : bool
        Draw the noise and the DP sampling from a ChaCha20 keystream keyed from OS entropy,
        so that no other party can regenerate them (not reproducible). False (the in-process
        default) seeds them from the config for reproducible research: anyone holding the
        config can then subtract the noise. The Flower engines always use secure noise.
    diagnostics : str
        The per-round DP diagnostics in the history (:data:`DIAGNOSTICS`): "private" (the
        default) only those that are functions of released or public values (the noise std
        and expected norm, the signal-to-noise ratio estimated from the released sum, the
        clipped fraction estimated from adaptive clipping's noisy count, the per-client
        epsilon where participation is public); "exact" also the exact clipped fractions
        and signal-to-noise ratio, statistics of the clients' data without noise and
        outside the accounting, which the run then declares.
    """

    mechanism: str = "none"
    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    sample_rate: float | None = None
    clip_norm: float = 1.0
    adaptive_clipping: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clipped_count_stddev: float | None = None
    accountant: str = "pld"
    noise: str = "gaussian"
    quantization_step: float | None = None
    min_surviving_clients: int | None = None
    factorization: str = "tree"
    bands: int | None = None
    noise_cohort_size: int | None = None
    secure_mode: bool = False
    diagnostics: str = "private"

    def __post_init__(self) -> None:
        check_rules("privacy", self, RULES)
        check_accountant(self.accountant)
        self._check_combination()

    @property
    def user_level(self) -> bool:
        """Whether the mechanism protects whole clients ("central", "distributed", "ftrl")."""
        return self.mechanism in ("central", "distributed", "ftrl")

    def _check_ftrl(self) -> None:
        if self.factorization != "tree" and self.mechanism != "ftrl":
            raise ConfigError(
                f"privacy.factorization {self.factorization!r} applies only to mechanism "
                f"'ftrl', not {self.mechanism!r}")
        if self.bands is not None and self.factorization != "banded":
            raise ConfigError(
                f"privacy.bands applies only to privacy.factorization 'banded' (mechanism "
                f"'ftrl'), not {self.factorization!r}")

    @property
    def exact_diagnostics(self) -> bool:
        """Whether the run releases exact, non-private diagnostics (``diagnostics = "exact"``
        under a privacy mechanism; without one nothing is protected)."""
        return self.diagnostics == "exact" and self.mechanism != "none"

    def _check_combination(self) -> None:
        self._check_ftrl()
        given = (self.epsilon is not None) + (self.noise_multiplier is not None)
        if self.mechanism == "none":
            if given:
                raise ConfigError(
                    "privacy.epsilon / privacy.noise_multiplier are set but privacy.mechanism is "
                    f"'none'; allowed mechanisms: {list(MECHANISMS)}"
                )
            return
        if given != 1:
            raise ConfigError(
                f"privacy.mechanism {self.mechanism!r} needs exactly one of privacy.epsilon "
                f"and privacy.noise_multiplier, got epsilon={self.epsilon!r}, "
                f"noise_multiplier={self.noise_multiplier!r}"
            )
        if self.user_level and math.isinf(self.clip_norm) and self.noise_multiplier != 0:
            raise ConfigError(
                "privacy.clip_norm = inf is allowed only with privacy.noise_multiplier = 0 "
                "(the noise std is noise_multiplier * clip_norm)"
            )
        if self.sample_rate is not None and self.mechanism != "local":
            raise ConfigError(
                f"privacy.sample_rate applies only to mechanism 'local' (DP-SGD's record "
                f"sampling), not {self.mechanism!r}; the client sampling rate of user-level DP "
                "is federation.fraction"
            )
        if self.adaptive_clipping and self.mechanism not in ("central", "distributed"):
            raise ConfigError(
                f"privacy.adaptive_clipping applies to mechanisms 'central' and 'distributed', "
                f"not {self.mechanism!r}"
            )
        if self.adaptive_clipping and math.isinf(self.clip_norm):
            raise ConfigError("privacy.adaptive_clipping needs a finite initial privacy.clip_norm")
        if self.noise == "skellam" and self.mechanism != "distributed":
            raise ConfigError(
                f"privacy.noise 'skellam' applies only to mechanism 'distributed', "
                f"not {self.mechanism!r}; allowed for {self.mechanism!r}: ['gaussian']"
            )
        if self.quantization_step is not None and self.noise != "skellam":
            raise ConfigError(
                f"privacy.quantization_step applies only to privacy.noise 'skellam' (the "
                f"lattice of its integer noise), not {self.noise!r}")
        if self.min_surviving_clients is not None and self.mechanism != "distributed":
            raise ConfigError(
                f"privacy.min_surviving_clients applies only to mechanism 'distributed', not "
                f"{self.mechanism!r}")
        if self.noise_cohort_size is not None and self.mechanism != "central":
            raise ConfigError(
                f"privacy.noise_cohort_size applies only to mechanism 'central', not "
                f"{self.mechanism!r}: local DP-SGD's noise is per client and does not depend "
                "on the cohort, and distributed DP's per-client guarantee against the server "
                "rests on the shares of the clients actually summed (K_min), which a smaller "
                "simulated cohort cannot stand in for")
        if self.noise == "skellam" and (self.adaptive_clipping or math.isinf(self.clip_norm)):
            raise ConfigError(
                "privacy.noise 'skellam' needs a fixed, finite privacy.clip_norm "
                "(no privacy.adaptive_clipping)"
            )


def check_accountant(name: str) -> None:
    """Raise a :class:`ConfigError` naming ``privacy.accountant`` unless ``name`` is offered."""
    if name == "gdp":
        raise ConfigError(
            "privacy.accountant 'gdp' is not offered: Opacus's GDP accountant is a "
            "central-limit approximation that can report less than the true epsilon "
            f"(6.01 against 7.05 at z=1, q=0.1, T=100); allowed: {list(ACCOUNTANTS)}"
        )
    check_choice("privacy.accountant", name, ACCOUNTANTS)
