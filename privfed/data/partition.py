"""Client partitioners: seeded splits of sample indices among federated clients.

Every partitioner returns one ``int64`` index array per client; no index is
given to two clients. :class:`IIDPartitioner` (without ``samples_per_client``),
:class:`DirichletPartitioner`, :class:`ShardPartitioner` and
:class:`QuantitySkewPartitioner` assign every sample exactly once. The same
labels, ``num_clients`` and ``seed`` always give the same split.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

SEED_SCENARIO_CLIENTS = 10
SEED_SCENARIO_SAMPLES_PER_CLIENT = 6000


def _require_int(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")


def _require_alpha(value: Any) -> None:
    valid = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    if not (valid and math.isfinite(value) and value > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {value!r}")


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError("labels is empty; there is nothing to partition")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {labels.min()}")
    return labels


def _check_min_size(min_size: int, num_clients: int, n: int) -> None:
    if min_size * num_clients > n:
        raise ValueError(
            f"min_size={min_size} is infeasible: {num_clients} clients x {min_size} samples "
            f"= {min_size * num_clients} > {n} samples; allowed min_size <= {n // num_clients}"
        )


def _retries_exhausted(
    min_size: int, max_retries: int, alpha: float, num_clients: int, n: int
) -> ValueError:
    return ValueError(
        f"min_size={min_size} could not be met: no Dirichlet draw gave every one of "
        f"{num_clients} clients at least {min_size} samples in max_retries={max_retries} "
        f"attempts (alpha={alpha}, {n} samples); lower min_size, raise alpha or use fewer clients"
    )


def _cut_counts(proportions: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` items by ``proportions`` (floored cumulative cuts); returns counts."""
    cuts = (np.cumsum(proportions) * total).astype(np.int64)
    cuts[-1] = total
    return np.diff(cuts, prepend=0)


class Partitioner(ABC):
    """Base class: split sample indices among ``num_clients`` clients."""

    def split(self, labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
        """Partition the indices ``0 .. len(labels) - 1``.

        Parameters
        ----------
        labels : numpy.ndarray
            1-D non-negative integer class labels, one per sample.
        num_clients : int
            Number of clients, between 1 and ``len(labels)``.
        seed : int
            Seed of ``numpy.random.default_rng``.

        Returns
        -------
        list of numpy.ndarray
            ``num_clients`` ``int64`` index arrays.

        Raises
        ------
        ValueError
            For invalid labels, ``num_clients`` out of range, or parameters
            infeasible for this many samples.
        """
        labels = _check_labels(labels)
        n = len(labels)
        if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer):
            raise ValueError(f"num_clients must be an integer, got {num_clients!r}")
        if not 1 <= num_clients <= n:
            raise ValueError(
                f"num_clients={num_clients} is out of range for {n} samples; allowed 1..{n}"
            )
        parts = self._split(labels, int(num_clients), np.random.default_rng(seed))
        return [part.astype(np.int64, copy=False) for part in parts]

    @abstractmethod
    def _split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """Partition validated labels; subclasses implement the scheme."""


@dataclass(frozen=True)
class IIDPartitioner(Partitioner):
    """Uniformly random split.

    Exactly ``perm = np.random.default_rng(seed).permutation(n)`` followed by
    ``np.array_split(perm, num_clients)``; with ``samples_per_client=m`` the
    first ``m * num_clients`` entries of ``perm`` are cut into blocks of ``m``.

    Parameters
    ----------
    samples_per_client : int or None
        Fixed client size, or ``None`` to use all samples (sizes differ by at most 1).
    """

    samples_per_client: int | None = None

    def __post_init__(self) -> None:
        if self.samples_per_client is not None:
            _require_int("samples_per_client", self.samples_per_client, 1)

    def _split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        n = len(labels)
        perm = rng.permutation(n)
        m = self.samples_per_client
        if m is None:
            return np.array_split(perm, num_clients)
        if m * num_clients > n:
            raise ValueError(
                f"samples_per_client={m} x num_clients={num_clients} = {m * num_clients} "
                f"exceeds the {n} available samples"
            )
        return list(perm[: m * num_clients].reshape(num_clients, m))


