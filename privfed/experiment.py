"""Build a federation from an :class:`~privfed.config.ExperimentConfig` and train it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privfed.compression import compress_aggregator
from privfed.config import ConfigError, ExperimentConfig
from privfed.data import Dataset, load_dataset, make_partitioner
from privfed.federated import (
    Client,
    ClientSampler,
    History,
    LocalTraining,
    Observer,
    RoundRecord,
    Server,
    bind_flat_parameters,
    derive_seed,
    make_server_optimizer,
)
from privfed.federated.fedbuff import FedBuffServer, LatencyModel
from privfed.models import build_model
from privfed.privacy.factory import build_privacy
from privfed.privacy.ledger import planned_participations
from privfed.privacy.randomness import NoisePolicy
from privfed.secure import make_aggregator

__all__ = [
    "Simulation",
    "build_simulation",
    "load_configured_dataset",
    "load_partitioned",
    "run_experiment",
]

# Independent random streams derived from the experiment seed.
_SAMPLER_STREAM = 1
_BATCH_ORDER_STREAM = 2
_PRIVACY_STREAM = 3
_COMPRESSION_STREAM = 4
_LATENCY_STREAM = 5


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


def load_configured_dataset(config: ExperimentConfig) -> Dataset:
    """The dataset of ``config.data`` (name, directory, split and scaling)."""
    data = config.data
    return load_dataset(data.dataset, data_dir=data.data_dir, split_seed=data.split_seed,
                        test_fraction=data.test_fraction, scaling=data.scaling)


def load_partitioned(
    config: ExperimentConfig, dataset: Dataset | None = None
) -> tuple[Dataset, list[np.ndarray]]:
    """The config's dataset (or ``dataset``) and each client's training indices.

    Raises
    ------
    ConfigError
        When the partition does not fit the data (e.g. more clients than samples).
    privfed.data.DatasetNotFoundError
        When a dataset that needs files is not in the data directory and cannot be fetched.
    """
    data = config.data
    if dataset is None:
        dataset = load_configured_dataset(config)
    try:
        partitioner = make_partitioner(data.partition, **data.partitioner_params())
        partitions = partitioner.split(dataset.y_train, data.num_clients, seed=config.seed)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return dataset, list(partitions)


def build_simulation(
    config: ExperimentConfig,
    observers: Sequence[Observer] = (),
    *,
    dataset: Dataset | None = None,
    extra: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    server_class: type[Server] = Server,
    server_options: Mapping[str, Any] | None = None,
    aggregator: Any | None = None,
) -> Simulation:
    """Load the data, partition it, build the model, clients and server.

    Parameters
    ----------
    config : ExperimentConfig
    observers : sequence of Observer
    dataset : Dataset, optional
        Train and test on this dataset instead of ``config.data.dataset`` (the partition and
        everything else still follow the config); e.g. an attacker's chosen examples.
    extra : mapping of int to (x, y), optional
        Examples appended to a client's partition after partitioning (e.g. audit canaries).
    server_class : type of Server, default Server
        A Server subclass that runs the rounds differently (e.g. over Flower messages).
    server_options : mapping, optional
        Extra keyword arguments of ``server_class``.
    aggregator : optional
        Use this aggregator instead of the one ``config.secure`` describes (compression
        still wraps it); e.g. plain aggregation for an attacker's reference models.

    Raises
    ------
    ConfigError
        When the configuration does not fit the data (e.g. more clients than samples).
    privfed.data.DatasetNotFoundError
        When a dataset that needs files is not in the data directory and cannot be fetched.
    """
    data, fed, seed = config.data, config.federation, config.seed
    dataset, partitions = load_partitioned(config, dataset)
    try:
        model = build_model(
            config.model.name, dataset.input_shape, dataset.num_classes, seed=seed,
            **config.model.options(),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None

    x_train = torch.from_numpy(dataset.x_train)
    y_train = torch.from_numpy(dataset.y_train)
    clients = []
    for cid, idx in enumerate(partitions):
        x, y = x_train[torch.from_numpy(idx)], y_train[torch.from_numpy(idx)]
        if extra and cid in extra:
            x = torch.cat([x, torch.as_tensor(extra[cid][0], dtype=x.dtype)])
            y = torch.cat([y, torch.as_tensor(extra[cid][1], dtype=y.dtype)])
        clients.append(Client(cid, x, y))
    workspace = bind_flat_parameters(model)
    training = LocalTraining(fed.local_epochs, fed.batch_size, fed.lr, fed.mu)
    noise = NoisePolicy(config.privacy.secure_mode, derive_seed(seed, _PRIVACY_STREAM))
    sampler = ClientSampler(data.num_clients, fed.fraction, derive_seed(seed, _SAMPLER_STREAM),
                            poisson=fed.client_sampling == "poisson",
                            uniform=_secret_sampling(config))
    try:
        clients, mechanism = build_privacy(
            config.privacy, clients=clients, sampler=sampler, workspace=workspace,
            rounds=fed.rounds, training=training, noise=noise,
            reference_size=max(1, len(dataset.y_train) // data.num_clients),
            participations=_planned_participations(config, sampler),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    aggregator = compress_aggregator(
        config.compression,
        aggregator or _secure_aggregator(config, mechanism.min_cohort),
        secure_kind=config.secure.kind,
        seed=derive_seed(seed, _COMPRESSION_STREAM),
        control_length=mechanism.transformed_length(workspace.spec.numel) - workspace.spec.numel,
    )
    common = {
        "training": training,
        "sampler": sampler,
        "optimizer": make_server_optimizer(fed.server_optimizer, **fed.server_optimizer_params()),
        "aggregator": aggregator,
        "test_data": (torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)),
        "batch_seed": lambda r, cid: derive_seed(seed, _BATCH_ORDER_STREAM, r, cid),
        "eval_every": fed.eval_every,
        "observers": observers,
        "mechanism": mechanism,
    }
    if fed.buffer_size is None:
        server = server_class(workspace, clients, **common, **(server_options or {}))
    else:
        server = FedBuffServer(
            workspace,
            clients,
            buffer_size=fed.buffer_size,
            concurrency=fed.concurrency or sampler.per_round,
            latency=LatencyModel(data.num_clients, fed.latency_spread,
                                 derive_seed(seed, _LATENCY_STREAM)),
            staleness_exponent=fed.staleness_exponent,
            **common,
        )
    return Simulation(config, dataset, partitions, server)


def _secure_aggregator(config: ExperimentConfig, min_cohort: int) -> Any:
    """The configured secure aggregator; under distributed DP its clients refuse to let a
    sum of fewer than K_min clients be decoded (``min_clients``)."""
    params = config.secure.aggregator_params()
    if min_cohort > 1 and config.secure.kind in ("he", "masking"):
        params["min_clients"] = min_cohort
    if config.secure.kind == "masking":
        params["cohort_size"] = config.planned_cohort_size()
    return make_aggregator(config.secure.kind, **params)


def _secret_sampling(config: ExperimentConfig) -> Callable[[int], np.ndarray] | None:
    """Secure uniforms for the client sampler when user-level DP's amplification by
    sampling relies on nobody regenerating who took part; None: the seeded sampler."""
    if config.privacy.secure_mode and config.privacy.user_level:
        from privfed.privacy.csprng import ChaChaRandom

        return ChaChaRandom().random
    return None


def _planned_participations(config: ExperimentConfig, sampler: ClientSampler) -> int:
    """The rounds (FedBuff: updates) a client is planned to contribute, which a target
    epsilon is calibrated for; a client that would contribute more stops at its budget."""
    fed = config.federation
    if fed.buffer_size is None:
        return planned_participations(fed.rounds, sampler.rate)
    # FedBuff: the T * K updates go to the clients about uniformly.
    return planned_participations(fed.rounds * fed.buffer_size, 1 / sampler.num_clients)


def run_experiment(
    config: ExperimentConfig,
    *,
    observers: Sequence[Observer] = (),
    on_round: Callable[[RoundRecord], None] | None = None,
) -> History:
    """Build the federation described by ``config`` and train it; return its history."""
    return build_simulation(config, observers).run(on_round)
