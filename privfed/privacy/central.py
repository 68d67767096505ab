"""Central user-level DP-FedAvg (McMahan et al. 2018): the server noises the clipped sum.

Each update is clipped to S in
:meth:`~privfed.privacy.user_level.UserLevelDP.client_transform`, before it is encoded (so
the clip also holds under secure aggregation); the server adds Gaussian noise of std
``z * S`` to the decoded sum and divides by the expected number of clients. The server is
trusted with the noise: it sees the un-noised sum.
"""

from __future__ import annotations

import torch

from privfed.privacy.user_level import UserLevelDP

__all__ = ["CentralDP"]

_CENTRAL_NOISE_STREAM = 0x0DC1


class CentralDP(UserLevelDP):
    """Server-side Gaussian noise on the sum of clipped updates (and of clip bits).

    Parameters are those of :class:`~privfed.privacy.user_level.UserLevelDP`. The server
    is trusted (it sees the clipped sum before the noise), so the headline epsilon holds
    against an outsider holding the released models. Round r's noise is drawn from the
    policy's stream ``(central stream, r)``: secure, or seeded from the config.
    """

    def _server_noise(self, round_idx: int, length: int) -> torch.Tensor | None:
        if self.noise_multiplier == 0:
            return None
        std = self._noise_std(length, share=1.0)
        return self.noise.source(_CENTRAL_NOISE_STREAM, round_idx).normal(std, length)
