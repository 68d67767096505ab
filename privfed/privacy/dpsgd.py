"""The public parameters of local record-level DP-SGD, fixed from the config.

Neighbouring datasets differ by adding or removing one record at one client, so a client's
record count is private: every parameter of the mechanism (Poisson rate, steps per round,
the normaliser of the noisy sum, noise multiplier) is public, fixed from the config and the
same at every client. This module holds them and their accounting event; it imports no
Opacus (the trainer, :mod:`privfed.privacy.trainer`, does).
"""

from __future__ import annotations

from dataclasses import dataclass

from privfed.config.fields import check_field
from privfed.privacy.accounting import GaussianEvent

__all__ = ["DPSGDParams", "default_sample_rate", "local_steps_per_round"]


def default_sample_rate(batch_size: int, reference_size: int) -> float:
    """Poisson rate of a record in a batch, ``min(1, B / n_ref)``, from public values only:
    the expected batch size B and a reference client size (not a client's own count)."""
    if reference_size < 1:
        raise ValueError(f"reference client size must be >= 1, got {reference_size}")
    return min(1.0, batch_size / reference_size)


def local_steps_per_round(sample_rate: float, epochs: int) -> int:
    """DP-SGD steps of one round: ``epochs * floor(1 / q)`` (Opacus's steps per epoch)."""
    return epochs * max(1, int(1 / sample_rate))


@dataclass(frozen=True)
class DPSGDParams:
    """The public parameters of local DP-SGD, identical at every client.

    One step is ``w <- w - lr * (sum of clipped per-record gradients + N(0, (sigma C)^2))
    / normaliser`` over a Poisson batch that holds each record with probability
    ``sample_rate``; a round is ``steps_per_round`` steps (Abadi et al. 2016). Nothing here
    depends on a client's data, so a client's record count is not revealed by its update:
    a client with more records takes larger steps (its batches are larger), the FedAvg
    weighting by size happening inside the update rather than in a weight sent in the clear.

    Attributes
    ----------
    noise_multiplier : float
        sigma >= 0.
    max_grad_norm : float
        Per-record clip norm C > 0.
    sample_rate : float
        q in (0, 1].
    steps_per_round : int
        >= 1.
    normaliser : float
        The public expected batch size the noisy sum is divided by (``federation.batch_size``).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps_per_round: int
    normaliser: float

    def __post_init__(self) -> None:
        check_field("privacy.noise_multiplier", self.noise_multiplier)
        check_field("privacy.max_grad_norm", self.max_grad_norm)
        check_field("privacy.sample_rate", self.sample_rate)
        if self.steps_per_round < 1:
            raise ValueError(f"DP-SGD steps per round must be >= 1, got {self.steps_per_round}")
        if not self.normaliser > 0:
            raise ValueError(f"DP-SGD normaliser must be > 0, got {self.normaliser!r}")

    def release(self, rounds: int) -> GaussianEvent:
        """The subsampled Gaussian releases of ``rounds`` rounds of one client."""
        return GaussianEvent(self.noise_multiplier, self.sample_rate,
                             rounds * self.steps_per_round)
