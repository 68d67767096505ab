"""Build the privacy side of a federation from a :class:`PrivacyConfig`.

The mechanisms (and Opacus) are imported only when a config asks for one, so that a plain
federation (e.g. a Flower ClientApp, started afresh for every message) starts fast.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from privfed.federated.client import Client, LocalTraining
from privfed.federated.mechanism import UpdateMechanism
from privfed.federated.params import FlatParameters
from privfed.federated.sampling import ClientSampler
from privfed.privacy.ledger import planned_participations
from privfed.privacy.randomness import NoisePolicy
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
    noise: NoisePolicy,
    reference_size: int,
    participations: int | None = None,
) -> tuple[list[Client], UpdateMechanism]:
    """The clients and update mechanism that implement ``config``.

    Every mechanism parameter is computed from public values only (the config, the number
    of clients, ``reference_size``), never from a client's data.

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
    noise : NoisePolicy
        Where the mechanisms' noise and sampling come from.
    reference_size : int
        The public reference client size of local DP's default sample rate
        (:func:`~privfed.privacy.local.default_sample_rate`).
    participations : int, optional
        The rounds a client is planned to take part in (what a target epsilon is calibrated
        for; a client sampled more often stops at its budget); default
        :func:`~privfed.privacy.ledger.planned_participations` of ``rounds`` at the
        sampler's rate.

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
    if participations is None:
        participations = planned_participations(rounds, sampler.rate)
    if config.mechanism == "local":
        return _build_local(config, clients, workspace, training, noise, reference_size,
                            participations)
    return list(clients), _build_user_level(
        config, sampler, workspace, rounds, noise, participations
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
    workspace: FlatParameters,
    training: LocalTraining,
    noise: NoisePolicy,
    reference_size: int,
    participations: int,
) -> tuple[list[Client], UpdateMechanism]:
    from privfed.privacy.local import (
        DPClient,
        DPSGDParams,
        DPWorkspace,
        LocalDP,
        default_sample_rate,
        local_steps_per_round,
    )

    check_model(workspace.module)
    rate = config.sample_rate or default_sample_rate(training.batch_size, reference_size)
    steps = local_steps_per_round(rate, training.epochs)
    if config.delta >= 1 / reference_size:
        warnings.warn(
            f"privacy.delta = {config.delta} >= 1/n = {1 / reference_size:.3g} for the "
            f"reference client size {reference_size}: such a delta allows leaking whole records",
            stacklevel=3,
        )
    sigma = config.noise_multiplier
    if sigma is None:
        sigma = _calibrate(config, rate, participations * steps)
    params = DPSGDParams(sigma, config.max_grad_norm, rate, steps, float(training.batch_size))
    dp = DPWorkspace.of(workspace)
    dp_clients = [
        DPClient(c.cid, c.x, c.y, dp_workspace=dp, params=params, noise=noise) for c in clients
    ]
    mechanism = LocalDP(params, num_clients=len(dp_clients), delta=config.delta,
                        accountant=config.accountant, budget=config.epsilon, noise=noise)
    return dp_clients, mechanism


def _build_user_level(
    config: PrivacyConfig,
    sampler: ClientSampler,
    workspace: FlatParameters,
    rounds: int,
    noise: NoisePolicy,
    participations: int,
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
    adaptive = None
    if config.adaptive_clipping:
        count_std = config.clipped_count_stddev or rate * num_clients / 20
        adaptive = AdaptiveClipping(config.target_quantile, config.clip_lr, count_std)
    k_min = config.min_surviving_clients or default_min_surviving(
        num_clients, rate, sampler.poisson
    )
    z = config.noise_multiplier
    if z is None and config.mechanism == "central":
        z = _calibrate(config, rate, rounds)
    elif z is None:
        z = _calibrate_distributed(config, workspace.spec.numel, participations)
    common = dict(
        noise_multiplier=z, clip_norm=config.clip_norm, sample_rate=rate,
        num_clients=num_clients, delta=config.delta, noise=noise,
        accountant=config.accountant, adaptive=adaptive, budget=config.epsilon,
    )
    if config.mechanism == "central":
        return CentralDP(**common)
    return DistributedDP(
        min_surviving_clients=k_min, noise_kind=config.noise, dim=workspace.spec.numel,
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


def _calibrate_distributed(config: PrivacyConfig, dim: int, participations: int) -> float:
    """z for the epsilon against the server: ``participations`` unamplified releases, of
    the Gaussian or of the Skellam mechanism (with its own accountant)."""
    if config.noise == "gaussian":
        return _calibrate(config, 1.0, participations)
    from privfed.privacy.accounting import calibrate
    from privfed.privacy.distributed import skellam_step
    from privfed.privacy.skellam import skellam_sum_epsilon

    assert config.epsilon is not None
    step = skellam_step(config.clip_norm, config.quantization_step)

    def epsilon_of(z: float) -> float:
        return skellam_sum_epsilon(z, config.clip_norm, step, dim, participations,
                                   config.delta)

    try:
        return calibrate(epsilon_of, config.epsilon)
    except ValueError as err:
        raise ValueError(
            f"privacy.epsilon = {config.epsilon} cannot be reached with Skellam noise at delta "
            f"{config.delta} over {participations} rounds: {err}"
        ) from None
