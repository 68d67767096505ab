"""Turn an :class:`~privfed.config.ExperimentConfig` into a runnable federation.

:func:`build_parts` gives what every party derives from the config and public values
alone (the model, trainer, update pipeline, participation policy, weighting, sampler):
the server builds them for the whole federation, and a Flower node builds them for
itself (:func:`build_client`). :func:`build_simulation` puts them on the in-process
engine; the Flower engine puts them on Flower nodes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from privfed.aggregation import SecureAggregation, evaluation_scale
from privfed.clientdata import DataSchema, build_client, load_partitioned, training_tensors
from privfed.compression import build_compression
from privfed.config import ConfigError, ExperimentConfig
from privfed.data import Dataset
from privfed.federated import (
    BatchOrder,
    ClientSampler,
    Engine,
    FedBuff,
    FlatParameters,
    History,
    InProcessEngine,
    LatencyModel,
    LocalTrainer,
    LocalTraining,
    Observer,
    ParticipationPolicy,
    Pipeline,
    RoundRecord,
    Schedule,
    Server,
    SynchronousRounds,
    Weighting,
    bind_flat_parameters,
    derive_seed,
    make_server_optimizer,
)
from privfed.federated.device import resolve_device
from privfed.federated.engine import EvaluationProtocol
from privfed.federated.federated_eval import FederatedEvaluation
from privfed.federated.metrics import EvaluationCounts
from privfed.models import build_model
from privfed.privacy import NoisePolicy, build_privacy
from privfed.privacy.ledger import planned_participations
from privfed.privacy.modules import check_dp_module
from privfed.secure import SecureAggregator, make_aggregator

__all__ = [
    "FederationParts",
    "Simulation",
    "build_evaluation",
    "build_parts",
    "build_secure_aggregator",
    "build_server",
    "build_simulation",
    "secure_params",
    "run_experiment",
]

# Independent random streams derived from the experiment seed.
_SAMPLER_STREAM = 1
_BATCH_ORDER_STREAM = 2
_PRIVACY_STREAM = 3
_COMPRESSION_STREAM = 4
_LATENCY_STREAM = 5
_EVALUATION_STREAM = 7


@dataclass
class FederationParts:
    """What one config describes, built from public values only.

    Attributes
    ----------
    workspace : FlatParameters
        The model (initialised from the config's seed, or the caller's model), bound to
        flat buffers on :attr:`device`.
    sampler : ClientSampler
    trainer : LocalTrainer
    pipeline : Pipeline
        Privacy stages, then compression stages, in the order a client applies them.
    policy : ParticipationPolicy
    weighting : Weighting
    payload_codec : object or None
        The plain protocol's wire codec (quantisation, top-k), if any.
    num_classes : int
        The model's number of classes.
    device : torch.device
        Where the models train and are evaluated (``federation.device`` resolved); updates
        and the global weights stay on the CPU.
    """

    workspace: FlatParameters
    sampler: ClientSampler
    trainer: LocalTrainer
    pipeline: Pipeline
    policy: ParticipationPolicy
    weighting: Weighting
    payload_codec: Any
    num_classes: int
    device: torch.device = torch.device("cpu")



@dataclass
class Simulation:
    """A ready-to-train federation.

    Attributes
    ----------
    config : ExperimentConfig
    dataset : Dataset
    partitions : list of numpy.ndarray
        Indices into ``dataset.x_train`` of each client's data.
    server : Server
    """

    config: ExperimentConfig
    dataset: Dataset
    partitions: list
    server: Server

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> History:
        """Train for ``config.federation.rounds`` rounds."""
        return self.server.fit(self.config.federation.rounds, on_round=on_round)


def build_parts(
    config: ExperimentConfig, data: Dataset | DataSchema, *, model: nn.Module | None = None
) -> FederationParts:
    """The model, sampler, trainer, pipeline, policy and weighting of ``config``.

    Every parameter comes from the config and public values (the number of clients, the
    data's shape, a simulation's mean client size), never from one client's data, so the
    server and every Flower node build the same parts. ``data`` is the simulation's pooled
    dataset, or the :class:`~privfed.clientdata.DataSchema` a deployment declares.

    Parameters
    ----------
    config : ExperimentConfig
    data : Dataset or DataSchema
    model : torch.nn.Module, optional
        Train a deep copy of this model (its current weights are the initial global model)
        instead of building ``config.model``; the config's ``model`` section then only names
        it in the run directory.

    Raises
    ------
    ConfigError
        E.g. ``federation.device`` not available here, a model that cannot be built, a model
        Opacus cannot train (without ``model.fix_for_dp``), or a target epsilon out of reach.
    """
    fed, seed, num_clients = config.federation, config.seed, config.data.num_clients
    schema = data if isinstance(data, DataSchema) else DataSchema.of(data, num_clients)
    device = resolve_device(fed.device)
    workspace = bind_flat_parameters(_initial_model(config, schema, model), device)
    training = LocalTraining(fed.local_epochs, fed.batch_size, fed.lr, fed.mu, fed.drop_last)
    sampler = ClientSampler(num_clients, fed.fraction, derive_seed(seed, _SAMPLER_STREAM),
                            poisson=fed.client_sampling == "poisson",
                            uniform=_secret_sampling(config), groups=fed.cyclic_groups)
    try:
        privacy = build_privacy(
            config.privacy, num_clients=num_clients, sample_rate=sampler.rate,
            poisson=sampler.poisson, num_params=workspace.spec.numel, rounds=fed.rounds,
            training=training, noise=NoisePolicy(config.privacy.secure_mode,
                                                 derive_seed(seed, _PRIVACY_STREAM)),
            reference_size=schema.reference_size,
            participations=_planned_participations(config, sampler), module=workspace.module,
            cyclic_groups=sampler.groups,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    privacy_stages = Pipeline(privacy.stages)
    numel = workspace.spec.numel
    compression = build_compression(
        config.compression, seed=derive_seed(seed, _COMPRESSION_STREAM),
        control_length=privacy_stages.output_length(numel) - numel,
    )
    return FederationParts(
        workspace=workspace, sampler=sampler, trainer=privacy.trainer,
        pipeline=Pipeline([*privacy.stages, *compression.stages]), policy=privacy.policy,
        weighting=privacy.weighting, payload_codec=compression.payload_codec,
        num_classes=schema.num_classes, device=device,
    )


def _initial_model(
    config: ExperimentConfig, schema: DataSchema, model: nn.Module | None
) -> nn.Module:
    """``config.model`` built for the data's ``schema`` (or a deep copy of ``model``),
    checked (and, with ``model.fix_for_dp``, fixed) for Opacus under DP-SGD."""
    if model is None:
        try:
            model = build_model(config.model.name, schema.input_shape, schema.num_classes,
                                seed=config.seed, **config.model.build_options())
        except ValueError as err:
            raise ConfigError(str(err)) from err
    else:
        model = copy.deepcopy(model)
    if config.privacy.mechanism == "local":
        model = check_dp_module(model, fix=config.model.fix_for_dp)
    return model


def secure_params(
    config: ExperimentConfig, parts: FederationParts, *, codec: bool = True
) -> dict[str, Any]:
    """The secure protocol's parameters, as every party holds them: ``config.secure``'s;
    under distributed DP the clients refuse to let a sum of fewer than K_min clients be
    decoded (``min_clients``); masking plans for the config's cohort; the plain protocol
    carries the compression's payload codec (unless ``codec`` is False)."""
    params = config.secure.aggregator_params()
    min_cohort = parts.policy.min_cohort
    if min_cohort > 1 and config.secure.kind in ("he", "masking"):
        params["min_clients"] = min_cohort
    if config.secure.kind == "masking":
        params["cohort_size"] = config.planned_cohort_size()
    if codec and parts.payload_codec is not None:
        params["codec"] = parts.payload_codec
    return params


