"""The typed experiment configuration: one frozen dataclass per section.

Every section validates its own fields in ``__post_init__``, so an invalid value fails where
it is set with an error that names the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from privfed.compression.settings import CompressionConfig, check_compatible
from privfed.config.validation import ConfigError, check_choice, check_range
from privfed.data import DATASETS, PARTITIONERS
from privfed.data.scaling import SCALINGS
from privfed.federated.optimizers import SERVER_OPTIMIZERS
from privfed.models import MODELS
from privfed.privacy.settings import PrivacyConfig
from privfed.secure import AGGREGATORS, HEParams, MaskingParams
from privfed.secure.wire import SERVER_MODELS

__all__ = [
    "DataConfig",
    "ModelConfig",
    "FederationConfig",
    "PrivacyConfig",
    "SecureConfig",
    "CompressionConfig",
    "AttacksConfig",
    "ExperimentConfig",
]


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
        K, the number of clients.
    partition : str
        "iid", "dirichlet" (label skew), "shards" (McMahan's pathological non-IID) or
        "quantity_skew".
    alpha : float
        Concentration of the Dirichlet ("dirichlet", "quantity_skew"); smaller is more skewed.
    min_partition_size : int
        Minimum samples per client ("dirichlet", "quantity_skew").
    shards_per_client : int
        Label-sorted shards per client ("shards").
    samples_per_client : int or None
        "iid" only: give each client exactly this many samples (e.g. 10 x 6000 on MNIST).
    test_fraction : float
        Held-out share for datasets without an official test split (embedded ones).
    split_seed : int
        Seed of that train/test split (fixed, independent of the experiment seed).
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
        check_range("data.num_clients", self.num_clients, low=1)
        check_range("data.alpha", self.alpha, low=0, low_open=True)
        check_range("data.min_partition_size", self.min_partition_size, low=1)
        check_range("data.shards_per_client", self.shards_per_client, low=1)
        if self.samples_per_client is not None:
            check_range("data.samples_per_client", self.samples_per_client, low=1)
            if self.partition != "iid":
                raise ConfigError(
                    f"data.samples_per_client applies only to partition 'iid', "
                    f"not {self.partition!r}"
                )
        check_range("data.test_fraction", self.test_fraction, low=0, high=1, low_open=True,
                     high_open=True)

    def partitioner_params(self) -> dict[str, Any]:
        """The keyword arguments of the configured partitioner."""
        return {
            "iid": {"samples_per_client": self.samples_per_client},
            "dirichlet": {"alpha": self.alpha, "min_size": self.min_partition_size},
            "shards": {"shards_per_client": self.shards_per_client},
            "quantity_skew": {"alpha": self.alpha, "min_size": self.min_partition_size},
        }[self.partition]


@dataclass(frozen=True)
class ModelConfig:
    """Model architecture.

    Attributes
    ----------
    name : str
        "logistic", "mlp" or "cnn"; input shape and classes come from the dataset.
    hidden : list of int
        Hidden layer widths of "mlp" (McMahan's 2NN: [200, 200]).
    """

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [200, 200])

    def __post_init__(self) -> None:
        check_choice("model.name", self.name, MODELS)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden must be a non-empty list of widths >= 1, "
                              f"got {self.hidden}")

    def options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`privfed.models.build_model`."""
        return {"hidden": tuple(self.hidden)} if self.name == "mlp" else {}


_SERVER_LR_DEFAULT = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.01}


