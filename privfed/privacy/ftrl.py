"""User-level DP-FTRL with tree aggregation (Kairouz et al. 2021) for unsampled federations.

Kairouz, McMahan, Song, Thakkar, Thakurta, Xu, "Practical and Private (Deep) Learning
without Sampling or Shuffling", ICML 2021, Algorithm 1 with the binary-tree aggregation of
Dwork et al. 2010 / Chan et al. 2011 ("continual counting"): the server releases the prefix
sums ``s_t = x_1 + ... + x_t`` of the rounds' sums of clipped client updates, each with the
noise of the dyadic tree nodes that cover ``[1, t]`` (one node per set bit of t, every
node ``N(0, (z S)^2)`` per coordinate, drawn once and reused by every later prefix sum).

:class:`TreeNoiseStage`'s server half turns the noisy prefix sums into per-round increments:
round t's sum leaves it as ``x_t + n_t - n_{t-1}`` (``n_t`` the tree noise of ``s_t``), so a
server step ``w <- w + eta * increment / m`` (FedAvg, no momentum) yields exactly the FTRL
form ``w_t = w_0 + eta * (s_t + n_t) / m``. Any other server optimizer only post-processes
the same noisy prefix sums.

The honest, simple version: one tree over all rounds, no restarts, no tree completion and no
Honaker (variance-reducing) estimator.

Accounting (:class:`FTRLPolicy`): the tree's nodes completed by round T, released together,
are one Gaussian mechanism; a client moves a node by at most ``c * S`` where c is the
number of its participations inside the node's interval, so its L2 sensitivity is
``S * sqrt(sum over nodes of c^2)`` (:func:`tree_sensitivity`; all contributions aligned is
the worst case). With one participation per client this is ``S * sqrt(D)``,
``D = floor(log2 T) + 1`` levels, what dp-accounting's ``SingleEpochTreeAggregationDpEvent``
accounts (its RDP accountant; Kairouz et al. Appendix D). The epsilon is that of one
Gaussian release with noise multiplier ``z / sensitivity(T)`` (the sensitivity in units of
S), by the configured accountant ("pld": dp-accounting's PLD accountant on a
``GaussianDpEvent``). The inputs may be chosen adaptively (each round's updates depend on
the released models): Kairouz et al. 2021 (Appendix D) and Denisov et al. 2022 show the
guarantee holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from privfed.config.fields import check_field
from privfed.federated.policy import ParticipationPolicy
from privfed.privacy.accounting import GaussianEvent, calibrate_noise, gaussian_epsilon
from privfed.privacy.clipping import ClipStage
from privfed.privacy.correlated import CorrelatedNoiseStage
from privfed.privacy.ledger import ParticipationLedger, RoundLedgerMixin
from privfed.privacy.randomness import NoisePolicy

__all__ = ["FTRLPolicy", "TreeNoiseStage", "calibrate_ftrl_noise", "ftrl_epsilon",
           "tree_sensitivity"]

_TREE_NOISE_STREAM = 0x7EE0


@lru_cache(maxsize=256)
def tree_sensitivity(rounds: int, period: int) -> float:
    """L2 sensitivity of the tree's nodes completed by round ``rounds``, in units of S.

    A client takes part in rounds ``b, b + period, b + 2 period, ...`` (a public cyclic
    schedule; ``period = 1``: every round). Node ``[i 2^h + 1, (i + 1) 2^h]`` of level h is
    completed once ``(i + 1) 2^h <= rounds``; a client that took part c times inside it moves
    its sum by at most ``c S``. Returns ``sqrt(max over b of sum over nodes of c^2)``.

    Parameters
    ----------
    rounds : int
        T >= 0, the rounds released so far.
    period : int
        >= 1, the rounds between two participations of a client.

    Returns
    -------
    float
        0 for T = 0; ``sqrt(floor(log2 T) + 1)`` when ``period >= T`` (one participation).

    Raises
    ------
    ValueError
        ``rounds < 0`` or ``period < 1``.
    """
    if rounds < 0 or period < 1:
        raise ValueError(f"need rounds >= 0 and period >= 1, got {rounds}, {period}")
    worst = 0
    for offset in range(1, min(period, rounds) + 1):
        taken = np.zeros(rounds, dtype=np.int64)
        taken[offset - 1::period] = 1
        total, width = 0, 1
        while width <= rounds:
            nodes = rounds // width
            counts = taken[:nodes * width].reshape(nodes, width).sum(axis=1)
            total += int((counts ** 2).sum())
            width *= 2
        worst = max(worst, total)
    return math.sqrt(worst)


def ftrl_epsilon(
    noise_multiplier: float, sensitivity: float, delta: float, accountant: str = "pld"
) -> float:
    """User-level epsilon at ``delta`` of one Gaussian release with noise multiplier
    ``z / sensitivity`` (the tree's nodes, or the banded ``C x + z``, released so far).

    Parameters
    ----------
    noise_multiplier : float
        z, each noise entry's std as a multiple of S.
    sensitivity : float
        In units of S (:func:`tree_sensitivity`).
    delta : float
    accountant : {"pld", "prv", "rdp"}

    Returns
    -------
    float
        0 when nothing was released (sensitivity 0); ``inf`` with z = 0.
    """
    if sensitivity == 0:
        return 0.0
    return gaussian_epsilon([GaussianEvent(noise_multiplier / sensitivity)], delta, accountant)


def calibrate_ftrl_noise(
    epsilon: float, delta: float, sensitivity: float, accountant: str = "pld"
) -> float:
    """The noise multiplier z whose :func:`ftrl_epsilon` at ``sensitivity`` is in
    ``[0.99, 1] * epsilon``: the Gaussian's z for one release, times the sensitivity.

    Raises
    ------
    ValueError
        The target cannot be reached.
    """
    return calibrate_noise(epsilon, delta, 1.0, 1, accountant) * sensitivity


class TreeNoiseStage(CorrelatedNoiseStage):
    """Server half of DP-FTRL: the tree's noise, released as prefix-sum increments.

    Round t draws one new node, the one ending at t (level = the lowest set bit of t), from
    the noise policy's stream ``(tree stream, t)``; the nodes of levels below it leave the
    prefix. The nodes of ``n_t`` (one per set bit of t) are the stage's server state.

    Parameters
    ----------
    clip : ClipStage
        The pipeline's clip stage (fixed S: no adaptive clipping).
    noise_multiplier : float
        z: each node is ``N(0, (z S)^2)`` per coordinate.
    noise : NoisePolicy

    Raises
    ------
    ValueError
        z < 0, adaptive clipping, or ``S = inf`` with noise.
    """

    name = "tree_noise"

    def __init__(self, clip: ClipStage, noise_multiplier: float, noise: NoisePolicy) -> None:
        super().__init__(clip, noise_multiplier, noise)
        self.nodes: dict[int, torch.Tensor] = {}
        """The noise of the nodes that cover ``[1, round]``, by level."""

    def increment(self, round_id: int, std: float, length: int) -> torch.Tensor:
        """``n_t - n_{t-1}``: the new node minus the nodes of the levels below it."""
        level = (round_id & -round_id).bit_length() - 1
        new = self.noise.source(_TREE_NOISE_STREAM, round_id).normal(std, length)
        increment = new.clone()
        for below in range(level):
            increment -= self.nodes.pop(below)
        self.nodes[level] = new
        return increment

    def prefix_noise(self) -> torch.Tensor | None:
        """``n_t``, the noise of the current prefix sum (None before noise was drawn)."""
        if not self.nodes:
            return None
        return torch.stack(list(self.nodes.values())).sum(dim=0)

    def server_state(self) -> dict[str, Any]:
        """The round and the noise of the prefix's nodes (float32 tensors by level)."""
        return {"round": self.round,
                "nodes": {str(level): node.clone() for level, node in self.nodes.items()}}

    def load_server_state(self, state: Mapping[str, Any]) -> None:
        """Continue the tree from :meth:`server_state`'s output.

        Raises
        ------
        ValueError
            The levels are not the set bits of the round.
        """
        round_id = int(state["round"])
        nodes = {int(level): node.clone() for level, node in state["nodes"].items()}
        bits = {h for h in range(round_id.bit_length()) if round_id >> h & 1}
        if self.noise_multiplier and set(nodes) != bits:
            raise ValueError(f"tree state of round {round_id} holds levels {sorted(nodes)}, "
                             f"expected {sorted(bits)}")
        self.round, self.nodes = round_id, nodes

    def metrics(self) -> dict[str, Any]:
        """``tree_nodes``: how many noise nodes the current prefix sum holds."""
        return {"tree_nodes": len(self.nodes)}


class FTRLPolicy(RoundLedgerMixin, ParticipationPolicy):
    """DP-FTRL's accounting: every released round is counted; the epsilon after t rounds
    is one Gaussian release with noise multiplier ``z / sensitivity(t)``
    (:func:`ftrl_epsilon`).

    The headline epsilon holds against an outsider who sees the released models and knows
    the public schedule; the server (trusted, as for "central") sees the un-noised sums.

    Parameters
    ----------
    noise_multiplier : float
        z of the noise entries (tree nodes, or the banded factorisation's z).
    sensitivity : callable
        ``rounds -> float``: the L2 sensitivity, in units of S, of what the first ``rounds``
        rounds released (:func:`tree_sensitivity` or
        :func:`~privfed.privacy.banded.banded_sensitivity` with the schedule bound).
    delta : float
    noise : NoisePolicy
    accountant : {"pld", "prv", "rdp"}
    budget : float or None
        ``privacy.epsilon``: no release may take the epsilon above it.
    """

    epsilon_against = "outsider"

    def __init__(self, *, noise_multiplier: float, sensitivity: Callable[[int], float],
                 delta: float, noise: NoisePolicy, accountant: str = "pld",
                 budget: float | None = None) -> None:
        check_field("privacy.noise_multiplier", noise_multiplier)
        self.noise_multiplier = noise_multiplier
        self.sensitivity = sensitivity
        self.delta = delta
        self.noise = noise

        def epsilon_after(rounds: int) -> float:
            return ftrl_epsilon(noise_multiplier, sensitivity(rounds), delta, accountant)

        self.rounds_spend = ParticipationLedger(1, epsilon_after, budget)

    def epsilon(self) -> float:
        """The user-level epsilon spent so far, at :attr:`delta`."""
        return self.rounds_spend.epsilon(0)

    def metrics(self) -> dict[str, Any]:
        """``epsilon``, ``epsilon_against``, ``delta``, ``noise_multiplier``, the
        ``ftrl_sensitivity`` so far (in units of S) and ``noise`` (provenance)."""
        rounds = int(self.rounds_spend.counts[0])
        return {
            "epsilon": self.epsilon(),
            "epsilon_against": self.epsilon_against,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "ftrl_sensitivity": self.sensitivity(rounds),
            "noise": self.noise.label,
        }
