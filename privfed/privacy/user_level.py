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
from opacus.accountants import IAccountant

from privfed.federated.client import ClientUpdate
from privfed.federated.mechanism import UpdateMechanism
from privfed.federated.sampling import derive_seed
from privfed.privacy.accounting import adaptive_update_noise, make_accountant, spent_epsilon

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

    Subclasses decide where the noise is added: :meth:`_client_noise` (on the client,
    before the update leaves it) and :meth:`_server_noise` (on the decoded sum).

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
    seed : int
        Seed of the mechanism's noise streams.
    accountant : {"rdp", "prv", "gdp"}
    adaptive : AdaptiveClipping, optional
    secure_rng : torch.Generator, optional
        Cryptographic generator replacing the seeded noise streams (secure mode).
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        sample_rate: float,
        num_clients: int,
        delta: float,
        seed: int,
        accountant: str = "rdp",
        adaptive: AdaptiveClipping | None = None,
        secure_rng: torch.Generator | None = None,
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
        self.expected_clients = sample_rate * num_clients
        self.delta = delta
        self.seed = seed
        self.adaptive = adaptive
        self.update_noise = (
            adaptive_update_noise(noise_multiplier, adaptive.count_stddev)
            if adaptive is not None
            else noise_multiplier
        )
        self.accountant: IAccountant = self._make_accountant(accountant)
        self.secure_rng = secure_rng

    def weight_for(self, num_samples: int) -> float:
        """Every client has weight 1 (the sum is divided by the expected count)."""
        return 1.0

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
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
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
        """User-level ``epsilon`` so far, ``delta``, ``noise_multiplier`` and ``clip_norm``
        (the S of the next round)."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
        }

    def epsilon(self) -> float:
        """User-level epsilon spent so far, at :attr:`delta`."""
        return spent_epsilon(self.accountant, self.delta)

    def _make_accountant(self, name: str) -> IAccountant:
        return make_accountant(name)

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

    def _generator(self, *stream: int) -> torch.Generator:
        if self.secure_rng is not None:
            return self.secure_rng
        return torch.Generator().manual_seed(derive_seed(self.seed, *stream))

    def _client_noise(self, round_idx: int, cid: int, vector: torch.Tensor) -> torch.Tensor:
        return vector

    def _server_noise(self, round_idx: int, length: int) -> torch.Tensor | None:
        return None
