"""Datasets and client partitioning for privfed (numpy only; the core converts to torch).

Datasets: :func:`load_dataset` with names in :data:`DATASETS`; embedded
``digits`` and ``breast_cancer`` need no files, ``mnist``, ``fashion_mnist``
and the MedMNIST 2D sets are read from the data directory
(:func:`resolve_data_dir`) or downloaded with checksum verification.

Partitioning: :func:`make_partitioner` with names in :data:`PARTITIONERS`,
and :func:`label_histogram` for per-client label counts.

A site's own files (CSV, Parquet, image folders, ``.npz``, a Python function):
:mod:`privfed.data.files` reads one file, :mod:`privfed.data.sites` a federation's files
with their natural partition.
"""

from privfed.data.dataset import Dataset
from privfed.data.errors import (
    ChecksumError,
    DataFormatError,
    DataIntegrityWarning,
    DatasetNotFoundError,
)
from privfed.data.locate import resolve_data_dir
from privfed.data.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    IIDPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    label_histogram,
    make_partitioner,
    seed_scenario_split,
)
from privfed.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "ChecksumError",
    "DataFormatError",
    "DataIntegrityWarning",
    "Dataset",
    "DatasetNotFoundError",
    "DirichletPartitioner",
    "IIDPartitioner",
    "Partitioner",
    "QuantitySkewPartitioner",
    "ShardPartitioner",
    "label_histogram",
    "load_dataset",
    "make_partitioner",
    "resolve_data_dir",
    "seed_scenario_split",
]