@dataclass(frozen=True)
class _DirichletDraws(Partitioner):
    """Shared parameters of the partitioners that redraw from a Dirichlet until every
    client holds at least ``min_size`` samples."""

    alpha: float
    min_size: int = 10
    max_retries: int = 1000

    def __post_init__(self) -> None:
        _require_alpha(self.alpha)
        _require_int("min_size", self.min_size, 0)
        _require_int("max_retries", self.max_retries, 1)


@dataclass(frozen=True)
class DirichletPartitioner(_DirichletDraws):
    """Label skew: per class, client proportions drawn from ``Dir(alpha)``.

    The scheme of Yurochkin et al. (2019), used by Hsu et al. (2019), NIID-Bench
    and FedLab's ``hetero_dir_partition``: for each class, proportions over
    clients are drawn from a symmetric Dirichlet distribution, clients that
    already hold more than ``n / num_clients`` samples get no further share
    (FedLab's balancing step), and the class's shuffled samples are cut
    accordingly. The whole draw is repeated until every client holds at least
    ``min_size`` samples. Small ``alpha`` (e.g. 0.05) gives clients dominated
    by one or two labels; large ``alpha`` (e.g. 1000) gives near-IID clients.

    Parameters
    ----------
    alpha : float
        Concentration, > 0.
    min_size : int
        Minimum number of samples per client.
    max_retries : int
        Number of draws before giving up.
    """

    def _class_counts(
        self, class_sizes: list[int], num_clients: int, rng: np.random.Generator
    ) -> np.ndarray:
        n = sum(class_sizes)
        held = np.zeros(num_clients, dtype=np.int64)
        counts = np.empty((len(class_sizes), num_clients), dtype=np.int64)
        for c, size in enumerate(class_sizes):
            proportions = rng.dirichlet(np.full(num_clients, float(self.alpha)))
            open_share = proportions * (held < n / num_clients)
            if open_share.sum() > 0:
                proportions = open_share / open_share.sum()
            counts[c] = _cut_counts(proportions, size)
            held += counts[c]
        return counts

    def _split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        n = len(labels)
        _check_min_size(self.min_size, num_clients, n)
        by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        sizes = [len(idx) for idx in by_class]
        for _ in range(self.max_retries):
            counts = self._class_counts(sizes, num_clients, rng)
            if counts.sum(axis=0).min() >= self.min_size:
                break
        else:
            raise _retries_exhausted(self.min_size, self.max_retries, self.alpha, num_clients, n)
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx, row in zip(by_class, counts, strict=True):
            for client, chunk in enumerate(np.split(rng.permutation(idx), np.cumsum(row)[:-1])):
                parts[client].append(chunk)
        return [np.sort(np.concatenate(chunks)) for chunks in parts]


@dataclass(frozen=True)
class ShardPartitioner(Partitioner):
    """Pathological non-IID shards (McMahan et al., 2017).

    Indices are sorted by label (stable sort), cut into
    ``shards_per_client * num_clients`` contiguous shards (sizes differ by at
    most one when the division is not exact) and the shards are dealt to the
    clients in random order, ``shards_per_client`` each. With 2 shards per
    client and classes whose sizes are multiples of the shard size, every
    client holds at most two labels.

    Parameters
    ----------
    shards_per_client : int
        Shards per client, >= 1.
    """

    shards_per_client: int = 2

    def __post_init__(self) -> None:
        _require_int("shards_per_client", self.shards_per_client, 1)

    def _split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        n = len(labels)
        num_shards = self.shards_per_client * num_clients
        if num_shards > n:
            raise ValueError(
                f"shards_per_client={self.shards_per_client} x num_clients={num_clients} "
                f"= {num_shards} shards exceeds the {n} samples"
            )
        shards = np.array_split(np.argsort(labels, kind="stable"), num_shards)
        dealt = rng.permutation(num_shards).reshape(num_clients, self.shards_per_client)
        return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]


