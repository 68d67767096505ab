"""The ``[data]`` section: the dataset and its split across clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privfed.config.validation import ConfigError, Range, Rule, check_choice, check_rules
from privfed.data import DATASETS, PARTITIONERS
from privfed.data.scaling import SCALINGS

__all__ = ["RULES", "DataConfig"]

RULES: dict[str, Rule] = {
    "num_clients": Range(1),
    "alpha": Range(0, low_open=True),
    "min_partition_size": Range(1),
    "shards_per_client": Range(1),
    "samples_per_client": Range(1),
    "test_fraction": Range(0, 1, low_open=True, high_open=True),
    "split_seed": Range(0, 2**32 - 1),
}
"""The rule of each numeric ``[data]`` field; the names are checked against the registries
of ``privfed.data`` (which a user can extend)."""


@dataclass(frozen=True)
class DataConfig:
    """Dataset and how it is split across clients.

    Attributes
    ----------
    dataset : str
        A name from ``privfed.data.DATASETS``: "digits" and "breast_cancer" are embedded;
        "mnist", "fashion_mnist" and MedMNIST names are read from ``data_dir``.
    data_dir : str or None
        Where downloaded datasets live; default ``$PRIVFED_DATA`` or the user cache dir.
    num_clients : int
        K, the number of clients, >= 1.
    partition : str
        "iid", "dirichlet" (label skew), "shards" (McMahan's pathological non-IID) or
        "quantity_skew".
    alpha : float
        Concentration of the Dirichlet ("dirichlet", "quantity_skew"), > 0; smaller is more
        skewed.
    min_partition_size : int
        Minimum samples per client ("dirichlet", "quantity_skew"), >= 1.
    shards_per_client : int
        Label-sorted shards per client ("shards"), >= 1.
    samples_per_client : int or None
        "iid" only: give each client exactly this many samples (e.g. 10 x 6000 on MNIST).
    test_fraction : float
        Held-out share for datasets without an official test split (embedded ones), in
        (0, 1).
    split_seed : int
        Seed of that train/test split (fixed, independent of the experiment seed), in
        [0, 2**32 - 1].
    scaling : str or None
        "standard", "unit" or "none"; None uses the dataset's default.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    num_clients: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    min_partition_size: int = 10
    shards_per_client: int = 2
    samples_per_client: int | None = None
    test_fraction: float = 0.2
    split_seed: int = 0
    scaling: str | None = None

    def __post_init__(self) -> None:
        check_choice("data.dataset", self.dataset, DATASETS)
        check_choice("data.partition", self.partition, PARTITIONERS)
        if self.scaling is not None:
            check_choice("data.scaling", self.scaling, SCALINGS)
        check_rules("data", self, RULES)
        if self.samples_per_client is not None and self.partition != "iid":
            raise ConfigError(
                f"data.samples_per_client applies only to partition 'iid', "
                f"not {self.partition!r}"
            )

    def partitioner_params(self) -> dict[str, Any]:
        """The keyword arguments of the configured partitioner."""
        return {
            "iid": {"samples_per_client": self.samples_per_client},
            "dirichlet": {"alpha": self.alpha, "min_size": self.min_partition_size},
            "shards": {"shards_per_client": self.shards_per_client},
            "quantity_skew": {"alpha": self.alpha, "min_size": self.min_partition_size},
        }[self.partition]
