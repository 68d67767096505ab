"""The ``[federation]`` section: FedAvg's rounds, local training and server optimizer."""

from __future__ import annotations

import re
from dataclasses import dataclass

from privfed.config.validation import ConfigError, OneOf, Range, Rule, check_rules

__all__ = ["CLIENT_SAMPLINGS", "DEVICES", "FederationConfig", "RULES", "SERVER_OPTIMIZERS",
           "check_device"]

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")
"""The server optimizers of ``privfed.federated.optimizers``, by name."""

CLIENT_SAMPLINGS = ("fixed", "poisson", "cyclic")

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""The forms of ``federation.device`` (N: a CUDA device index, 0, 1, ...)."""

_DEVICE_FORM = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

_SERVER_LR_DEFAULT = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.01}
_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
_DECAY = Range(0, 1, high_open=True)

MAX_LOCAL_EPOCHS = 10_000
"""The most local epochs per round: far past any federated use (1 to a few tens), and a
round's batch schedule of that many epochs still fits in memory."""

RULES: dict[str, Rule] = {
    "rounds": Range(1),
    "fraction": Range(0, 1, low_open=True),
    "client_sampling": OneOf(CLIENT_SAMPLINGS),
    "cyclic_groups": Range(1),
    "local_epochs": Range(1, MAX_LOCAL_EPOCHS),
    "batch_size": Range(1),
    "lr": _POSITIVE,
    "mu": _NON_NEGATIVE,
    "server_optimizer": OneOf(SERVER_OPTIMIZERS),
    "server_lr": _POSITIVE,
    "server_momentum": _DECAY,
    "server_beta1": _DECAY,
    "server_beta2": _DECAY,
    "server_tau": _POSITIVE,
    "eval_every": Range(1),
    "federated_eval_every": Range(0),
    "federated_eval_fraction": Range(0, 1, low_open=True),
    "buffer_size": Range(1),
    "concurrency": Range(1),
    "latency_spread": Range(0, 10),
    "staleness_exponent": Range(0, 10),
}
"""The rule of each field (None, where allowed, means "not set" and is not checked)."""


