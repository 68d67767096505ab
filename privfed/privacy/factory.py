"""Build the privacy side of a federation from a :class:`PrivacyConfig`.

Opacus is imported only for "local" DP-SGD (and by the "prv" / "rdp" accountants and the
Skellam accountant when they compute an epsilon), so that a plain federation (e.g. a
Flower ClientApp, started afresh for every message) starts fast.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from privfed.config.privacy import PrivacyConfig
from privfed.federated.client import LocalTraining
from privfed.federated.policy import ParticipationPolicy
from privfed.federated.stages import UpdateStage
from privfed.federated.trainer import LocalTrainer, SGDTrainer
from privfed.federated.weighting import SampleWeighting, UniformWeighting, Weighting
from privfed.privacy.accounting import calibrate, calibrate_noise
from privfed.privacy.banded import BandedNoiseStage, banded_sensitivity
from privfed.privacy.central import CentralNoiseStage
from privfed.privacy.clipping import AdaptiveClipping, ClipStage
from privfed.privacy.distributed import (
    DistributedNoiseStage,
    default_min_surviving,
    skellam_step,
)
from privfed.privacy.dpsgd import DPSGDParams, default_sample_rate, local_steps_per_round
from privfed.privacy.ftrl import (
    FTRLPolicy,
    TreeNoiseStage,
    calibrate_ftrl_noise,
    tree_sensitivity,
)
from privfed.privacy.ledger import planned_participations
from privfed.privacy.noise_cohort import NoiseCohort
from privfed.privacy.participation import Participation
from privfed.privacy.policies import DistributedPolicy, RecordLevelPolicy, UserLevelPolicy
from privfed.privacy.randomness import NoisePolicy
from privfed.privacy.skellam import skellam_sum_epsilon

__all__ = ["PrivacyParts", "build_privacy"]


@dataclass(frozen=True)
class PrivacyParts:
    """What a privacy mechanism puts into a federation.

    Attributes
    ----------
    trainer : LocalTrainer
        :class:`~privfed.privacy.trainer.DPSGDTrainer` for "local", else SGD.
    stages : tuple of UpdateStage
        In client order, to go first in the pipeline (before any compression stage):
        "central": clip, central noise; "distributed": clip, noise share; "ftrl": clip,
        tree or banded noise; else none.
    policy : ParticipationPolicy
        :class:`~privfed.privacy.policies.RecordLevelPolicy`,
        :class:`~privfed.privacy.policies.UserLevelPolicy`,
        :class:`~privfed.privacy.policies.DistributedPolicy`,
        :class:`~privfed.privacy.ftrl.FTRLPolicy`, or plain FedAvg's.
    weighting : Weighting
        Weight 1 per client, divided by the count ("local") or by the expected cohort qK
        (user level); else FedAvg's sample weighting.
    """

    trainer: LocalTrainer
    stages: tuple[UpdateStage, ...]
    policy: ParticipationPolicy
    weighting: Weighting


def build_privacy(
    config: PrivacyConfig,
    *,
    num_clients: int,
    sample_rate: float,
    poisson: bool,
    num_params: int,
    rounds: int,
    training: LocalTraining,
    noise: NoisePolicy,
    reference_size: int | None,
    participations: int | None = None,
    module: torch.nn.Module,
    cyclic_groups: int | None = None,
) -> PrivacyParts:
    """The trainer, stages, policy and weighting that implement ``config``.

    Every mechanism parameter is computed from public values only (the config, the number
    of clients, ``reference_size``), never from a client's data, so the server and every
    client build the same parts.

    Parameters
    ----------
    config : PrivacyConfig
    num_clients : int
        K.
    sample_rate : float
        q, the client sampler's rate (it enters the accounting; cyclic: 1 / b).
    poisson : bool
        Whether clients are sampled independently with probability q (else a fixed-size
        cohort of qK, sampled without replacement, or cyclic groups).
    num_params : int
        Length of the model's flat vector (Skellam's rounding sensitivity).
    rounds : int
        T, the planned number of rounds (noise calibration for a target epsilon).
    training : LocalTraining
    noise : NoisePolicy
        Where the mechanisms' noise and sampling come from.
    reference_size : int or None
        The public reference client size of local DP's default sample rate
        (:func:`~privfed.privacy.dpsgd.default_sample_rate`); None where no party knows one
        (a deployment of sites' own data), which then needs ``privacy.sample_rate``.
    participations : int, optional
        The rounds a client is planned to take part in (what a target epsilon is calibrated
        for; a client sampled more often stops at its budget); default
        :func:`~privfed.privacy.ledger.planned_participations` of ``rounds`` at rate q
        (cyclic: ``ceil(rounds / b)``).
    module : torch.nn.Module
        The model ("local": checked to be trainable by Opacus, see
        :func:`~privfed.privacy.modules.check_dp_module`; fix it before binding it).
    cyclic_groups : int, optional
        b: clients take part in b public groups in turn (``federation.cyclic_groups``);
        user-level accounting then credits no amplification
        (:class:`~privfed.privacy.participation.Participation`).

    Returns
    -------
    PrivacyParts

    Raises
    ------
    ValueError
        The model cannot be trained by Opacus ("local"); "ftrl" with random client
        sampling (it accounts a public schedule); a target epsilon out of reach.
    """
    if config.mechanism == "none":
        return PrivacyParts(SGDTrainer(training), (), ParticipationPolicy(), SampleWeighting())
    participation = Participation.of(num_clients, sample_rate, poisson, cyclic_groups)
    if participations is None and cyclic_groups is not None:
        participations = participation.participations(rounds)
    elif participations is None:
        participations = planned_participations(rounds, sample_rate)
    if config.mechanism == "local":
        return _build_local(config, num_clients, module, training, noise, reference_size,
                            participations)
    if config.mechanism == "ftrl":
        return _build_ftrl(config, participation, rounds, training, noise)
    return _build_user_level(config, participation, num_params, rounds, training, noise,
                             participations)


def _build_local(
    config: PrivacyConfig,
    num_clients: int,
    module: torch.nn.Module,
    training: LocalTraining,
    noise: NoisePolicy,
    reference_size: int | None,
    participations: int,
) -> PrivacyParts:
    """DP-SGD at every client, accounted per client; weight 1, divided by the count."""
    from privfed.privacy.modules import check_dp_module
    from privfed.privacy.trainer import DPSGDTrainer

    check_dp_module(module, fix=False)
    if config.sample_rate is None and reference_size is None:
        raise ValueError("privacy.mechanism = 'local' in a deployment of sites' own data needs "
                         "privacy.sample_rate (DP-SGD's sampling rate q, the same at every "
                         "site): no party knows the sites' sizes to derive it from")
    rate = config.sample_rate or default_sample_rate(training.batch_size, reference_size)
    steps = local_steps_per_round(rate, training.epochs)
    if reference_size is not None and config.delta >= 1 / reference_size:
        warnings.warn(
            f"privacy.delta = {config.delta} >= 1/n = {1 / reference_size:.3g} for the "
            f"reference client size {reference_size}: such a delta allows leaking whole records",
            stacklevel=3,
        )
    sigma = config.noise_multiplier
    if sigma is None:
        sigma = _calibrate(config, rate, participations * steps)
    params = DPSGDParams(sigma, config.max_grad_norm, rate, steps, float(training.batch_size))
    policy = RecordLevelPolicy(params, num_clients=num_clients, delta=config.delta,
                               accountant=config.accountant, budget=config.epsilon, noise=noise,
                               exact_diagnostics=config.exact_diagnostics)
    trainer = DPSGDTrainer(params, training, noise, count_clipped=config.exact_diagnostics)
    return PrivacyParts(trainer, (), policy, UniformWeighting())


def _build_user_level(
    config: PrivacyConfig,
    participation: Participation,
    num_params: int,
    rounds: int,
    training: LocalTraining,
    noise: NoisePolicy,
    participations: int,
) -> PrivacyParts:
    """Clip (adaptive or not), then central noise or noise shares; weight 1, divided by
    the expected cohort ``qK`` (McMahan et al. 2018). With ``privacy.noise_cohort_size``
    C ("central" only) z is calibrated and accounted for a deployment of C clients per
    round with the same participation scheme and rate, and the noise scaled by ``qK / C``
    (:class:`~privfed.privacy.noise_cohort.NoiseCohort`)."""
    num_clients, rate = participation.num_clients, participation.rate
    if config.delta >= 1 / num_clients:
        warnings.warn(
            f"privacy.delta = {config.delta} >= 1/K = {1 / num_clients:.3g} for user-level DP "
            f"over {num_clients} clients",
            stacklevel=3,
        )
    expected = rate * num_clients
    cohort = None
    if config.noise_cohort_size is not None:
        cohort = NoiseCohort(expected, config.noise_cohort_size)
    adaptive = None
    if config.adaptive_clipping:  # sigma_b is the deployment's: C / 20 by default
        deployed = expected if cohort is None else cohort.deployed
        count_std = config.clipped_count_stddev or deployed / 20
        adaptive = AdaptiveClipping(config.target_quantile, config.clip_lr, count_std)
    k_min = config.min_surviving_clients or _default_min_cohort(participation)
    z = config.noise_multiplier
    if z is None and config.mechanism == "central":
        z = _calibrate_user_level(config, participation, rounds)
    elif z is None:
        z = _calibrate_distributed(config, num_params, participations)
    exact = config.exact_diagnostics
    clip = ClipStage(config.clip_norm, expected, adaptive, exact_diagnostics=exact)
    common = dict(noise_multiplier=z, sample_rate=rate, num_clients=num_clients,
                  delta=config.delta, noise=noise, accountant=config.accountant,
                  budget=config.epsilon, participation=participation)
    if config.mechanism == "central":
        stage: UpdateStage = CentralNoiseStage(clip, z, noise, exact_diagnostics=exact,
                                               cohort=cohort)
        policy: UserLevelPolicy = UserLevelPolicy(**common, noise_cohort=cohort)
    else:
        shares = DistributedNoiseStage(clip, z, k_min, noise, noise_kind=config.noise,
                                       quantization_step=config.quantization_step)
        stage, policy = shares, DistributedPolicy(
            min_surviving_clients=k_min, clip_norm=config.clip_norm, dim=num_params,
            noise_kind=config.noise, quantization_step=shares.quantization_step, **common)
    return PrivacyParts(SGDTrainer(training), (clip, stage), policy,
                        UniformWeighting(expected))


def _build_ftrl(
    config: PrivacyConfig,
    participation: Participation,
    rounds: int,
    training: LocalTraining,
    noise: NoisePolicy,
) -> PrivacyParts:
    """Clip, then tree or banded noise on the prefix sums; weight 1, divided by the public
    expected clients per round (K, or K / b under cyclic groups)."""
    if participation.scheme not in ("full", "cyclic"):
        raise ValueError("privacy.mechanism 'ftrl' accounts a public schedule: it needs "
                         "federation.fraction = 1 (or cyclic groups, "
                         "federation.cyclic_groups)")
    period = participation.groups
    bands = config.bands or period
    if config.factorization == "tree":
        def sensitivity(t: int) -> float:
            return tree_sensitivity(t, period)
    else:
        def sensitivity(t: int) -> float:
            return banded_sensitivity(t, period, bands)
    z = config.noise_multiplier
    if z is None:
        assert config.epsilon is not None
        try:
            z = calibrate_ftrl_noise(config.epsilon, config.delta, sensitivity(rounds),
                                     config.accountant)
        except ValueError as err:
            raise ValueError(f"privacy.epsilon = {config.epsilon} cannot be reached at delta "
                             f"{config.delta} over {rounds} rounds: {err}") from None
    expected = participation.rate * participation.num_clients
    clip = ClipStage(config.clip_norm, expected)
    stage: UpdateStage = (TreeNoiseStage(clip, z, noise) if config.factorization == "tree"
                          else BandedNoiseStage(clip, z, bands, noise))
    policy = FTRLPolicy(noise_multiplier=z, sensitivity=sensitivity, delta=config.delta,
                        noise=noise, accountant=config.accountant, budget=config.epsilon)
    return PrivacyParts(SGDTrainer(training), (clip, stage), policy, UniformWeighting(expected))
def _default_min_cohort(participation: Participation) -> int:
    """K_min when not configured: cyclic, the smallest group ``floor(K / b)``; else
    :func:`~privfed.privacy.distributed.default_min_surviving`."""
    if participation.scheme == "cyclic":
        return participation.num_clients // participation.groups
    return default_min_surviving(participation.num_clients, participation.rate,
                                 participation.scheme == "poisson")


def _calibrate_user_level(config: PrivacyConfig, participation: Participation,
                          rounds: int) -> float:
    """z whose epsilon over ``rounds`` released rounds, as ``participation`` accounts it,
    is in ``[0.99, 1] * privacy.epsilon``."""
    assert config.epsilon is not None
    try:
        return participation.calibrate(config.epsilon, config.delta, rounds,
                                       config.accountant)
    except ValueError as err:
        raise ValueError(
            f"privacy.epsilon = {config.epsilon} cannot be reached at delta {config.delta} "
            f"over {rounds} rounds ({participation.method}): {err}"
        ) from None


def _calibrate(config: PrivacyConfig, rate: float, steps: int) -> float:
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
