"""Distributed user-level DP: each client adds its share of the noise before sending.

Each client clips its update to S and adds noise of variance ``(z S)^2 / K_min``, where
``K_min`` is the fewest clients whose shares must be in a released sum. The server (which
under secure aggregation only ever sees the sum) therefore never sees a sum with less
noise than ``z S``: a round where fewer than ``K_min`` clients survive is discarded (its
update is zero). When more survive, the sum carries more noise than accounted for
(conservative). ``noise="gaussian"`` adds Gaussian shares; ``noise="skellam"`` rounds the
update to the lattice ``step * Z^d`` and adds Skellam shares (Agarwal et al. 2021), so an
integer (masking) aggregator carries an integer-valued noisy sum; its accounting is
:class:`~privfed.privacy.skellam.SkellamAccountant`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from opacus.accountants import IAccountant

from privfed.federated.sampling import derive_seed
from privfed.privacy.skellam import SkellamAccountant, add_skellam_noise, skellam_sensitivity
from privfed.privacy.user_level import UserLevelDP

__all__ = ["DistributedDP", "default_min_surviving"]

_CLIENT_NOISE_STREAM = 0x0DD1


class DistributedDP(UserLevelDP):
    """Client-side noise shares; the server only rescales the decoded sum.

    Parameters
    ----------
    min_surviving_clients : int
        K_min.
    noise : {"gaussian", "skellam"}
    dim : int
        Length of the model's flat vector ("skellam": enters the rounding sensitivity).
    quantization_step : float, optional
        "skellam": lattice step gamma; default ``S / 2**16``.
    **kwargs
        The parameters of :class:`~privfed.privacy.user_level.UserLevelDP`.
    """

    def __init__(
        self,
        *,
        min_surviving_clients: int,
        noise: str = "gaussian",
        dim: int,
        quantization_step: float | None = None,
        **kwargs: Any,
    ) -> None:
        if min_surviving_clients < 1:
            raise ValueError(
                f"privacy.min_surviving_clients must be >= 1, got {min_surviving_clients}"
            )
        if noise not in ("gaussian", "skellam"):
            raise ValueError(
                f"privacy.noise: unknown value {noise!r}; allowed: ['gaussian', 'skellam']"
            )
        self.min_surviving_clients = min_surviving_clients
        self.noise = noise
        self.dim = dim
        clip = kwargs["clip_norm"]
        self.quantization_step = quantization_step or (clip / 2**16 if noise == "skellam" else 0.0)
        self.discarded_rounds = 0
        super().__init__(**kwargs)
        if noise == "skellam" and self.adaptive is not None:
            raise ValueError("privacy.noise 'skellam' does not support adaptive_clipping")

    @property
    def skellam_mu(self) -> float:
        """Skellam parameter of one client's share: total variance ``(zS/step)^2`` over K_min."""
        units = self.noise_multiplier * self.clip_norm / self.quantization_step
        return units**2 / (2 * self.min_surviving_clients)

    def server_finalize(
        self, round_idx: int, mean: torch.Tensor, total_weight: float, included: Sequence[int]
    ) -> torch.Tensor:
        """Discard the round if fewer than K_min clients are in the sum, else rescale it."""
        if len(included) < self.min_surviving_clients:
            self.accountant.step(
                noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate
            )
            self.discarded_rounds += 1
            size = len(mean) - (self.adaptive is not None)
            return torch.zeros(size, dtype=torch.float32)
        return super().server_finalize(round_idx, mean, total_weight, included)

    def round_metrics(self, round_idx: int, sampled: Sequence[int]) -> dict[str, Any]:
        """The user-level figures, plus ``discarded_rounds`` so far."""
        return {**super().round_metrics(round_idx, sampled), "discarded_rounds":
                self.discarded_rounds}

    def _make_accountant(self, name: str) -> IAccountant:
        if self.noise == "gaussian":
            return super()._make_accountant(name)
        l1, l2 = skellam_sensitivity(self.clip_norm, self.quantization_step, self.dim)
        return SkellamAccountant(self.skellam_mu * self.min_surviving_clients, l1, l2)

    def _client_noise(self, round_idx: int, cid: int, vector: torch.Tensor) -> torch.Tensor:
        if self.noise == "skellam":
            seed = derive_seed(self.seed, _CLIENT_NOISE_STREAM, round_idx, cid)
            return add_skellam_noise(
                vector, self.quantization_step, self.skellam_mu, np.random.default_rng(seed)
            )
        if self.noise_multiplier == 0:
            return vector
        std = self._noise_std(len(vector), share=1.0 / self.min_surviving_clients)
        generator = self._generator(_CLIENT_NOISE_STREAM, round_idx, cid)
        return vector + torch.normal(torch.zeros(len(vector)), std, generator=generator)


def default_min_surviving(num_clients: int, sample_rate: float, poisson: bool) -> int:
    """K_min when not configured.

    Fixed-size sampling: the cohort size ``round(qK)`` (no dropout tolerated). Poisson
    sampling: the cohort is Binomial(K, q); its mean minus two standard deviations,
    ``floor(qK - 2 sqrt(qK(1-q)))`` (at least 1), so about 2% of rounds are discarded.
    """
    expected = sample_rate * num_clients
    if not poisson:
        return max(1, math.floor(expected + 0.5))
    return max(1, math.floor(expected - 2 * math.sqrt(expected * (1 - sample_rate))))