@dataclass(frozen=True)
class FederationConfig:
    """The FedAvg protocol.

    Attributes
    ----------
    rounds : int
        Communication rounds T, >= 1.
    fraction : float
        C, the fraction of clients sampled per round, in (0, 1].
    client_sampling : str
        "fixed" (exactly round(C*K) clients per round, uniformly without replacement),
        "poisson" (each client independently with probability C) or "cyclic" (the clients
        in ``cyclic_groups`` public groups, client c in group c mod b, one group per round in
        turn; needs ``fraction`` 1). User-level DP accounts each its own way
        (:mod:`privfed.privacy.participation`).
    cyclic_groups : int or None
        b >= 1 (at most ``data.num_clients``), the number of groups of cyclic participation:
        each client takes part once every b rounds. Only with ``client_sampling`` "cyclic",
        which needs it.
    local_epochs, batch_size, lr : int, int, float
        E in [1, 10000], B >= 1 (a batch past a client's data is all of it) and the learning
        rate (> 0) of local SGD.
    drop_last : bool
        Local SGD skips each epoch's last batch when it is smaller than B (a model with
        BatchNorm cannot take a batch of one); a client with fewer than B examples then
        takes no step and sends a zero update. Not with DP-SGD (``privacy.mechanism``
        "local"), whose batches are Poisson samples.
    mu : float
        FedProx proximal term, >= 0 (0 = FedAvg), with ``lr * mu < 2`` (each local step
        multiplies the distance to the global model by ``1 - lr * mu``, so at 2 and above it
        grows without bound whatever the data).
    server_optimizer : str
        "fedavg", "fedavgm" or "fedadam".
    server_lr : float or None
        Server learning rate, > 0; None = 1.0 for fedavg/fedavgm, 0.01 for fedadam.
    server_momentum : float
        FedAvgM momentum, in [0, 1).
    server_beta1, server_beta2, server_tau : float
        FedAdam moment decays, each in [0, 1), and adaptivity, > 0.
    eval_every : int
        Evaluate the global model every this many rounds (and after the last), >= 1.
    federated_eval_every : int
        Federated evaluation (sampled clients evaluate the global model on their held-out
        ``data.validation_fraction``, the counts aggregated like updates) every this many
        rounds and after the last; 0 (the default) turns it off.
    federated_eval_fraction : float
        Share of the clients sampled for each federated evaluation, in (0, 1].
    buffer_size : int or None
        None: synchronous rounds. K >= 1: asynchronous buffered aggregation (FedBuff, Nguyen
        et al. 2022): the server steps whenever K updates have arrived, and ``rounds`` counts
        server steps.
    concurrency : int or None
        FedBuff only: clients training at once, >= 1 and at most ``data.num_clients``
        (None: round(fraction * num_clients)).
    latency_spread : float
        FedBuff: std of the log of each client's simulated job duration, in [0, 10] (0: all
        equal; 10 already spreads durations over e^±40, and beyond the float range ends).
    staleness_exponent : float
        FedBuff: an update s versions stale is weighted by (1 + s) ** -staleness_exponent;
        in [0, 10] (larger ones underflow a stale update's weight to 0).
    device : str
        Where local training, evaluation and the attacks' models run: "auto" (CUDA if
        available, else MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps". The form is
        checked here; whether this machine has it, when the federation is built
        (:func:`privfed.federated.device.resolve_device`). Updates travel as CPU vectors
        whatever the device.
    vectorise : bool
        True (the default): in the simulation, train a round's clients as one batched
        computation where the model allows it (a stack of Linear layers and elementwise
        activations, e.g. the logistic regression and the MLP; see
        :mod:`privfed.federated.cohort`), plain SGD and DP-SGD alike. The mechanism is the
        same (each client's own batches, noise and steps); the updates agree with training
        the clients one after another (False) to float32 rounding, not bit for bit.
    """

    rounds: int = 30
    fraction: float = 1.0
    client_sampling: str = "fixed"
    cyclic_groups: int | None = None
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
    federated_eval_every: int = 0
    federated_eval_fraction: float = 1.0
    buffer_size: int | None = None
    concurrency: int | None = None
    latency_spread: float = 0.0
    staleness_exponent: float = 0.5
    device: str = "auto"
    vectorise: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        check_rules("federation", self, RULES)
        check_device("federation.device", self.device)
        self._check_cyclic()
        if self.lr * self.mu >= 2:
            raise ConfigError(
                f"federation.mu must be below 2 / federation.lr = {2 / self.lr:.4g} (FedProx's "
                f"step scales the distance to the global model by 1 - lr * mu), got mu = "
                f"{self.mu!r} with lr = {self.lr!r}")

    def _check_cyclic(self) -> None:
        cyclic = self.client_sampling == "cyclic"
        if cyclic != (self.cyclic_groups is not None):
            raise ConfigError(
                "federation.cyclic_groups is set exactly when federation.client_sampling is "
                f"'cyclic', got client_sampling {self.client_sampling!r} with cyclic_groups "
                f"{self.cyclic_groups!r}")
        if cyclic and self.fraction != 1:
            raise ConfigError(
                "federation.client_sampling 'cyclic' trains the whole group of each round: "
                f"federation.fraction must be 1, got {self.fraction!r}")
        if cyclic and self.buffer_size is not None:
            raise ConfigError(
                "federation.client_sampling 'cyclic' is for synchronous rounds: unset "
                "federation.buffer_size (FedBuff), or use client_sampling 'fixed' or 'poisson'")

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


def check_device(field_name: str, value: object) -> None:
    """Raise :class:`ConfigError` naming ``field_name`` unless ``value`` is one of the
    :data:`DEVICES` forms ("auto", "cpu", "cuda", "cuda:N", "mps")."""
    if not isinstance(value, str) or _DEVICE_FORM.fullmatch(value) is None:
        raise ConfigError(f"{field_name}: unknown device {value!r}; allowed: "
                          f"{', '.join(DEVICES)} (N: a CUDA device index, e.g. cuda:0)")
