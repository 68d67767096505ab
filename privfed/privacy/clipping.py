"""User-level clipping (McMahan et al. 2018) and adaptive clipping (Andrew et al. 2021).

:class:`ClipStage` is the first stage of user-level DP's update pipeline. Its client half
clips a client's update to L2 norm S, so one client moves the weighted sum (weights 1) by
at most S; with adaptive clipping it appends the centred clip bit
``[||delta|| <= S] - 1/2`` as one extra, last coordinate, which travels inside the same
(secure) sum. Its server half strips the (noisy) bit sum, estimates the unclipped fraction
``b = bit_sum / qK + 1/2`` and updates ``S <- S * exp(-eta * (b - gamma))``; the new S is
broadcast to the clients of the next round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from privfed.config.fields import check_field
from privfed.federated.stages import ServerAggregate, UpdateStage
from privfed.privacy.accounting import adaptive_update_noise
from privfed.privacy.diagnostics import estimated_clipped_fraction

__all__ = ["AdaptiveClipping", "ClipStage", "clip_to_norm", "update_noise_multiplier"]


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


class ClipStage(UpdateStage):
    """Clip each update to S; with adaptive clipping, append the clip bit and adapt S.

    Parameters
    ----------
    clip_norm : float
        S (the initial S with adaptive clipping); ``inf`` clips nothing.
    expected_clients : float
        qK, the public expected number of clients per round (the bit sum's denominator).
    adaptive : AdaptiveClipping, optional
    exact_diagnostics : bool, default False
        Count the clients whose update the client half clipped and report the exact
        ``clipped_fraction`` (``privacy.diagnostics = "exact"``; each client knows its own
        bit and the in-process simulation adds the bits up, which in a deployment only
        central DP's server may know (docs/privacy.md); on a Flower server, which runs no
        client half, it is absent).

    Attributes
    ----------
    clip_norm : float
        The current S: the server's, or on a client the one last broadcast to it.
    """

    name = "clip"

    def __init__(
        self, clip_norm: float, expected_clients: float, adaptive: AdaptiveClipping | None = None,
        *, exact_diagnostics: bool = False,
    ) -> None:
        check_field("privacy.clip_norm", clip_norm)
        if not expected_clients > 0:
            raise ValueError(f"the expected number of clients must be > 0, got {expected_clients}")
        if adaptive is not None and math.isinf(clip_norm):
            raise ValueError("privacy.adaptive_clipping needs a finite initial privacy.clip_norm")
        self.clip_norm = clip_norm
        self._initial = clip_norm
        self.expected_clients = expected_clients
        self.adaptive = adaptive
        self.exact_diagnostics = exact_diagnostics
        self._clipped = self._seen = 0
        self._figures: dict[str, float] = {}

    def output_length(self, length: int) -> int:
        """The update, plus the clip bit with adaptive clipping."""
        return length + (self.adaptive is not None)

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """Clip ``vector`` (float32, ``(d,)``) to S; append the centred clip bit (adaptive)."""
        clipped, unclipped = clip_to_norm(vector, self.clip_norm)
        if self.exact_diagnostics:
            self._seen += 1
            self._clipped += not unclipped
        if self.adaptive is None:
            return clipped
        bit = torch.tensor([float(unclipped) - 0.5], dtype=clipped.dtype)
        return torch.cat([clipped, bit])

    def server(self, round_id: int, aggregate: ServerAggregate) -> ServerAggregate:
        """Adaptive clipping: strip the bit sum and, unless the round was discarded, update
        ``S <- S * exp(-eta * (bit_sum / qK + 1/2 - gamma))`` (Andrew et al. 2021, Alg. 1).

        Also in a round without clients: its bit sum is the noise alone. Sets the round's
        diagnostics: ``clipped_fraction_estimate`` from the noisy bit sum (adaptive) and,
        with ``exact_diagnostics``, the exact ``clipped_fraction`` of the client halves run
        since the last server half."""
        self._figures = {}
        if self.exact_diagnostics and self._seen and aggregate.included:
            self._figures["clipped_fraction"] = self._clipped / self._seen
        self._clipped = self._seen = 0
        if self.adaptive is None:
            return aggregate
        bit_sum = float(aggregate.sum[-1])
        stripped = aggregate.map(lambda values: values[:-1])
        if aggregate.discarded:
            return stripped
        self._figures["clipped_fraction_estimate"] = estimated_clipped_fraction(
            bit_sum, self.expected_clients)
        unclipped = bit_sum / self.expected_clients + 0.5
        self.clip_norm *= math.exp(
            -self.adaptive.clip_lr * (unclipped - self.adaptive.target_quantile))
        return stripped

    def broadcast(self) -> dict[str, float]:
        """The current S (it moves under adaptive clipping)."""
        return {"clip_norm": self.clip_norm}

    def load_broadcast(self, values: Mapping[str, float]) -> None:
        """Clip with the server's current S.

        Raises
        ------
        ValueError
            The server sent no S, or one no honest server sends: not > 0, NaN, or infinite
            where the configured S is finite (the client would stop clipping).
        """
        clip_norm = float(values.get("clip_norm", math.nan))
        if not 0 < clip_norm < math.inf and not (clip_norm == math.inf == self._initial):
            raise ValueError(f"the server's broadcast privacy.clip_norm must be > 0 and "
                             f"finite (the configured one is {self._initial}), got {clip_norm}")
        self.clip_norm = clip_norm

    def metrics(self) -> dict[str, Any]:
        """``clip_norm``: the S of the next round; the round's clipped fractions (see
        :meth:`server`)."""
        return {"clip_norm": self.clip_norm, **self._figures}

    def server_state(self) -> dict[str, Any]:
        """``{"clip_norm": S}`` where S adapts; empty for a fixed S (the config's)."""
        return {} if self.adaptive is None else {"clip_norm": self.clip_norm}

    def load_server_state(self, state: Mapping[str, Any]) -> None:
        """Continue adapting from :meth:`server_state`'s S (checked as a broadcast is)."""
        self.load_broadcast(state)

    def noise_std(self, update_noise: float, length: int, share: float = 1.0) -> torch.Tensor:
        """Per-coordinate std, float32 ``(length,)``, of a ``share`` of the noise a sum of
        this stage's outputs carries: ``z_u * S * sqrt(share)`` on the update coordinates
        and, with adaptive clipping, ``sigma_b * sqrt(share)`` on the bit (last).

        Parameters
        ----------
        update_noise : float
            z_u, the update's noise multiplier (see
            :func:`~privfed.privacy.accounting.adaptive_update_noise`).
        length : int
            The output length (bit included).
        share : float
            The fraction of the total variance (distributed DP: ``1 / K_min``).
        """
        update_std = update_noise * self.clip_norm if update_noise else 0.0
        std = torch.full((length,), update_std * math.sqrt(share))
        if self.adaptive is not None:
            std[-1] = self.adaptive.count_stddev * math.sqrt(share)
        return std


def update_noise_multiplier(noise_multiplier: float, clip: ClipStage) -> float:
    """z_u, the noise multiplier of the update coordinates for an accounted z: z itself,
    or with adaptive clipping the share left by the clip-count noise
    (:func:`~privfed.privacy.accounting.adaptive_update_noise`).

    Raises
    ------
    ValueError
        ``noise_multiplier < 0``; ``S = inf`` with noise; the count noise alone would
        spend the budget.
    """
    check_field("privacy.noise_multiplier", noise_multiplier)
    if math.isinf(clip.clip_norm) and noise_multiplier != 0:
        raise ValueError("privacy.clip_norm = inf is allowed only with noise_multiplier = 0")
    if clip.adaptive is None:
        return noise_multiplier
    return adaptive_update_noise(noise_multiplier, clip.adaptive.count_stddev)
