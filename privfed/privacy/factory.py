"""Build the privacy side of a federation from a :class:`PrivacyConfig`.

The mechanisms (and Opacus) are imported only when a config asks for one, so that a plain
federation (e.g. a Flower ClientApp, started afresh for every message) starts fast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from privfed.federated.client import Client, LocalTraining
from privfed.federated.mechanism import UpdateMechanism
from privfed.federated.params import FlatParameters
from privfed.federated.sampling import ClientSampler
from privfed.privacy.settings import PrivacyConfig

if TYPE_CHECKING:
    from privfed.privacy.user_level import UserLevelDP

__all__ = ["build_privacy", "check_model"]


def build_privacy(
    config: PrivacyConfig,
    *,
    clients: Sequence[Client],
    sampler: ClientSampler,
    workspace: FlatParameters,
    rounds: int,
    training: LocalTraining,
    seed: int,
) -> tuple[list[Client], UpdateMechanism]:
    """The clients and update mechanism that implement ``config``.

    Parameters
    ----------
    config : PrivacyConfig
    clients : sequence of Client
        The plain clients, in id order.
    sampler : ClientSampler
        The server's client sampler (its rate q enters the accounting).
    workspace : FlatParameters
        The shared model the clients train in.
    rounds : int
        T, the planned number of rounds (noise calibration for a target epsilon).
    training : LocalTraining
    seed : int
        Seed of the mechanism's noise streams (derive one from the experiment seed).

    Returns
    -------
    clients : list of Client
        ``DPClient``s for "local", else the clients unchanged.
    mechanism : UpdateMechanism
        ``LocalDP``, ``CentralDP``, ``DistributedDP`` or the plain FedAvg mechanism.

    Raises
    ------
    ValueError
        The model cannot be trained by Opacus ("local"); user-level DP with client
        sampling that is not Poisson; a target epsilon out of reach.
    """
    if config.mechanism == "none":
        return list(clients), UpdateMechanism()
    secure_rng = _secure_rng() if config.secure_mode else None
    if config.mechanism == "local":
        return _build_local(config, clients, sampler, workspace, rounds, training, secure_rng)
    return list(clients), _build_user_level(
        config, sampler, workspace, rounds, seed, secure_rng
    )


def check_model(module: torch.nn.Module) -> None:
    """Raise a ValueError naming each layer Opacus cannot compute per-example gradients for."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        details = "; ".join(str(e) for e in errors)
        raise ValueError(
            f"privacy.mechanism 'local': the model has layers Opacus cannot train with "
            f"DP-SGD: {details}. opacus.validators.ModuleValidator.fix(model) replaces them "
            f"(e.g. BatchNorm -> GroupNorm)"
        )


def _build_local(
    config: PrivacyConfig,
    clients: Sequence[Client],
    sampler: ClientSampler,
    workspace: FlatParameters,
    rounds: int,
    training: LocalTraining,
    secure_rng: torch.Generator | None,
) -> tuple[list[Client], UpdateMechanism]:
    from privfed.privacy.local import (
        DPClient,
        DPWorkspace,
        LocalDP,
        local_sample_rate,
        local_steps_per_round,
    )

    check_model(workspace.module)
    dp = DPWorkspace.of(workspace)
    smallest = min(c.num_samples for c in clients)
    if config.delta >= 1 / smallest:
        warnings.warn(
            f"privacy.delta = {config.delta} >= 1/n = {1 / smallest:.3g} for the smallest "
            f"client ({smallest} records): such a delta allows leaking whole records",
            stacklevel=3,
        )
    dp_clients = []
    for client in clients:
        n = client.num_samples
        sigma = config.noise_multiplier
        if sigma is None:  # clients of equal size share one (cached) calibration
            rate = local_sample_rate(n, training.batch_size)
            steps = math.ceil(rounds * sampler.rate * local_steps_per_round(n, training))
            sigma = _calibrate(config, rate, steps)
        dp_clients.append(
            DPClient(
                client.cid, client.x, client.y, dp_workspace=dp, noise_multiplier=sigma,
                max_grad_norm=config.max_grad_norm, accountant=config.accountant,
                secure_rng=secure_rng,
            )
        )
    return dp_clients, LocalDP(dp_clients, config.delta)


def _build_user_level(
    config: PrivacyConfig,
    sampler: ClientSampler,
    workspace: FlatParameters,
    rounds: int,
    seed: int,
    secure_rng: torch.Generator | None,
) -> UserLevelDP:
    from privfed.privacy.central import CentralDP
    from privfed.privacy.distributed import DistributedDP, default_min_surviving
    from privfed.privacy.user_level import AdaptiveClipping

    num_clients, rate = sampler.num_clients, sampler.rate
    if rate < 1 and not sampler.poisson:
        raise ValueError(
            f"privacy.mechanism {config.mechanism!r} accounts with the Poisson-subsampled "
            f"Gaussian mechanism: it needs Poisson client sampling "
            f"(federation.client_sampling = 'poisson') or federation.fraction = 1, got "
            f"fixed-size sampling at rate {rate:.3g}"
        )
    if config.delta >= 1 / num_clients:
        warnings.warn(
            f"privacy.delta = {config.delta} >= 1/K = {1 / num_clients:.3g} for user-level DP "
            f"over {num_clients} clients",
            stacklevel=3,
        )
    z = config.noise_multiplier
    if z is None:
        z = _calibrate(config, rate, rounds)
    adaptive = None
    if config.adaptive_clipping:
        count_std = config.clipped_count_stddev or rate * num_clients / 20
        adaptive = AdaptiveClipping(config.target_quantile, config.clip_lr, count_std)
    common = dict(
        noise_multiplier=z, clip_norm=config.clip_norm, sample_rate=rate,
        num_clients=num_clients, delta=config.delta, seed=seed, accountant=config.accountant,
        adaptive=adaptive, secure_rng=secure_rng,
    )
    if config.mechanism == "central":
        return CentralDP(**common)
    k_min = config.min_surviving_clients or default_min_surviving(
        num_clients, rate, sampler.poisson
    )
    return DistributedDP(
        min_surviving_clients=k_min, noise=config.noise, dim=workspace.spec.numel,
        quantization_step=config.quantization_step, **common,
    )


def _calibrate(config: PrivacyConfig, rate: float, steps: int) -> float:
    from privfed.privacy.accounting import calibrate_noise

    assert config.epsilon is not None
    try:
        return calibrate_noise(config.epsilon, config.delta, rate, steps, config.accountant)
    except ValueError as err:
        raise ValueError(
            f"privacy.epsilon = {config.epsilon} cannot be reached at delta {config.delta} "
            f"({steps} steps at sampling rate {rate:.3g}): {err}"
        ) from None


def _secure_rng() -> torch.Generator:
    try:
        import torchcsprng
    except ImportError:
        raise ValueError(
            "privacy.secure_mode = true needs the torchcsprng package (Opacus's secure RNG); "
            "install it or set privacy.secure_mode = false"
        ) from None
    return torchcsprng.create_random_device_generator("/dev/urandom")
