"""Each client's data from a config: the dataset, its partition, each client's local split.

:func:`load_partitioned` gives the simulation's pooled dataset (a built-in one, or a site's
own files, :mod:`privfed.data.sites`) and each client's indices; :func:`client_arrays` turns
one client's indices into its training and validation arrays (a seeded local hold-out, and
for a site's files its own standardisation). :func:`load_site` is what a deployed site runs on
its own file alone; :class:`DataSchema` is what the server and every site know of the data
without reading any of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from privfed.config import ConfigError, ExperimentConfig
from privfed.config.data import DataConfig
from privfed.data import DataFormatError, Dataset, load_dataset, make_partitioner
from privfed.data.files import FileSpec, stratified_holdout
from privfed.data.sites import load_site_dataset, standardize_client
from privfed.federated import Client, derive_seed

__all__ = [
    "ClientArrays",
    "DataSchema",
    "build_client",
    "client_arrays",
    "client_from_arrays",
    "client_rows",
    "declared_schema",
    "file_spec",
    "load_configured_dataset",
    "load_partitioned",
    "load_site",
    "training_tensors",
]

_HOLDOUT_STREAM = 6


@dataclass(frozen=True)
class DataSchema:
    """What every party knows of the data without reading it.

    Attributes
    ----------
    input_shape : tuple of int
        One example's shape, ``(F,)`` or ``(C, H, W)``.
    num_classes : int
    reference_size : int or None
        A public stand-in for a client's number of training examples (the simulation's
        mean); None where no party may know it (a deployment's server).
    """

    input_shape: tuple[int, ...]
    num_classes: int
    reference_size: int | None = None

    @classmethod
    def of(cls, dataset: Dataset, num_clients: int) -> DataSchema:
        """The schema of a simulation's pooled dataset split among ``num_clients``."""
        return cls(dataset.input_shape, dataset.num_classes,
                   max(1, dataset.num_train // num_clients))


@dataclass(frozen=True)
class ClientArrays:
    """One client's data: training arrays and the local validation hold-out (maybe empty).

    Attributes
    ----------
    x, y : numpy.ndarray
        float32 inputs and int64 labels it trains on.
    x_val, y_val : numpy.ndarray
        Its held-out examples (``data.validation_fraction`` of its data).
    """

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def file_spec(data: DataConfig, path: str | None = None) -> FileSpec:
    """How to read the site files of ``data`` (``path`` overrides the configured one)."""
    paths = data.client_paths or [data.path]
    return FileSpec(
        format=data.dataset, path=path or paths[0], label_column=data.label_column,
        feature_columns=None if data.feature_columns is None else tuple(data.feature_columns),
        categorical={k: tuple(v) for k, v in data.categorical.items()},
        classes=None if data.classes is None else tuple(data.classes),
        image_size=None if data.image_size is None else tuple(data.image_size),
        channels=data.channels, group_column=data.group_column, options=dict(data.options),
    )


def load_configured_dataset(config: ExperimentConfig) -> Dataset:
    """The pooled dataset of ``config.data`` (name or files, split and scaling)."""
    return _load(config)[0]


def load_partitioned(
    config: ExperimentConfig, dataset: Dataset | None = None
) -> tuple[Dataset, list[np.ndarray]]:
    """The config's dataset (or ``dataset``) and each client's training indices.

    Raises
    ------
    ConfigError
        When the partition does not fit the data (e.g. more clients than samples, or a
        natural partition with another number of groups than ``data.num_clients``).
    privfed.data.DatasetNotFoundError
        When a dataset that needs files is not in the data directory and cannot be fetched.
    privfed.data.DataFormatError
        When a site's file is malformed.
    """
    data = config.data
    natural = None
    if dataset is None:
        dataset, natural = _load(config)
        _check_test_split(config, dataset)
    if natural is not None:
        if len(natural) != data.num_clients:
            raise ConfigError(f"data.group_column {data.group_column!r} names {len(natural)} "
                              f"clients but data.num_clients = {data.num_clients}")
        return dataset, natural
    try:
        partitioner = make_partitioner(data.partition, **data.partitioner_params())
        partitions = partitioner.split(dataset.y_train, data.num_clients, seed=config.seed)
    except ValueError as err:
        raise ConfigError(f"data.partition {data.partition!r} cannot split {dataset.num_train} "
                          f"training examples among data.num_clients = {data.num_clients} "
                          f"clients: {err}") from None
    return dataset, list(partitions)


def _check_test_split(config: ExperimentConfig, dataset: Dataset) -> None:
    """A site's single file split by ``data.test_fraction`` must give a test set (an empty
    one would leave the run without its central evaluation)."""
    data = config.data
    if data.is_site_data and data.test_path is None and data.partition != "natural" and (
            dataset.num_test == 0):
        raise ConfigError(
            f"data.test_fraction = {data.test_fraction!r} holds out no example of the "
            f"{dataset.num_train} in {data.path}: raise it (each class with at least 2 "
            "examples gives about this share of them to the test set), or give data.test_path")


def client_rows(
    config: ExperimentConfig, partition: np.ndarray, labels: np.ndarray, client_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Client ``client_id``'s training and held-out rows of the pooled dataset.

    Parameters
    ----------
    config : ExperimentConfig
    partition : numpy.ndarray
        int64, the client's rows of the pooled training set.
    labels : numpy.ndarray
        The pooled training labels.
    client_id : int

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        int64 rows it trains on and rows of its validation hold-out
        (``data.validation_fraction`` of ``partition``, seeded by the experiment seed and
        the client id).
    """
    seed = derive_seed(derive_seed(config.seed, _HOLDOUT_STREAM), client_id)
    keep, held = stratified_holdout(labels[partition], config.data.validation_fraction, seed)
    return partition[keep], partition[held]


def client_arrays(
    config: ExperimentConfig, dataset: Dataset, partition: np.ndarray, client_id: int
) -> ClientArrays:
    """Client ``client_id``'s examples ``partition`` of ``dataset``, less its validation
    hold-out (:func:`client_rows`), standardised with its own statistics under "site"
    scaling."""
    keep, held = client_rows(config, partition, dataset.y_train, client_id)
    x, x_val = dataset.x_train[keep], dataset.x_train[held]
    if _scaled_per_client(config):
        x, x_val = standardize_client(x, x_val)
    return ClientArrays(x, dataset.y_train[keep], x_val, dataset.y_train[held])


def build_client(
    config: ExperimentConfig, dataset: Dataset, partition: np.ndarray, client_id: int,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    shared: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Client:
    """Client ``client_id`` holding the examples ``partition`` of ``dataset`` (less its
    validation hold-out, :func:`privfed.clientdata.client_rows`), plus ``extra`` examples
    appended for training (e.g. audit canaries).

    Its examples stay rows of the pooled training set, gathered when the client trains
    (:meth:`privfed.federated.Client.from_rows`), unless they are copied anyway: ``extra``
    examples, or a site's own standardisation.

    Parameters
    ----------
    shared : (torch.Tensor, torch.Tensor), optional
        ``dataset``'s training examples and labels as tensors (:func:`training_tensors`),
        made once for all the clients; default: made here.
    """
    if extra is not None or _scaled_per_client(config):
        return client_from_arrays(client_arrays(config, dataset, partition, client_id),
                                  client_id, extra)
    x, y = shared or training_tensors(dataset)
    keep, held = client_rows(config, partition, dataset.y_train, client_id)
    return Client.from_rows(client_id, x, y, torch.from_numpy(keep), torch.from_numpy(held))


def training_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``dataset``'s pooled training examples and labels as tensors sharing its memory."""
    return torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)


def client_from_arrays(
    arrays: ClientArrays, client_id: int, extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> Client:
    """A :class:`~privfed.federated.Client` of one client's arrays."""
    x, y = torch.from_numpy(arrays.x), torch.from_numpy(arrays.y)
    if extra is not None:
        x = torch.cat([x, torch.as_tensor(extra[0], dtype=x.dtype)])
        y = torch.cat([y, torch.as_tensor(extra[1], dtype=y.dtype)])
    validation = (torch.from_numpy(arrays.x_val), torch.from_numpy(arrays.y_val))
    return Client(client_id, x, y, validation)


def _scaled_per_client(config: ExperimentConfig) -> bool:
    """Whether each client standardises its examples with its own statistics."""
    return config.data.is_site_data and config.data.site_scaling == "site"


def load_site(config: ExperimentConfig, spec: FileSpec, client_id: int) -> ClientArrays:
    """What a deployed site trains on: its own file only, checked against the config's
    schema (:func:`declared_schema`).

    Raises
    ------
    privfed.data.DataFormatError
        The file is malformed or does not fit the declared features and classes.
    """
    data = config.data
    dataset, _ = load_site_dataset(spec, [spec.path], test_path=None, natural=True,
                                   test_fraction=data.test_fraction,
                                   split_seed=data.split_seed, scaling=data.site_scaling)
    schema = declared_schema(config)
    if dataset.input_shape != schema.input_shape:
        raise DataFormatError(f"{spec.path}: its examples have shape {dataset.input_shape}, the "
                              f"config declares {schema.input_shape} (data.feature_columns, "
                              "data.categorical, data.image_size, data.channels)")
    return client_arrays(config, dataset, np.arange(dataset.num_train), client_id)


def declared_schema(config: ExperimentConfig) -> DataSchema:
    """The schema a deployment's server (which reads no data) takes from the config.

    Raises
    ------
    ConfigError
        When the config does not declare it: a table needs ``data.feature_columns`` and
        ``data.classes``; images need ``data.image_size``, ``data.channels`` and
        ``data.classes``.
    """
    data = config.data
    if not data.is_site_data:
        raise ConfigError(f"data.dataset = {data.dataset!r} is built in: a site's own files "
                          "(data.dataset csv, parquet, image_folder, npz) are read by each site")
    tabular = data.dataset in ("csv", "parquet")
    needed = ("feature_columns", "classes") if tabular else ("image_size", "channels",
                                                             "classes")
    missing = [f"data.{name}" for name in needed if getattr(data, name) is None]
    if data.dataset == "python" or missing:
        raise ConfigError(
            "a deployment's server reads no data file, so the config must declare the data's "
            f"shape: set {', '.join(missing) or 'a table or image format'} (data.dataset = "
            f"{data.dataset!r})")
    if tabular:
        width = sum(len(data.categorical.get(c, [])) or 1 for c in data.feature_columns)
        return DataSchema((width,), len(data.classes))
    height, width = data.image_size
    return DataSchema((data.channels, height, width), len(data.classes))


def _load(config: ExperimentConfig) -> tuple[Dataset, list[np.ndarray] | None]:
    data = config.data
    if not data.is_site_data:
        return load_dataset(data.dataset, data_dir=data.data_dir, split_seed=data.split_seed,
                            test_fraction=data.test_fraction, scaling=data.scaling), None
    return load_site_dataset(
        file_spec(data), data.client_paths or [data.path], test_path=data.test_path,
        natural=data.partition == "natural", test_fraction=data.test_fraction,
        split_seed=data.split_seed, scaling=data.site_scaling,
    )