@dataclass(frozen=True)
class QuantitySkewPartitioner(_DirichletDraws):
    """Quantity skew: client sizes from ``Dir(alpha)``, labels IID.

    As NIID-Bench's ``iid-diff-quantity``: size proportions are drawn from a
    symmetric Dirichlet distribution until every client gets at least
    ``min_size`` samples, then a random permutation is cut into those sizes.

    Parameters
    ----------
    alpha : float
        Concentration, > 0; smaller is more unequal.
    min_size : int
        Minimum number of samples per client.
    max_retries : int
        Number of draws before giving up.
    """

    def _split(
        self, labels: np.ndarray, num_clients: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        n = len(labels)
        _check_min_size(self.min_size, num_clients, n)
        for _ in range(self.max_retries):
            sizes = _cut_counts(rng.dirichlet(np.full(num_clients, float(self.alpha))), n)
            if sizes.min() >= self.min_size:
                break
        else:
            raise _retries_exhausted(self.min_size, self.max_retries, self.alpha, num_clients, n)
        chunks = np.split(rng.permutation(n), np.cumsum(sizes)[:-1])
        return [np.sort(chunk) for chunk in chunks]


PARTITIONERS: dict[str, type[Partitioner]] = {
    "iid": IIDPartitioner,
    "dirichlet": DirichletPartitioner,
    "shards": ShardPartitioner,
    "quantity_skew": QuantitySkewPartitioner,
}
"""Registry mapping each partitioner name to its class."""


def make_partitioner(name: str, **params: Any) -> Partitioner:
    """Build a partitioner from its registry name and parameters.

    Parameters
    ----------
    name : str
        A key of :data:`PARTITIONERS`.
    **params
        Constructor parameters, e.g. ``alpha=0.5``.

    Returns
    -------
    Partitioner
        The configured partitioner.

    Raises
    ------
    ValueError
        For an unknown name, unknown or missing parameters, or invalid values.
    """
    if name not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {name!r}; allowed: {', '.join(PARTITIONERS)}")
    cls = PARTITIONERS[name]
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    allowed = [f.name for f in fields]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for partitioner {name!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in params]
    if required:
        raise ValueError(f"partitioner {name!r} needs parameter(s) {', '.join(required)}")
    return cls(**params)


def seed_scenario_split(labels: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The project's seed scenario: 10 IID clients with 6000 samples each.

    Intended for MNIST's 60000 training labels, where it equals
    ``IIDPartitioner().split(labels, 10, seed)``.

    Parameters
    ----------
    labels : numpy.ndarray
        Training labels (at least 60000).
    seed : int
        Partition seed.

    Returns
    -------
    list of numpy.ndarray
        10 disjoint index arrays of 6000 indices each.
    """
    partitioner = IIDPartitioner(samples_per_client=SEED_SCENARIO_SAMPLES_PER_CLIENT)
    return partitioner.split(labels, SEED_SCENARIO_CLIENTS, seed)


def label_histogram(
    labels: np.ndarray, partitions: list[np.ndarray], num_classes: int
) -> np.ndarray:
    """Count each client's samples per class.

    Parameters
    ----------
    labels : numpy.ndarray
        1-D integer labels in ``[0, num_classes)``.
    partitions : list of numpy.ndarray
        Index arrays, one per client (as returned by a partitioner).
    num_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        ``int64`` array of shape ``(len(partitions), num_classes)``.

    Raises
    ------
    ValueError
        If labels are not 1-D integers within ``[0, num_classes)``.
    """
    _require_int("num_classes", num_classes, 1)
    labels = _check_labels(labels)
    if labels.max() >= num_classes:
        raise ValueError(
            f"label {labels.max()} out of range for num_classes={num_classes}; "
            f"allowed 0..{num_classes - 1}"
        )
    hist = np.zeros((len(partitions), num_classes), dtype=np.int64)
    for client, indices in enumerate(partitions):
        hist[client] = np.bincount(labels[indices], minlength=num_classes)
    return hist