def build_secure_aggregator(config: ExperimentConfig, parts: FederationParts) -> SecureAggregator:
    """The configured in-process secure aggregator (:func:`secure_params`)."""
    return make_aggregator(config.secure.kind, **secure_params(config, parts))


def build_schedule(config: ExperimentConfig, sampler: ClientSampler) -> Schedule:
    """Synchronous rounds, or FedBuff when ``federation.buffer_size`` is set."""
    fed = config.federation
    if fed.buffer_size is None:
        return SynchronousRounds()
    return FedBuff(
        sampler.num_clients, buffer_size=fed.buffer_size,
        concurrency=fed.concurrency or sampler.per_round,
        latency=LatencyModel(sampler.num_clients, fed.latency_spread,
                             derive_seed(config.seed, _LATENCY_STREAM)),
        staleness_exponent=fed.staleness_exponent,
    )


def build_server(
    config: ExperimentConfig,
    parts: FederationParts,
    engine: Engine,
    dataset: Dataset | None,
    observers: Sequence[Observer] = (),
) -> Server:
    """The server of ``config`` over ``engine`` (in-process or Flower); it evaluates on
    ``dataset``'s test part where there is one (a deployment's server has no dataset), on
    ``parts.device``; the global weights stay on the CPU."""
    fed = config.federation
    test = None
    if dataset is not None and dataset.num_test:
        test = (torch.from_numpy(dataset.x_test).to(parts.device),
                torch.from_numpy(dataset.y_test).to(parts.device))
    federated = None
    if fed.federated_eval_every:
        counts = EvaluationCounts(parts.num_classes)
        federated = FederatedEvaluation(counts, every=fed.federated_eval_every,
                                        fraction=fed.federated_eval_fraction,
                                        seed=derive_seed(config.seed, _EVALUATION_STREAM))
    return Server(
        parts.workspace, engine,
        sampler=parts.sampler,
        optimizer=make_server_optimizer(fed.server_optimizer, **fed.server_optimizer_params()),
        test_data=test,
        batch_seed=BatchOrder(config.seed, _BATCH_ORDER_STREAM),
        schedule=build_schedule(config, parts.sampler),
        pipeline=parts.pipeline, weighting=parts.weighting, policy=parts.policy,
        eval_every=fed.eval_every, federated_evaluation=federated, observers=observers,
    )


