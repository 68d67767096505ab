"""Rules that span sections of an experiment configuration, each stated once here.

:func:`check_cross_section` runs them all when an :class:`ExperimentConfig` is created. The
compression rules are :func:`privfed.config.compression.check_compatible`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfed.config.compression import check_compatible
from privfed.config.validation import ConfigError

if TYPE_CHECKING:
    from privfed.config.experiment import ExperimentConfig

__all__ = ["check_cross_section"]

_MASKING_FIELDS = ("threshold", "neighbourhood_degree", "cohort_size", "corrupt_fraction",
                   "dropout_fraction", "security_bits")
"""The ``[secure]`` fields of the masking threat model, named in its errors where its own
message names them (``neighbourhood`` for ``neighbourhood_degree``)."""


def check_cross_section(config: ExperimentConfig) -> None:
    """Raise :class:`ConfigError`, naming the fields, if sections of ``config`` conflict.

    Rules: compression with secure aggregation and DP (:func:`check_compatible`); FedBuff's
    concurrency and DP; cyclic groups and the clients; user-level DP's smallest round;
    distributed DP's need of secure aggregation; the masking protocol's ring and threat model
    for the planned cohort; federated evaluation's need of held-out data;
    ``federation.drop_last`` not with DP-SGD.
    """
    check_compatible(config.compression, config.secure.kind, config.privacy.mechanism)
    _check_fedbuff(config)
    _check_cyclic(config)
    _check_federated_eval(config)
    _check_user_level(config)
    _check_drop_last(config)
    if config.secure.kind == "masking":
        _check_masking(config)


def _check_drop_last(config: ExperimentConfig) -> None:
    if config.federation.drop_last and config.privacy.mechanism == "local":
        raise ConfigError(
            "federation.drop_last applies to plain local SGD: privacy.mechanism 'local' "
            "(DP-SGD) draws each batch by Poisson sampling (privacy.sample_rate), with no last "
            "batch to drop; allowed with privacy.mechanism 'none', 'central', 'distributed'")


def _check_federated_eval(config: ExperimentConfig) -> None:
    if config.federation.federated_eval_every and not config.data.validation_fraction:
        raise ConfigError(
            f"federation.federated_eval_every = {config.federation.federated_eval_every} "
            "evaluates on the clients' held-out data, but data.validation_fraction = 0 holds "
            "none out: set data.validation_fraction in (0, 1)")


def _check_fedbuff(config: ExperimentConfig) -> None:
    fed, mechanism = config.federation, config.privacy.mechanism
    if fed.concurrency is not None and fed.buffer_size is None:
        raise ConfigError("federation.concurrency applies only to FedBuff (set "
                          "federation.buffer_size); synchronous rounds train "
                          "round(fraction * num_clients) clients")
    if fed.concurrency is not None and fed.concurrency > config.data.num_clients:
        raise ConfigError(f"federation.concurrency ({fed.concurrency}) must be at most "
                          f"data.num_clients ({config.data.num_clients})")
    if fed.buffer_size is not None and mechanism in ("central", "distributed", "ftrl"):
        raise ConfigError(
            f"federation.buffer_size (asynchronous FedBuff) is not supported with "
            f"privacy.mechanism {mechanism!r}: user-level accounting assumes "
            "sampled synchronous rounds; allowed mechanisms: 'none', 'local'"
        )


def _check_cyclic(config: ExperimentConfig) -> None:
    groups, total = config.federation.cyclic_groups, config.data.num_clients
    if groups is not None and groups > total:
        raise ConfigError(f"federation.cyclic_groups ({groups}) must be at most "
                          f"data.num_clients ({total}): a group would be empty")


def _check_user_level(config: ExperimentConfig) -> None:
    privacy, fed = config.privacy, config.federation
    if not privacy.user_level:
        return
    if privacy.mechanism == "ftrl":
        _check_ftrl(config)
    per_round, total = config.clients_per_round(), config.data.num_clients
    _check_noise_cohort(config)
    largest = total if fed.client_sampling == "poisson" else per_round
    if fed.cyclic_groups is not None:  # every group must be releasable: the smallest
        largest = total // fed.cyclic_groups
    if (privacy.min_surviving_clients or 0) > largest:
        raise ConfigError(
            f"privacy.min_surviving_clients ({privacy.min_surviving_clients}) must be at most "
            f"the largest round, {largest} clients (cyclic: the smallest group; "
            "federation.fraction, federation.client_sampling, federation.cyclic_groups, "
            "data.num_clients): some rounds could never be released")
    if privacy.mechanism == "distributed" and config.secure.kind == "none":
        raise ConfigError(
            "privacy.mechanism 'distributed' needs secure aggregation: with secure.kind "
            "'none' the server reads each client's update with only its share of the noise; "
            "allowed secure.kind: ['masking', 'he'] (or privacy.mechanism 'central')"
        )


def _check_ftrl(config: ExperimentConfig) -> None:
    """DP-FTRL accounts a public schedule: every client every round, or cyclic groups."""
    fed = config.federation
    if fed.fraction < 1:
        raise ConfigError(
            f"privacy.mechanism 'ftrl' accounts a public schedule without sampling: it needs "
            f"federation.fraction = 1 (every client every round, or with "
            f"federation.client_sampling 'cyclic' and federation.cyclic_groups one group per "
            f"round), got {fed.client_sampling!r} sampling at federation.fraction = "
            f"{fed.fraction}")


def _check_noise_cohort(config: ExperimentConfig) -> None:
    """A noise cohort C of at least the simulated cohort c: a smaller C would add more
    noise per client than the deployment it names (and the noise scale c / C > 1)."""
    size, fed = config.privacy.noise_cohort_size, config.federation
    poisson = fed.client_sampling == "poisson"
    expected = fed.fraction * config.data.num_clients if poisson else config.clients_per_round()
    if size is not None and size < expected:
        raise ConfigError(
            f"privacy.noise_cohort_size ({size}) must be at least the simulated cohort of "
            f"{expected:g} expected clients per round (federation.fraction = {fed.fraction} "
            f"of data.num_clients = {config.data.num_clients}; cyclic: "
            "federation.cyclic_groups)")


def _check_masking(config: ExperimentConfig) -> None:
    """The ring holds the largest round's sum; t and k meet the threat model (checked by
    ``privfed.secure``'s own parameter object, imported here only when masking is used)."""
    from privfed.secure.masking.params import MaskingParams

    fed, secure = config.federation, config.secure
    largest = (config.data.num_clients if fed.client_sampling == "poisson"
               and fed.buffer_size is None else config.planned_cohort_size())
    if 2 ** (secure.ring_bits - 1) - 1 - largest <= largest:
        raise ConfigError(
            f"secure.ring_bits ({secure.ring_bits}) is too small for rounds of {largest} "
            f"clients (secure.cohort_size, else federation.buffer_size, else the clients per "
            "round): the masked sum needs 2**(ring_bits - 1) - 1 > 2 * clients; raise "
            "secure.ring_bits"
        )
    params = secure.aggregator_params()
    params["cohort_size"] = config.planned_cohort_size()
    try:
        MaskingParams(**params)
    except ValueError as err:
        named = [f"secure.{key}" for key in _MASKING_FIELDS if key.split("_")[0] in str(err)]
        raise ConfigError(
            f"{', '.join(named) or 'secure'} (masking, cohort of {params['cohort_size']} "
            f"clients): {err}"
        ) from None
