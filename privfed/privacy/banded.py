"""DP-FTRL with banded matrix-factorisation noise (Choquette-Choo et al. 2023).

The prefix sums ``A x`` (A the lower-triangular all-ones T x T matrix) of the rounds' sums
of clipped updates are released as ``A C^-1 (C x + z)``: the mechanism adds Gaussian noise
``z`` (``N(0, (z S)^2)`` per entry) to ``C x`` and post-processes. C is lower-triangular,
Toeplitz and b-banded (Choquette-Choo, McMahan, Rush, Thakurta, "(Amplified) Banded Matrix
Factorization: A unified approach to private training", NeurIPS 2023): here with the
coefficients of the square root of A, ``c_k = binom(2k, k) / 4^k`` for ``k < b`` (the
banded square-root factorisation of Kalinin & Lampert, "Banded Square Root Matrix
Factorization for Differentially Private Model Training", 2024), not the optimised
bands of Choquette-Choo et al., which need a numerical optimisation per (T, b, schedule).

Streaming: round t releases ``x_t + w_t`` with ``w = C^-1 z``, i.e.
``w_t = z_t - sum_{k=1}^{b-1} c_k w_{t-k}`` (c_0 = 1), so the released increments sum to
``A x + A C^-1 z``; the stage keeps the last ``b - 1`` vectors w.

Sensitivity: C has non-negative entries, so a client whose updates (norm <= S) enter the
rounds P moves ``C x`` by at most ``S ||C 1_P||`` (all its updates aligned is the worst
case); with participations at least b rounds apart the columns do not overlap and this is
``S sqrt(sum over P of ||C[:, i]||^2)`` (Choquette-Choo et al. 2023, Theorem 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from privfed.privacy.clipping import ClipStage
from privfed.privacy.correlated import CorrelatedNoiseStage
from privfed.privacy.randomness import NoisePolicy

__all__ = ["BandedNoiseStage", "banded_sensitivity", "sqrt_coefficients"]

_BANDED_NOISE_STREAM = 0xBA4D


def sqrt_coefficients(bands: int) -> np.ndarray:
    """``c_k = binom(2k, k) / 4^k``, k < ``bands``: the first coefficients of the square
    root of the prefix-sum matrix (the power series of ``(1 - x)^(-1/2)``), float64.

    Raises
    ------
    ValueError
        ``bands < 1``.
    """
    if bands < 1:
        raise ValueError(f"privacy.bands must be >= 1, got {bands}")
    coefficients = np.ones(bands)
    for k in range(1, bands):
        coefficients[k] = coefficients[k - 1] * (2 * k - 1) / (2 * k)
    return coefficients


@lru_cache(maxsize=256)
def banded_sensitivity(rounds: int, period: int, bands: int) -> float:
    """L2 sensitivity of the first ``rounds`` rows of ``C x``, in units of S.

    A client takes part in rounds ``b, b + period, ...`` (see
    :func:`~privfed.privacy.ftrl.tree_sensitivity`); returns ``max over b of ||C_T 1_P||``
    with ``C_T`` the leading ``rounds x rounds`` block of C.

    Raises
    ------
    ValueError
        ``rounds < 0``, ``period < 1`` or ``bands < 1``.
    """
    if rounds < 0 or period < 1:
        raise ValueError(f"need rounds >= 0 and period >= 1, got {rounds}, {period}")
    coefficients = sqrt_coefficients(bands)
    worst = 0.0
    for offset in range(1, min(period, rounds) + 1):
        taken = np.zeros(rounds)
        taken[offset - 1::period] = 1.0
        column_sum = np.convolve(taken, coefficients)[:rounds]
        worst = max(worst, float(column_sum @ column_sum))
    return math.sqrt(worst)


class BandedNoiseStage(CorrelatedNoiseStage):
    """Server half of banded DP-FTRL: round t's sum leaves as ``x_t + w_t``, ``w = C^-1 z``.

    Round t's ``z_t`` comes from the noise policy's stream ``(banded stream, t)``; the last
    ``bands - 1`` vectors w are the stage's server state.

    Parameters
    ----------
    clip : ClipStage
        The pipeline's clip stage (fixed S).
    noise_multiplier : float
        z: ``z_t`` is ``N(0, (z S)^2)`` per coordinate.
    bands : int
        b >= 1 (1: independent noise every round, DP-FedAvg without amplification).
    noise : NoisePolicy

    Raises
    ------
    ValueError
        z < 0, ``bands < 1``, adaptive clipping, or ``S = inf`` with noise.
    """

    name = "banded_noise"

    def __init__(self, clip: ClipStage, noise_multiplier: float, bands: int,
                 noise: NoisePolicy) -> None:
        super().__init__(clip, noise_multiplier, noise)
        self.coefficients = sqrt_coefficients(bands)
        self.recent: list[torch.Tensor] = []
        """The last ``bands - 1`` vectors w, most recent first."""

    def increment(self, round_id: int, std: float, length: int) -> torch.Tensor:
        """``w_t = z_t - sum_k c_k w_{t-k}``."""
        w = self.noise.source(_BANDED_NOISE_STREAM, round_id).normal(std, length)
        for c, previous in zip(self.coefficients[1:], self.recent, strict=False):
            w -= float(c) * previous
        self.recent = [w, *self.recent][:len(self.coefficients) - 1]
        return w

    def server_state(self) -> dict[str, Any]:
        """The round and the last ``bands - 1`` vectors w (float32 tensors, newest first)."""
        return {"round": self.round, "recent": [w.clone() for w in self.recent]}

    def load_server_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`server_state`'s output.

        Raises
        ------
        ValueError
            More vectors than ``bands - 1``, or more than the rounds run.
        """
        round_id, recent = int(state["round"]), [w.clone() for w in state["recent"]]
        if len(recent) > min(round_id, len(self.coefficients) - 1):
            raise ValueError(f"banded state of round {round_id} holds {len(recent)} vectors, "
                             f"more than bands - 1 = {len(self.coefficients) - 1} or the rounds "
                             "run")
        self.round, self.recent = round_id, recent
