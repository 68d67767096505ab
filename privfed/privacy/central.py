"""Central user-level DP-FedAvg (McMahan et al. 2018): the server noises the clipped sum.

Each update is clipped to S by :class:`~privfed.privacy.clipping.ClipStage` on the client,
before it is encoded (so the clip also holds under secure aggregation);
:class:`CentralNoiseStage`'s server half adds Gaussian noise of std ``z_u * S`` to the
decoded sum, and the weighting divides it by the expected number of clients ``qK``. The
server is trusted with the noise: it sees the un-noised sum.

With a :class:`~privfed.privacy.noise_cohort.NoiseCohort` (``privacy.noise_cohort_size``
C) every std is scaled by ``c / C``, the bit sum's included: the mean over the simulated
cohort c then carries the noise of a deployment's mean over C clients.
"""

from __future__ import annotations

from privfed.federated.stages import ServerAggregate, UpdateStage
from privfed.privacy.clipping import ClipStage, update_noise_multiplier
from privfed.privacy.noise_cohort import NoiseCohort
from privfed.privacy.randomness import NoisePolicy

__all__ = ["CentralNoiseStage"]

_CENTRAL_NOISE_STREAM = 0x0DC1


class CentralNoiseStage(UpdateStage):
    """Server-side Gaussian noise on the sum of clipped updates (and of clip bits).

    Its server half runs after the server halves of later stages (e.g. a codec's decoding)
    and before :class:`~privfed.privacy.clipping.ClipStage`'s, which reads the noisy bit
    sum: place it right after the clip stage. Round r's noise is drawn from the policy's
    stream ``(central stream, r)``: secure, or seeded from the config.

    Parameters
    ----------
    clip : ClipStage
        The pipeline's clip stage (its current S and adaptive settings set the std).
    noise_multiplier : float
        z, the accounted noise multiplier (with adaptive clipping, of update and count
        combined).
    noise : NoisePolicy
    cohort : NoiseCohort, optional
        Scale every std by ``c / C`` (``privacy.noise_cohort_size``); None: by 1.
    """

    name = "central_noise"

    def __init__(self, clip: ClipStage, noise_multiplier: float, noise: NoisePolicy,
                 cohort: NoiseCohort | None = None) -> None:
        self.update_noise = update_noise_multiplier(noise_multiplier, clip)
        self.clip = clip
        self.noise_multiplier = noise_multiplier
        self.noise = noise
        self.cohort = cohort

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Add ``N(0, (z_u S)^2)`` per update coordinate and ``N(0, sigma_b^2)`` on the bit
        sum (adaptive) to the sum, also of a round without clients; no noise when z = 0
        or the round was discarded. With a noise cohort both stds are times ``c / C``."""
        if self.noise_multiplier == 0 or aggregate.discarded:
            return aggregate
        length = aggregate.values.numel()
        std = self.clip.noise_std(self.update_noise, length)
        if self.cohort is not None:
            std = std * self.cohort.scale
        draws = self.noise.source(_CENTRAL_NOISE_STREAM, round_id).normal(std, length)
        return aggregate.with_sum(aggregate.sum + draws)