def build_evaluation(
    config: ExperimentConfig, parts: FederationParts, aggregator: SecureAggregator
) -> EvaluationProtocol:
    """Federated evaluation's protocol: ``aggregator``, or, where it carries a lossy payload
    codec (quantisation, top-k), the same protocol without it."""
    if parts.payload_codec is not None:
        aggregator = make_aggregator(config.secure.kind,
                                     **secure_params(config, parts, codec=False))
    return EvaluationProtocol(SecureAggregation(aggregator),
                              scale=evaluation_scale(config.secure.kind, config.secure.clip),
                              reveals_clients=config.secure.kind == "none")


def build_simulation(
    config: ExperimentConfig,
    observers: Sequence[Observer] = (),
    *,
    dataset: Dataset | None = None,
    extra: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    aggregator: SecureAggregator | None = None,
    model: nn.Module | None = None,
) -> Simulation:
    """Load the data, partition it, and build the federation on the in-process engine.

    Parameters
    ----------
    config : ExperimentConfig
    observers : sequence of Observer
    dataset : Dataset, optional
        Train and test on this dataset instead of ``config.data.dataset`` (the partition and
        everything else still follow the config); e.g. an attacker's chosen examples.
    extra : mapping of int to (x, y), optional
        Examples appended to a client's partition after partitioning (e.g. audit canaries).
    aggregator : privfed.secure.SecureAggregator, optional
        Use this aggregator instead of the one ``config.secure`` describes; e.g. plain
        aggregation for an attacker's reference models.
    model : torch.nn.Module, optional
        Train a deep copy of this model instead of building ``config.model`` (see
        :func:`build_parts`).

    Raises
    ------
    ConfigError
        When the configuration does not fit the data (e.g. more clients than samples).
    privfed.data.DatasetNotFoundError
        When a dataset that needs files is not in the data directory and cannot be fetched.
    privfed.data.DataFormatError
        When a site's file is malformed.
    """
    dataset, partitions = load_partitioned(config, dataset)
    parts = build_parts(config, dataset, model=model)
    shared = training_tensors(dataset)
    clients = [build_client(config, dataset, p, client_id, (extra or {}).get(client_id), shared)
               for client_id, p in enumerate(partitions)]
    aggregator = aggregator or build_secure_aggregator(config, parts)
    engine = InProcessEngine(
        parts.workspace, clients, trainer=parts.trainer,
        aggregation=SecureAggregation(aggregator),
        pipeline=parts.pipeline, weighting=parts.weighting, policy=parts.policy,
        evaluation=build_evaluation(config, parts, aggregator),
        vectorise=config.federation.vectorise,
    )
    server = build_server(config, parts, engine, dataset, observers)
    return Simulation(config, dataset, partitions, server)


def _secret_sampling(config: ExperimentConfig) -> Callable[[int], np.ndarray] | None:
    """Secure uniforms for the client sampler (Poisson or fixed-size) when user-level DP's
    amplification by sampling relies on nobody regenerating who took part; None: the
    seeded sampler (a cyclic schedule draws nothing)."""
    if config.privacy.secure_mode and config.privacy.user_level:
        from privfed.privacy.csprng import ChaChaRandom

        return ChaChaRandom().random
    return None


def _planned_participations(config: ExperimentConfig, sampler: ClientSampler) -> int:
    """The rounds (FedBuff: updates) a client is planned to contribute, which a target
    epsilon is calibrated for; a client that would contribute more stops at its budget."""
    fed = config.federation
    if sampler.groups is not None:  # cyclic: once every b rounds
        return -(-fed.rounds // sampler.groups)
    if fed.buffer_size is None:
        return planned_participations(fed.rounds, sampler.rate)
    # FedBuff: the T * K updates go to the clients about uniformly.
    return planned_participations(fed.rounds * fed.buffer_size, 1 / sampler.num_clients)


def run_experiment(
    config: ExperimentConfig,
    *,
    observers: Sequence[Observer] = (),
    on_round: Callable[[RoundRecord], None] | None = None,
    model: nn.Module | None = None,
) -> History:
    """Build the federation described by ``config`` and train it; return its history.

    ``model``, if given, is trained (a deep copy, from its current weights) instead of
    ``config.model``, which then only names it (see :func:`build_parts`).
    """
    return build_simulation(config, observers, model=model).run(on_round)
