"""The server half shared by DP-FTRL's correlated-noise mechanisms (tree, banded).

Both add to round t's clipped sum a noise increment built from fresh Gaussian draws and
some of the earlier rounds' noise, so the rounds must come in order and the stage keeps
state between them (:meth:`~privfed.federated.stages.UpdateStage.server_state`).
"""

from __future__ import annotations

import math

import torch

from privfed.config.fields import check_field
from privfed.federated.stages import ServerAggregate, UpdateStage
from privfed.privacy.clipping import ClipStage
from privfed.privacy.randomness import NoisePolicy

__all__ = ["CorrelatedNoiseStage"]


class CorrelatedNoiseStage(UpdateStage):
    """Adds :meth:`increment` to each round's sum, rounds in order, fixed clip norm.

    Parameters
    ----------
    clip : ClipStage
        The pipeline's clip stage (fixed S: no adaptive clipping).
    noise_multiplier : float
        z: each fresh draw is ``N(0, (z S)^2)`` per coordinate.
    noise : NoisePolicy

    Raises
    ------
    ValueError
        z < 0, adaptive clipping, or ``S = inf`` with noise.
    """

    def __init__(self, clip: ClipStage, noise_multiplier: float, noise: NoisePolicy) -> None:
        check_field("privacy.noise_multiplier", noise_multiplier)
        if clip.adaptive is not None:
            raise ValueError("privacy.mechanism 'ftrl' needs a fixed privacy.clip_norm")
        if math.isinf(clip.clip_norm) and noise_multiplier != 0:
            raise ValueError("privacy.clip_norm = inf is allowed only with noise_multiplier = 0")
        self.clip = clip
        self.noise_multiplier = noise_multiplier
        self.noise = noise
        self.round = 0

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Add :meth:`increment` to round t's sum, also of a round without clients.

        Raises
        ------
        ValueError
            Rounds out of order (each must be the one after the last).
        """
        if round_id != self.round + 1:
            raise ValueError(f"the {self.name} stage's rounds must follow one another: round "
                             f"{round_id} after {self.round}")
        self.round = round_id
        if self.noise_multiplier == 0:
            return aggregate
        std = self.noise_multiplier * self.clip.clip_norm
        increment = self.increment(round_id, std, aggregate.values.numel())
        return aggregate.with_sum(aggregate.sum + increment)

    def increment(self, round_id: int, std: float, length: int) -> torch.Tensor:
        """Round ``round_id``'s noise, float32 ``(length,)``, from fresh draws of std ``std``
        and the stage's state (which it updates)."""
        raise NotImplementedError