@dataclass(frozen=True)
class FederationConfig:
    """The FedAvg protocol.

    Attributes
    ----------
    rounds : int
        Communication rounds T.
    fraction : float
        C, the fraction of clients sampled per round, in (0, 1].
    client_sampling : str
        "fixed" (exactly round(C*K) clients per round) or "poisson" (each client independently
        with probability C; what user-level DP accounting assumes).
    local_epochs, batch_size, lr : int, int, float
        E, B and the learning rate of local SGD.
    mu : float
        FedProx proximal term (0 = FedAvg).
    server_optimizer : str
        "fedavg", "fedavgm" or "fedadam".
    server_lr : float or None
        Server learning rate; None = 1.0 for fedavg/fedavgm, 0.01 for fedadam.
    server_momentum : float
        FedAvgM momentum.
    server_beta1, server_beta2, server_tau : float
        FedAdam moment decays and adaptivity.
    eval_every : int
        Evaluate the global model every this many rounds (and after the last).
    buffer_size : int or None
        None: synchronous rounds. K: asynchronous buffered aggregation (FedBuff, Nguyen et
        al. 2022): the server steps whenever K updates have arrived, and ``rounds`` counts
        server steps.
    concurrency : int or None
        FedBuff: clients training at once (None: round(fraction * num_clients)).
    latency_spread : float
        FedBuff: std of the log of each client's simulated job duration (0: all equal).
    staleness_exponent : float
        FedBuff: an update s versions stale is weighted by (1 + s) ** -staleness_exponent.
    """

    rounds: int = 30
    fraction: float = 1.0
    client_sampling: str = "fixed"
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 0.1
    mu: float = 0.0
    server_optimizer: str = "fedavg"
    server_lr: float | None = None
    server_momentum: float = 0.9
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3
    eval_every: int = 1
    buffer_size: int | None = None
    concurrency: int | None = None
    latency_spread: float = 0.0
    staleness_exponent: float = 0.5

    def __post_init__(self) -> None:
        check_range("federation.rounds", self.rounds, low=1)
        if self.buffer_size is not None:
            check_range("federation.buffer_size", self.buffer_size, low=1)
        if self.concurrency is not None:
            check_range("federation.concurrency", self.concurrency, low=1)
        check_range("federation.latency_spread", self.latency_spread, low=0)
        check_range("federation.staleness_exponent", self.staleness_exponent, low=0)
        check_range("federation.fraction", self.fraction, low=0, high=1, low_open=True)
        check_choice("federation.client_sampling", self.client_sampling, ("fixed", "poisson"))
        check_range("federation.local_epochs", self.local_epochs, low=1)
        check_range("federation.batch_size", self.batch_size, low=1)
        check_range("federation.lr", self.lr, low=0, low_open=True)
        check_range("federation.mu", self.mu, low=0)
        check_choice("federation.server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
        if self.server_lr is not None:
            check_range("federation.server_lr", self.server_lr, low=0, low_open=True)
        check_range("federation.eval_every", self.eval_every, low=1)

    def server_optimizer_params(self) -> dict[str, float]:
        """Keyword arguments of the configured server optimizer."""
        lr = self.server_lr if self.server_lr is not None else _SERVER_LR_DEFAULT[
            self.server_optimizer]
        return {
            "fedavg": {"lr": lr},
            "fedavgm": {"lr": lr, "momentum": self.server_momentum},
            "fedadam": {"lr": lr, "beta1": self.server_beta1, "beta2": self.server_beta2,
                        "tau": self.server_tau},
        }[self.server_optimizer]


@dataclass(frozen=True)
class SecureConfig:
    """Secure aggregation: what the server can read of the clients' updates.

    Attributes
    ----------
    kind : str
        "none" (float32 in the clear), "he" (TenSEAL CKKS: the server adds ciphertexts) or
        "masking" (Bonawitz et al. 2017 pairwise masks with dropout recovery).
    clip : float or None
        Largest |value| per coordinate a client may send; None: "masking" uses 10.0, the
        others check only what their encoding can represent.
    out_of_range : str
        "error" (reject the update; the default, nothing is changed silently) or "clip".
    ring_bits : int
        "masking": masked sums live in Z_(2^ring_bits).
    threshold : int or None
        "masking": Shamir threshold t, fixed before the round (None: derived from the
        cohort size and the threat model, about 2/3 of the group). A t the threat model
        does not allow is refused.
    neighbourhood_degree : int, "secagg+" or None
        "masking": None for the complete graph (O(n^2)); "secagg+" for SecAgg+ with the
        smallest degree that meets the threat model; an even k for that degree (refused
        if it does not meet the threat model).
    cohort_size : int or None
        "masking": the clients a round is planned for, which t and k are derived for
        (None: the clients per round, or FedBuff's buffer size).
    corrupt_fraction : float
        "masking": fraction of a round's clients that may collude with the server.
    dropout_fraction : float
        "masking": fraction of a round's clients that may drop out.
    security_bits : int
        "masking": the parameters keep inputs private except with probability
        2^-security_bits.
    server_model : str
        "malicious" (the default; masking: a signed consistency round before any share is
        revealed; HE: the key holder decrypts only the verified sum of the round's signed
        uploads, which it then holds) or "honest-but-curious" (masking skips that round;
        the HE key holder gets the aggregate only and trusts the server's framing).
    poly_modulus_degree : int
        "he": CKKS ring degree (8192: 4096 values per ciphertext, 128-bit secure).
    coeff_mod_bit_sizes : list of int
        "he": CKKS coefficient moduli; [60, 40] is the cheapest secure choice for addition.
    scale_bits : int
        "he": fixed-point precision of the encoding.
    """

    kind: str = "none"
    clip: float | None = None
    out_of_range: str = "error"
    ring_bits: int = 32
    threshold: int | None = None
    neighbourhood_degree: int | str | None = None
    cohort_size: int | None = None
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    security_bits: int = 40
    server_model: str = "malicious"
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: list[int] = field(default_factory=lambda: [60, 40])
    scale_bits: int = 40

    def __post_init__(self) -> None:
        check_choice("secure.kind", self.kind, AGGREGATORS)
        check_choice("secure.out_of_range", self.out_of_range, ("error", "clip"))
        check_choice("secure.server_model", self.server_model, SERVER_MODELS)
        try:  # The aggregators' own parameter objects validate cheaply (no key generation).
            if self.kind == "masking":
                MaskingParams(**self.aggregator_params())
            elif self.kind == "he":
                HEParams(self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes),
                         self.scale_bits)
        except ValueError as err:
            raise ConfigError(f"secure ({self.kind}): {err}") from None
        if self.clip is not None:
            check_range("secure.clip", self.clip, low=0, low_open=True)

    def aggregator_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`privfed.secure.make_aggregator` for :attr:`kind`."""
        common: dict[str, Any] = {"out_of_range": self.out_of_range}
        if self.clip is not None:
            common["clip"] = self.clip
        if self.kind == "masking":
            return {
                **common,
                "ring_bits": self.ring_bits,
                "threshold": self.threshold,
                "neighbourhood": self.neighbourhood_degree or "full",
                "cohort_size": self.cohort_size,
                "corrupt_fraction": self.corrupt_fraction,
                "dropout_fraction": self.dropout_fraction,
                "security_bits": self.security_bits,
                "server_model": self.server_model,
            }
        if self.kind == "he":
            return {
                **common,
                "poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": tuple(self.coeff_mod_bit_sizes),
                "scale_bits": self.scale_bits,
                "server_model": self.server_model,
            }
        return common


@dataclass(frozen=True)
class AttacksConfig:
    """Leakage measurement (not configurable yet)."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run; a run is reproducible from its saved config.

    Attributes
    ----------
    name : str
        Prefix of the run directory's name.
    seed : int
        The one seed every random stream is derived from (model init, partition,
        client sampling, batch order).
    output_dir : str
        Parent directory of run directories.
    """

    name: str = "digits-mlp"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure: SecureConfig = field(default_factory=SecureConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    attacks: AttacksConfig = field(default_factory=AttacksConfig)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\"):
            raise ConfigError(f"name must be a non-empty string without slashes, got {self.name!r}")
        try:
            check_compatible(self.compression, self.secure.kind, self.privacy.mechanism)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        fed = self.federation
        if fed.concurrency is not None and fed.concurrency > self.data.num_clients:
            raise ConfigError(f"federation.concurrency ({fed.concurrency}) must be at most "
                              f"data.num_clients ({self.data.num_clients})")
        if self.privacy.mechanism == "distributed" and self.secure.kind == "none":
            raise ConfigError(
                "privacy.mechanism 'distributed' needs secure aggregation: with secure.kind "
                "'none' the server reads each client's update with only its share of the noise; "
                "allowed secure.kind: ['masking', 'he'] (or privacy.mechanism 'central')"
            )
        if self.secure.kind == "masking":
            params = self.secure.aggregator_params()
            params["cohort_size"] = self.planned_cohort_size()
            try:
                MaskingParams(**params)
            except ValueError as err:
                raise ConfigError(
                    f"secure (masking, cohort of {params['cohort_size']} clients): {err}"
                ) from None
        if fed.buffer_size is not None and self.privacy.mechanism in ("central", "distributed"):
            raise ConfigError(
                f"federation.buffer_size (asynchronous FedBuff) is not supported with "
                f"privacy.mechanism {self.privacy.mechanism!r}: user-level accounting assumes "
                "sampled synchronous rounds; allowed mechanisms: 'none', 'local'"
            )

    def planned_cohort_size(self) -> int:
        """The clients a secure-aggregation round is planned for: ``secure.cohort_size``,
        else FedBuff's buffer size, else the clients per round (under Poisson sampling,
        the expected number, rounded)."""
        if self.secure.cohort_size is not None:
            return self.secure.cohort_size
        fed, total = self.federation, self.data.num_clients
        if fed.buffer_size is not None:
            return fed.buffer_size
        return max(1, min(total, math.floor(fed.fraction * total + 0.5)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every field (None values included)."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """TOML text that :func:`load_config` reads back into an equal config."""
        return tomli_w.dumps(_drop_none(self.to_dict()))

    def short_hash(self) -> str:
        """8 hex digits identifying everything that affects the results."""
        payload = self.to_dict()
        payload.pop("output_dir")
        payload["data"].pop("data_dir")
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _drop_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None
    }
