"""Distributed user-level DP: each client adds its share of the noise before sending.

Each client clips its update to S and adds noise of variance ``(z S)^2 / K_min``, where
``K_min`` is the fewest clients whose shares must be in a decodable sum. The secure
aggregator enforces it on the client side (masking: each client's Shamir threshold is at
least K_min and it reveals no shares for fewer surviving inputs; HE: the key holder
decrypts no aggregate of fewer clients), so the server never decodes a sum with less noise
than ``z S``; a round whose cohort is smaller is skipped (and still accounted). When more
survive, the sum carries more noise than accounted for (conservative).

The server sees each round's noisy sum and knows who took part, so against it a client's
guarantee is the *unamplified* Gaussian (or Skellam) mechanism composed over the rounds it
took part in (the "zero-out" relation: its update against none): that is the headline
epsilon, per client, and the budget caps it. Against an outsider who sees only the released
models, Poisson client sampling amplifies it (``epsilon_outsider``).

``noise="gaussian"`` adds Gaussian shares; ``noise="skellam"`` rounds the update to the
lattice ``step * Z^d`` and adds Skellam shares (Agarwal et al. 2021), so an integer
(masking) aggregator carries an integer-valued noisy sum; it is accounted with
:func:`~privfed.privacy.skellam.skellam_sum_epsilon`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from privfed.privacy.accounting import GaussianEvent, gaussian_epsilon
from privfed.privacy.ledger import ClientLedgerMixin, ParticipationLedger
from privfed.privacy.skellam import add_skellam_noise, skellam_sum_epsilon
from privfed.privacy.user_level import UserLevelDP

__all__ = ["DistributedDP", "default_min_surviving", "skellam_step"]

_CLIENT_NOISE_STREAM = 0x0DD1


def skellam_step(clip_norm: float, quantization_step: float | None) -> float:
    """The lattice step gamma: the configured one, or ``S / 2**16``."""
    return quantization_step or clip_norm / 2**16


class DistributedDP(ClientLedgerMixin, UserLevelDP):
    """Client-side noise shares; the server only rescales the decoded sum.

    Parameters
    ----------
    min_surviving_clients : int
        K_min.
    noise : {"gaussian", "skellam"}
        ``noise_kind`` of the shares.
    dim : int
        Length of the model's flat vector ("skellam": enters the rounding sensitivity).
    quantization_step : float, optional
        "skellam": lattice step gamma; default ``S / 2**16``.
    **kwargs
        The parameters of :class:`~privfed.privacy.user_level.UserLevelDP`.
    """

    epsilon_against = "server"

    def __init__(
        self,
        *,
        min_surviving_clients: int,
        noise_kind: str = "gaussian",
        dim: int,
        quantization_step: float | None = None,
        **kwargs: Any,
    ) -> None:
        if min_surviving_clients < 1:
            raise ValueError(
                f"privacy.min_surviving_clients must be >= 1, got {min_surviving_clients}"
            )
        if noise_kind not in ("gaussian", "skellam"):
            raise ValueError(
                f"privacy.noise: unknown value {noise_kind!r}; allowed: ['gaussian', 'skellam']"
            )
        self.min_surviving_clients = min_surviving_clients
        self.noise_kind = noise_kind
        self.dim = dim
        self.quantization_step = (
            skellam_step(kwargs["clip_norm"], quantization_step) if noise_kind == "skellam"
            else 0.0)
        self.discarded_rounds = 0
        super().__init__(**kwargs)
        if noise_kind == "skellam" and self.adaptive is not None:
            raise ValueError("privacy.noise 'skellam' does not support adaptive_clipping")
        self.client_spend = ParticipationLedger(
            self.num_clients, self._epsilon_against_server, self.budget)

    def _outsider_budget(self) -> float | None:
        return None  # the outsider's epsilon is at most the server's, which the budget caps

    def _epsilon_against_server(self, participations: int) -> float:
        """Epsilon of ``participations`` unamplified releases of one client's update."""
        if self.noise_kind == "skellam":
            return self._skellam_epsilon(participations)
        event = GaussianEvent(self.noise_multiplier, 1.0, participations)
        return gaussian_epsilon([event], self.delta, self.accountant)

    @property
    def min_cohort(self) -> int:
        """K_min: a smaller cohort's sum would carry less noise than accounted."""
        return self.min_surviving_clients

    @property
    def skellam_mu(self) -> float:
        """Skellam parameter of one client's share: total variance ``(zS/step)^2`` over K_min."""
        units = self.noise_multiplier * self.clip_norm / self.quantization_step
        return units**2 / (2 * self.min_surviving_clients)

    def server_finalize(
        self, round_idx: int, mean: torch.Tensor, total_weight: float, included: Sequence[int]
    ) -> torch.Tensor:
        """Discard a round with fewer than K_min clients in the sum, else rescale it."""
        if len(included) < self.min_surviving_clients:
            self.rounds_spend.record(round_idx, [0])
            self.discarded_rounds += 1
            size = len(mean) - (self.adaptive is not None)
            return torch.zeros(size, dtype=torch.float32)
        return super().server_finalize(round_idx, mean, total_weight, included)

    def epsilon(self) -> float:
        """The largest epsilon any client has spent against the server."""
        return self.client_spend.max_epsilon()

    def outsider_epsilon(self) -> float:
        """Against an outsider: amplified by client sampling (Gaussian), and never more than
        against the server, of which the outsider's view is a post-processing."""
        if self.noise_kind == "skellam":
            return self.epsilon()
        return min(super().outsider_epsilon(), self.epsilon())

    def change_one_client_epsilon(self, cid: int) -> float:
        """Replace-one epsilon of client ``cid``; Skellam: its releases with doubled
        sensitivities (a replaced update moves by up to twice the clip)."""
        if self.noise_kind == "gaussian":
            return super().change_one_client_epsilon(cid)
        return self._skellam_epsilon(int(self.client_spend.counts[cid]), replace_one=True)

    def _skellam_epsilon(self, releases: int, *, replace_one: bool = False) -> float:
        return skellam_sum_epsilon(self.noise_multiplier, self.clip_norm,
                                   self.quantization_step, self.dim, releases, self.delta,
                                   replace_one=replace_one)

    def round_metrics(self, round_idx: int, sampled: Sequence[int]) -> dict[str, Any]:
        """The user-level figures, plus ``discarded_rounds`` so far."""
        return {**super().round_metrics(round_idx, sampled), "discarded_rounds":
                self.discarded_rounds}

    def _client_noise(self, round_idx: int, cid: int, vector: torch.Tensor) -> torch.Tensor:
        source = self.noise.source(_CLIENT_NOISE_STREAM, round_idx, cid)
        if self.noise_kind == "skellam":
            return add_skellam_noise(vector, self.quantization_step, self.skellam_mu, source)
        if self.noise_multiplier == 0:
            return vector
        std = self._noise_std(len(vector), share=1.0 / self.min_surviving_clients)
        return vector + source.normal(std, len(vector))


def default_min_surviving(num_clients: int, sample_rate: float, poisson: bool) -> int:
    """K_min when not configured.

    Fixed-size sampling: the cohort size ``round(qK)`` (no dropout tolerated). Poisson
    sampling: the cohort is Binomial(K, q); its mean minus two standard deviations,
    ``floor(qK - 2 sqrt(qK(1-q)))`` (at least 1), so about 2% of rounds are skipped.
    """
    expected = sample_rate * num_clients
    if not poisson:
        return max(1, math.floor(expected + 0.5))
    return max(1, math.floor(expected - 2 * math.sqrt(expected * (1 - sample_rate))))
