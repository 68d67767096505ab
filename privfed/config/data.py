"""The ``[data]`` section: the dataset and its split across clients."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from privfed.config.validation import ConfigError, Range, Rule, check_choice, check_rules
from privfed.data import DATASETS, PARTITIONERS
from privfed.data.digest import builtin_data_tokens, site_data_tokens
from privfed.data.scaling import SCALINGS

__all__ = ["EMBEDDED_SIZES", "FILE_FORMATS", "RULES", "SITE_SCALINGS", "DataConfig"]

FILE_FORMATS = ("csv", "parquet", "image_folder", "npz", "python")
"""``data.dataset`` values that read a site's own files (``data.path``, ``data.client_paths``)."""

SITE_SCALINGS = ("site", "unit", "centered", "none")
"""Scalings of a site's own files: "site" standardises each client's data with statistics of
that client's own training data (never pooled); "unit" and "centered" use the public pixel
range (images only); "none" leaves the values."""

EMBEDDED_SIZES = {"digits": (1797, 10), "breast_cancer": (569, 2)}
"""Examples and classes of each embedded dataset, which ``data.test_fraction`` splits (so the
split is checked when the config is read)."""

RULES: dict[str, Rule] = {
    "num_clients": Range(1),
    "alpha": Range(0, low_open=True),
    "min_partition_size": Range(1),
    "shards_per_client": Range(1),
    "samples_per_client": Range(1),
    "test_fraction": Range(0, 1, low_open=True, high_open=True),
    "split_seed": Range(0, 2**32 - 1),
    "validation_fraction": Range(0, 1, high_open=True),
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
        Held-out share for datasets without an official test split (the embedded ones and a
        site's single ``path``), in (0, 1); both parts must hold an example of every class
        (embedded: checked here; a site's file: checked when it is read).
    split_seed : int
        Seed of that train/test split (fixed, independent of the experiment seed), in
        [0, 2**32 - 1].
    scaling : str or None
        Built-in datasets: "centered" (pixels to [-1, 1], the image default), "standard"
        (the embedded datasets' default), "unit" or "none"; a site's files: one of
        :data:`SITE_SCALINGS`. None uses the default ("site" for a site's files).
    path : str or None
        A site's own data (``dataset`` one of :data:`FILE_FORMATS`): the CSV / Parquet /
        ``.npz`` file, the image folder (``root/<class>/<image>``), or for "python" the
        import path ``package.module:function``. Partitioned like a built-in dataset, or by
        ``group_column`` (partition "natural").
    client_paths : list of str or None
        One file per client (partition "natural"): client ``i`` holds ``client_paths[i]``.
    test_path : str or None
        An optional central test set in the same format. Without it a single ``path`` split
        by a partitioner holds out ``test_fraction``; a natural partition has no central
        test set (use federated evaluation).
    label_column : str
        Tabular files: the label's column.
    feature_columns : list of str or None
        Tabular files: the feature columns (categorical ones included); None: every column
        but the label and the group column. A deployment's server needs them listed.
    categorical : dict of str to list of str
        Tabular files: each categorical column's categories, one-hot encoded in this order.
    classes : list of str or None
        The label values in class order; None: the sorted labels found (class folders for
        images). A deployment's server needs them listed.
    group_column : str or None
        Tabular files: the column naming each row's client (partition "natural").
    image_size : list of int or None
        Images: ``[height, width]`` every image is resized to.
    channels : int or None
        Images: 1 (grayscale) or 3 (RGB); None: from the files.
    options : dict
        "python": keyword arguments of the function.
    validation_fraction : float
        Share of each client's training data it holds out for federated evaluation, in
        [0, 1); 0 holds out nothing.
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
    path: str | None = None
    client_paths: list[str] | None = None
    test_path: str | None = None
    label_column: str = "label"
    feature_columns: list[str] | None = None
    categorical: dict[str, list[str]] = field(default_factory=dict)
    classes: list[str] | None = None
    group_column: str | None = None
    image_size: list[int] | None = None
    channels: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    validation_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_choice("data.dataset", self.dataset, sorted([*DATASETS, *FILE_FORMATS]))
        check_choice("data.partition", self.partition, sorted([*PARTITIONERS, "natural"]))
        check_rules("data", self, RULES)
        if self.is_site_data:
            self._check_site_fields()
        else:
            self._check_builtin_fields()
        if self.dataset in EMBEDDED_SIZES:
            self._check_embedded_split(*EMBEDDED_SIZES[self.dataset])
        if self.samples_per_client is not None and self.partition != "iid":
            raise ConfigError(
                f"data.samples_per_client applies only to partition 'iid', "
                f"not {self.partition!r}"
            )

    @property
    def is_site_data(self) -> bool:
        """Whether the data is a site's own files rather than a built-in dataset."""
        return self.dataset in FILE_FORMATS

    @property
    def site_scaling(self) -> str:
        """The scaling of a site's files ("site" unless ``scaling`` says otherwise)."""
        return self.scaling or "site"

    def _check_builtin_fields(self) -> None:
        if self.scaling is not None:
            check_choice("data.scaling", self.scaling, SCALINGS)
        if self.partition == "natural":
            raise ConfigError("data.partition = 'natural' needs a site's own files "
                              f"(data.dataset one of {list(FILE_FORMATS)}), not "
                              f"{self.dataset!r}")
        site_only = ("path", "client_paths", "test_path", "group_column", "feature_columns",
                     "classes", "image_size", "channels")
        for name in (*site_only, "categorical", "options"):
            if getattr(self, name) not in (None, {}):
                raise ConfigError(f"data.{name} applies only to a site's own files "
                                  f"(data.dataset one of {list(FILE_FORMATS)}), not "
                                  f"{self.dataset!r}")

    def _check_embedded_split(self, examples: int, classes: int) -> None:
        """Both parts of the stratified split hold an example of every class (what
        scikit-learn's ``train_test_split`` needs): ``ceil(test_fraction * examples)`` test
        examples, the rest for training."""
        held = math.ceil(self.test_fraction * examples)
        if classes <= held <= examples - classes:
            return
        low, high = (classes - 1) / examples, (examples - classes) / examples
        raise ConfigError(
            f"data.test_fraction must be in ({low:.4g}, {high:.4g}] for {self.dataset!r} "
            f"({examples} examples, {classes} classes: the test and the training split each "
            f"need an example of every class), got {self.test_fraction!r}")

    def _check_site_fields(self) -> None:
        check_choice("data.scaling", self.site_scaling, SITE_SCALINGS)
        if (self.path is None) == (self.client_paths is None):
            raise ConfigError(f"data.dataset = {self.dataset!r} reads a site's files: set "
                              "exactly one of data.path (one file) and data.client_paths "
                              "(one file per client)")
        natural = self.client_paths is not None or self.group_column is not None
        if natural != (self.partition == "natural"):
            raise ConfigError("data.partition = 'natural' goes with data.client_paths or "
                              "data.group_column (a client per file or per group), got "
                              f"partition {self.partition!r}")
        if self.client_paths is not None and len(self.client_paths) != self.num_clients:
            raise ConfigError(f"data.client_paths names {len(self.client_paths)} files but "
                              f"data.num_clients = {self.num_clients}: one file per client")
        if self.image_size is not None and (
                len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"data.image_size must be [height, width] with both >= 1, got "
                              f"{self.image_size}")
        if self.classes is not None and (
                len(set(self.classes)) != len(self.classes) or len(self.classes) < 2):
            raise ConfigError(f"data.classes must list at least 2 distinct labels, got "
                              f"{self.classes}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"data.channels must be 1 (grayscale) or 3 (RGB), got "
                              f"{self.channels}")

    def content_tokens(self) -> dict[str, list[str]]:
        """The content of the data files this config reads, for the run's identity
        (:mod:`privfed.data.digest`): ``{"files": [...]}`` for a built-in dataset read from
        ``data_dir`` (each file ``"official"`` or its SHA-256), ``{"train": [...], "test":
        [...]}`` for a site's files; empty for the embedded datasets."""
        if not self.is_site_data:
            files = builtin_data_tokens(self.dataset, self.data_dir)
            return {"files": files} if files else {}
        tokens = {"train": site_data_tokens(self.dataset, self.client_paths or [self.path])}
        if self.test_path is not None:
            tokens["test"] = site_data_tokens(self.dataset, [self.test_path])
        return tokens

    def partitioner_params(self) -> dict[str, Any]:
        """The keyword arguments of the configured partitioner."""
        return {
            "iid": {"samples_per_client": self.samples_per_client},
            "dirichlet": {"alpha": self.alpha, "min_size": self.min_partition_size},
            "shards": {"shards_per_client": self.shards_per_client},
            "quantity_skew": {"alpha": self.alpha, "min_size": self.min_partition_size},
        }[self.partition]
