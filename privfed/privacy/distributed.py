"""Distributed user-level DP: each client adds its share of the noise before sending.

Each client clips its update to S (:class:`~privfed.privacy.clipping.ClipStage`) and adds
noise of variance ``(z S)^2 / K_min`` (:class:`DistributedNoiseStage`'s client half), where
``K_min`` is the fewest clients whose shares must be in a decodable sum. The secure
aggregator enforces it on the client side (masking: each client's Shamir threshold is at
least K_min and it reveals no shares for fewer surviving inputs; HE: the key holder
decrypts no aggregate of fewer clients), so the server never decodes a sum with less noise
than ``z S``; a round whose sum holds fewer is discarded (and still accounted) by the
stage's server half. When more survive, the sum carries more noise than accounted for
(conservative).

``noise="gaussian"`` adds Gaussian shares; ``noise="skellam"`` rounds the update to the
lattice ``step * Z^d`` and adds Skellam shares (Agarwal et al. 2021), so an integer
(masking) aggregator carries an integer-valued noisy sum. The accounting is
:class:`~privfed.privacy.policies.DistributedPolicy`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from privfed.config.fields import check_field
from privfed.federated.stages import ServerAggregate, UpdateStage
from privfed.privacy.clipping import ClipStage, update_noise_multiplier
from privfed.privacy.diagnostics import noise_figures
from privfed.privacy.randomness import NoisePolicy
from privfed.privacy.skellam import add_skellam_noise

__all__ = ["DistributedNoiseStage", "default_min_surviving", "skellam_step"]

_CLIENT_NOISE_STREAM = 0x0DD1


def skellam_step(clip_norm: float, quantization_step: float | None) -> float:
    """The lattice step gamma: the configured one, or ``S / 2**16``."""
    return quantization_step or clip_norm / 2**16


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


class DistributedNoiseStage(UpdateStage):
    """Client-side noise shares; the server discards a sum of fewer than K_min shares.

    Place it right after the clip stage (its shares cover the clip bit too) and before any
    codec.

    Parameters
    ----------
    clip : ClipStage
        The pipeline's clip stage (its current S and adaptive settings set the std).
    noise_multiplier : float
        z, the accounted noise multiplier of the whole sum.
    min_surviving_clients : int
        K_min.
    noise : NoisePolicy
        Client c's share in round r comes from the stream ``(client stream, r, c)``.
    noise_kind : {"gaussian", "skellam"}
    quantization_step : float, optional
        "skellam": lattice step gamma; default ``S / 2**16``.

    Attributes
    ----------
    discarded_rounds : int
        Rounds whose sum held fewer than K_min clients (reported in :meth:`metrics`).
    """

    name = "distributed_noise"

    def __init__(
        self,
        clip: ClipStage,
        noise_multiplier: float,
        min_surviving_clients: int,
        noise: NoisePolicy,
        *,
        noise_kind: str = "gaussian",
        quantization_step: float | None = None,
    ) -> None:
        check_field("privacy.min_surviving_clients", min_surviving_clients)
        check_field("privacy.noise", noise_kind)
        self.update_noise = update_noise_multiplier(noise_multiplier, clip)
        if noise_kind == "skellam" and clip.adaptive is not None:
            raise ValueError("privacy.noise 'skellam' does not support adaptive_clipping")
        self.clip = clip
        self.noise_multiplier = noise_multiplier
        self.min_surviving_clients = min_surviving_clients
        self.noise = noise
        self.noise_kind = noise_kind
        self.quantization_step = (
            skellam_step(clip.clip_norm, quantization_step) if noise_kind == "skellam" else 0.0)
        self.discarded_rounds = 0
        self._figures: dict[str, float] = {}

    @property
    def skellam_mu(self) -> float:
        """Skellam parameter of one client's share: total variance ``(zS/step)^2`` over K_min."""
        units = self.noise_multiplier * self.clip.clip_norm / self.quantization_step
        return units**2 / (2 * self.min_surviving_clients)

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """Add client ``client_id``'s share: Gaussian of std ``z_u S / sqrt(K_min)`` per
        coordinate (``sigma_b / sqrt(K_min)`` on the clip bit), or the vector rounded
        stochastically to the lattice plus ``Sk(mu)`` lattice units (Skellam)."""
        source = self.noise.source(_CLIENT_NOISE_STREAM, round_id, client_id)
        if self.noise_kind == "skellam":
            return add_skellam_noise(vector, self.quantization_step, self.skellam_mu, source)
        if self.noise_multiplier == 0:
            return vector
        std = self.clip.noise_std(self.update_noise, len(vector),
                                  share=1.0 / self.min_surviving_clients)
        return vector + source.normal(std, len(vector))

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Withhold a sum of fewer than K_min clients (less noise than accounted): a zero
        sum, marked discarded; else the sum unchanged, and the round's private diagnostics
        (:meth:`metrics`)."""
        self._figures = {}
        if aggregate.discarded:
            return aggregate
        if len(aggregate.included) < self.min_surviving_clients:
            self.discarded_rounds += 1
            return replace(aggregate.with_sum(torch.zeros_like(aggregate.values)),
                           discarded=True)
        if self.noise_multiplier:
            d = aggregate.values.numel() - (self.clip.adaptive is not None)
            self._figures = noise_figures(aggregate.sum[:d], self.sum_noise_std(
                len(aggregate.included)))
        return aggregate

    def sum_noise_std(self, clients: int) -> float:
        """The per-coordinate std of the noise in a sum of ``clients`` shares,
        ``z_u S sqrt(clients / K_min)`` (Skellam: the same variance, ``2 mu gamma^2`` per
        share, without the rounding's); a public function of the released count."""
        return self.update_noise * self.clip.clip_norm * math.sqrt(
            clients / self.min_surviving_clients)

    def metrics(self) -> dict[str, Any]:
        """``discarded_rounds`` so far, and the round's ``noise_std``,
        ``noise_norm_expected`` and ``snr_estimate``
        (:func:`~privfed.privacy.diagnostics.noise_figures`). No party knows the total
        noise (each client knows its share), so there are no exact noise figures."""
        return {"discarded_rounds": self.discarded_rounds, **self._figures}

    def server_state(self) -> dict[str, Any]:
        """``discarded_rounds`` so far."""
        return {"discarded_rounds": self.discarded_rounds}

    def load_server_state(self, state: Mapping[str, Any]) -> None:
        """Continue counting from :meth:`server_state`'s ``discarded_rounds``."""
        self.discarded_rounds = int(state["discarded_rounds"])
