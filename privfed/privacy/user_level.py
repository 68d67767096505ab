"""User-level DP-FedAvg (McMahan et al. 2018): clipping, adaptive clipping, accounting.

The common part of central and distributed DP. Each client's update is clipped to L2 norm
S; the noisy sum is divided by the *expected* number of clients ``qK`` (a fixed
denominator, so one client changes the result by at most ``S / qK``); every client has
weight 1. With adaptive clipping (Andrew et al. 2021) each client also sends its centred
clip bit ``[||delta|| <= S] - 1/2`` as one extra coordinate, inside the same (secure) sum;
the server strips it, estimates the unclipped fraction ``b`` and updates
``S <- S * exp(-clip_lr * (b - target_quantile))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from privfed.federated.client import ClientUpdate
from privfed.federated.mechanism import UpdateMechanism
from privfed.privacy.accounting import (
    GaussianEvent,
    adaptive_update_noise,
    gaussian_epsilon,
    replace_one_epsilon,
)
from privfed.privacy.ledger import ParticipationLedger
from privfed.privacy.randomness import NoisePolicy

__all__ = ["AdaptiveClipping", "UserLevelDP", "clip_to_norm"]


@dataclass(frozen=True)
class AdaptiveClipping:
    """Andrew et al. 2021's quantile tracking of the clip norm.

    Attributes
    ----------
    target_quantile : float
        gamma, the fraction of updates that should be unclipped.
    clip_lr : float
        eta, the geometric learning rate.
    count_stddev : float
        sigma_b, the noise std on the sum of clip bits.
    """

    target_quantile: float
    clip_lr: float
    count_stddev: float


def clip_to_norm(vector: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, bool]:
    """Scale ``vector`` by ``min(1, S / ||vector||)``.

    Returns
    -------
    clipped : torch.Tensor
    unclipped : bool
        Whether ``||vector|| <= S`` (the vector is returned unchanged).
    """
    norm = float(torch.linalg.vector_norm(vector))
    if norm <= clip_norm:
        return vector, True
    return vector * (clip_norm / norm), False


class UserLevelDP(UpdateMechanism):
    """Base of :class:`~privfed.privacy.central.CentralDP` and
    :class:`~privfed.privacy.distributed.DistributedDP`.

    Subclasses decide where the noise is added (:meth:`_client_noise` on the client, before
    the update leaves it; :meth:`_server_noise` on the decoded sum) and which party the
    headline epsilon holds against. Every round released (also one without clients) is
    counted in :attr:`rounds_spend`, whose epsilon is the Poisson-subsampled Gaussian's over
    the rounds so far: the guarantee against an outsider who sees the released models but
    not who took part.

    Parameters
    ----------
    noise_multiplier : float
        z, the accounted noise multiplier: the released sum carries noise of std ``z * S``
        (with adaptive clipping, z combines the update and clip-count noise).
    clip_norm : float
        S (initial S with adaptive clipping).
    sample_rate : float
        q, probability that a client takes part in a round (Poisson client sampling).
    num_clients : int
        K.
    delta : float
    noise : NoisePolicy
        Where the noise comes from (secure, or seeded from the config).
    accountant : {"pld", "prv", "rdp"}
    adaptive : AdaptiveClipping, optional
    budget : float or None
        ``privacy.epsilon``: no release may take the headline epsilon above it.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        sample_rate: float,
        num_clients: int,
        delta: float,
        noise: NoisePolicy,
        accountant: str = "pld",
        adaptive: AdaptiveClipping | None = None,
        budget: float | None = None,
    ) -> None:
        if noise_multiplier < 0:
            raise ValueError(f"privacy.noise_multiplier must be >= 0, got {noise_multiplier}")
        if not clip_norm > 0:
            raise ValueError(f"privacy.clip_norm must be > 0, got {clip_norm}")
        if math.isinf(clip_norm) and noise_multiplier != 0:
            raise ValueError("privacy.clip_norm = inf is allowed only with noise_multiplier = 0")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"client sample rate must be in (0, 1], got {sample_rate}")
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.sample_rate = sample_rate
        self.num_clients = num_clients
        self.expected_clients = sample_rate * num_clients
        self.delta = delta
        self.noise = noise
        self.accountant = accountant
        self.budget = budget
        self.adaptive = adaptive
        self.update_noise = (
            adaptive_update_noise(noise_multiplier, adaptive.count_stddev)
            if adaptive is not None
            else noise_multiplier
        )

        def amplified(rounds: int) -> float:
            event = GaussianEvent(noise_multiplier, sample_rate, rounds)
            return gaussian_epsilon([event], delta, accountant)

        self.rounds_spend = ParticipationLedger(1, amplified, self._outsider_budget())

    def _outsider_budget(self) -> float | None:
        """The cap on the outsider's epsilon (the headline's for central DP)."""
        return self.budget

    def weight_for(self, num_samples: int) -> float:
        """Every client has weight 1 (the sum is divided by the expected count)."""
        return 1.0

    @property
    def releases_train_loss(self) -> bool:
        """False: a client's training loss is not protected by the mechanism."""
        return False

    def round_allowed(self) -> bool:
        """Whether one more round keeps the outsider's epsilon within the budget."""
        return self.rounds_spend.affordable(0)

    def client_state(self) -> dict[str, float]:
        """The current clip norm S (it moves under adaptive clipping)."""
        return {"clip_norm": self.clip_norm}

    def load_client_state(self, state: Mapping[str, float]) -> None:
        """Clip with the server's current S."""
        self.clip_norm = float(state["clip_norm"])

    def transformed_length(self, num_params: int) -> int:
        """The update, plus the clip bit with adaptive clipping."""
        return num_params + (self.adaptive is not None)

    def client_transform(self, round_idx: int, update: ClientUpdate) -> torch.Tensor:
        """Clip to S; append the centred clip bit (adaptive); add the client's noise share."""
        clipped, unclipped = clip_to_norm(update.delta, self.clip_norm)
        if self.adaptive is not None:
            bit = torch.tensor([float(unclipped) - 0.5], dtype=clipped.dtype)
            clipped = torch.cat([clipped, bit])
        return self._client_noise(round_idx, update.cid, clipped)

    def server_finalize(
        self, round_idx: int, mean: torch.Tensor, total_weight: float, included: Sequence[int]
    ) -> torch.Tensor:
        """``(sum + noise) / qK``; with adaptive clipping, strip the bit and update S.

        The sum is ``mean * total_weight`` (weights are 1); a round without clients has a
        zero sum and still gets the (central) noise.
        """
        self.rounds_spend.record(round_idx, [0])
        noisy = mean * (total_weight / self.expected_clients)
        noise = self._server_noise(round_idx, len(mean))
        if noise is not None:
            noisy = noisy + noise / self.expected_clients
        if self.adaptive is None:
            return noisy
        unclipped = float(noisy[-1]) + 0.5
        self.clip_norm *= math.exp(
            -self.adaptive.clip_lr * (unclipped - self.adaptive.target_quantile)
        )
        return noisy[:-1]

    def round_metrics(self, round_idx: int, sampled: Sequence[int]) -> dict[str, Any]:
        """The headline ``epsilon``, the party it holds against, ``epsilon_outsider``,
        ``delta``, ``noise_multiplier``, ``clip_norm`` (the S of the next round) and the
        noise's provenance."""
        return {
            "epsilon": self.epsilon(),
            "epsilon_against": self.epsilon_against,
            "epsilon_outsider": self.outsider_epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "noise": self.noise.label,
        }

    epsilon_against = "outsider"
    """The party the headline :meth:`epsilon` holds against."""

    def epsilon(self) -> float:
        """The headline user-level epsilon spent so far, at :attr:`delta`."""
        return self.outsider_epsilon()

    def outsider_epsilon(self) -> float:
        """Epsilon against a party that sees the released models but not who took part."""
        return self.rounds_spend.epsilon(0)

    def change_one_client_epsilon(self, cid: int) -> float:
        """Epsilon, against the outsider, for changing the data of client ``cid`` when it
        takes part either way (replace-one: e.g. records inserted into it). Dp-accounting's
        PLD accountant with the REPLACE_ONE relation: the clipped update may move by 2S."""
        rounds = int(self.rounds_spend.counts[0])
        return replace_one_epsilon(self.noise_multiplier, self.sample_rate, rounds, self.delta)

    def _update_std(self) -> float:
        """Std of the noise the released sum of clipped updates carries: ``z_u * S``."""
        return self.update_noise * self.clip_norm if self.update_noise else 0.0

    def _noise_std(self, length: int, share: float) -> torch.Tensor:
        """Per-coordinate noise std for a vector of ``length`` (bit last if adaptive),
        for a ``share`` of the total variance."""
        std = torch.full((length,), self._update_std() * math.sqrt(share))
        if self.adaptive is not None:
            std[-1] = self.adaptive.count_stddev * math.sqrt(share)
        return std

    def _client_noise(self, round_idx: int, cid: int, vector: torch.Tensor) -> torch.Tensor:
        return vector

    def _server_noise(self, round_idx: int, length: int) -> torch.Tensor | None:
        return None
