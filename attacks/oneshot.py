"""User-level empirical privacy in one training run (Andrew et al., ICLR 2024).

Andrew, Kairouz, Oh, Oprea, McMahan and Suriyakumar, "One-shot Empirical Privacy Estimation
for Federated Learning", ICLR 2024. ``k`` canary clients join the federation; each, whenever
it is sampled, sends the update ``S u_c`` (its own fixed random unit direction ``u_c``,
uniform on the sphere of R^d, at the clip norm S) instead of training. After the run, the
outsider (who holds the released final model and the initial one) scores each canary by the
cosine between the model's total change ``Delta = theta_T - theta_0`` and ``u_c``. A
direction never inserted has a cosine with any fixed vector of mean 0 and variance exactly
``1/d``; in high dimension an inserted canary's cosine is Gaussian with the same spread
and a shifted mean (the paper's Theorem 3.2, for the Gaussian mechanism). The estimate is
the epsilon at which ``N(0, 1/d)`` and ``N(mu, 1/d)`` are (epsilon, delta)-indistinguishable,
``mu`` the inserted canaries' mean cosine: the Gaussian mechanism of noise multiplier
``1 / (mu sqrt(d))`` (``mu sqrt(d)``-GDP, Dong, Roth and Su 2022), the privacy one canary
client had as the final model shows it. The spread is the null's exact ``1/sqrt(d)`` rather
than the canaries' sample spread, whose error over a few dozen canaries (about
``1/sqrt(2k)`` relative) would dominate the estimate; the sample spread is reported beside
it, and one far from ``1/sqrt(d)`` says the Gaussian approximation does not fit.

It is an estimate for the user-level (one client added or removed) guarantee, computed in
the same run as the model, not a bound: a mechanism that is epsilon-DP gives estimates at or
below epsilon up to the estimate's sampling error (and the model's own signal makes it
conservative: it enlarges ``||Delta||``); one whose noise is off gives estimates far above
any DP epsilon. Where the noise dominates the final model, a tight mechanism's estimate
sits at its epsilon, so the flag compares the estimate's one-sided lower confidence limit
with the theory, not the point estimate. The record-level Steinke-Nasr-Jagielski lower bound
(:mod:`attacks.audit`) stays beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from attacks.federation import TrainedFederation, build_federation
from privfed.config import ExperimentConfig
from privfed.federated import Pipeline, derive_seed
from privfed.federated.stages import UpdateStage

__all__ = ["CanaryUpdates", "OneShotAudit", "canary_directions", "gaussian_epsilon",
           "gaussian_hockey_stick", "one_shot_audit", "one_shot_epsilon"]

_ONE_SHOT_STREAM = 203
_LARGEST_EPSILON = 512.0


def canary_directions(dim: int, count: int, seed: int) -> np.ndarray:
    """``count`` independent directions uniform on the unit sphere of R^``dim``.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(count, dim)``, each row of norm 1 (normalised standard normal
        vectors, Muller 1959).
    """
    z = np.random.default_rng(seed).standard_normal((count, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


class CanaryUpdates(UpdateStage):
    """First stage of an audited federation: a canary client's update is its direction.

    The client half replaces the trained update of a canary client (a key of
    ``directions``) by ``scale * u_c``; every other client's update passes unchanged. The
    server half changes nothing, so the configuration's own stages (clipping, noise,
    compression, secure aggregation) treat the canary like any client.

    Parameters
    ----------
    directions : mapping of int to numpy.ndarray
        Canary client id to its unit direction, float64 ``(d,)``.
    scale : float
        The canary update's norm (the configured clip norm S).
    """

    name = "canary_updates"

    def __init__(self, directions: Mapping[int, np.ndarray], scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"the canary updates' norm must be > 0, got {scale}")
        self.updates = {c: torch.from_numpy(scale * np.asarray(u)).float()
                        for c, u in directions.items()}

    def client(self, round_id: int, client_id: int, vector: torch.Tensor) -> torch.Tensor:
        """``scale * u_c`` for a canary client, else ``vector`` unchanged."""
        update = self.updates.get(client_id)
        if update is None:
            return vector
        if update.shape != vector.shape:
            raise ValueError(f"canary direction of {update.numel()} coordinates, the update "
                             f"has {vector.numel()}")
        return update.clone()


def gaussian_hockey_stick(epsilon: float, p: tuple[float, float],
                          q: tuple[float, float]) -> float:
    """``delta(epsilon) = sup_E P(E) - e^epsilon Q(E)`` for one-dimensional Gaussians
    ``P = N(mean_p, sd_p^2)`` and ``Q = N(mean_q, sd_q^2)``, exactly.

    The supremum is over the set where the privacy loss ``log p(x)/q(x) = a x^2 + b x + c``
    exceeds epsilon: the outside or the inside of the quadratic's two roots (one side of
    one root for equal variances), whose probabilities are normal CDFs.

    Parameters
    ----------
    epsilon : float
    p, q : (float, float)
        ``(mean, standard deviation)``, standard deviations > 0.

    Returns
    -------
    float
        In [0, 1].
    """
    (mp, sp), (mq, sq) = p, q
    a = 1 / (2 * sq**2) - 1 / (2 * sp**2)
    b = mp / sp**2 - mq / sq**2
    c = mq**2 / (2 * sq**2) - mp**2 / (2 * sp**2) + math.log(sq / sp) - epsilon
    intervals = _positive_set(a, b, c)

    def mass(mean: float, sd: float) -> float:
        return sum(norm.cdf(hi, mean, sd) - norm.cdf(lo, mean, sd) for lo, hi in intervals)

    return max(0.0, mass(mp, sp) - math.exp(epsilon) * mass(mq, sq))


def _positive_set(a: float, b: float, c: float) -> list[tuple[float, float]]:
    """The intervals of x where ``a x^2 + b x + c > 0``."""
    if abs(a) < 1e-300:
        if b == 0:
            return [(-math.inf, math.inf)] if c > 0 else []
        root = -c / b
        return [(root, math.inf)] if b > 0 else [(-math.inf, root)]
    disc = b * b - 4 * a * c
    if disc <= 0:
        return [(-math.inf, math.inf)] if a > 0 else []
    r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
    return [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]


def gaussian_epsilon(p: tuple[float, float], q: tuple[float, float], delta: float) -> float:
    """The smallest epsilon at which ``P`` and ``Q`` (``(mean, sd)`` Gaussians) are
    (epsilon, delta)-indistinguishable in both directions.

    Returns
    -------
    float
        >= 0; ``inf`` when no finite epsilon reaches ``delta`` (e.g. a zero spread).
    """

    def excess(eps: float) -> float:
        return max(gaussian_hockey_stick(eps, p, q), gaussian_hockey_stick(eps, q, p)) - delta

    if excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        if high >= _LARGEST_EPSILON:  # e^epsilon would overflow a float beyond it
            return math.inf
        high *= 2
    return float(brentq(excess, 0.0, high, xtol=1e-9))


def one_shot_epsilon(cosines: np.ndarray, dim: int, delta: float,
                     confidence: float = 0.95) -> dict[str, float]:
    """Andrew et al.'s estimate from the inserted canaries' ``cosines`` with the model's
    change: the epsilon of ``N(mu, 1/dim)`` against ``N(0, 1/dim)`` (see the module), and
    the same at the one-sided ``confidence`` lower limit of ``mu``.

    The mean of k canaries' cosines has standard error ``s / sqrt(k)`` (s their sample
    spread, about ``1/sqrt(d)``): with 64 canaries the estimate's own spread is about 1/8 of
    the GDP parameter ``mu sqrt(d)``, half an epsilon near epsilon 8. The lower limit
    ``mu - z_confidence s / sqrt(k)`` is what can be said to exceed a theoretical epsilon at
    that confidence.

    Parameters
    ----------
    cosines : numpy.ndarray
        float, ``(k,)``, k >= 2.
    dim : int
        d, the model's number of parameters.
    delta : float
    confidence : float, default 0.95
        Of the lower limit, in (0, 1).

    Returns
    -------
    dict
        ``epsilon_estimate`` and ``epsilon_lower`` (at ``confidence``), the canaries'
        ``cosine_mean`` and ``cosine_std``, and ``null_std`` (``1/sqrt(d)``, what
        ``cosine_std`` should be near).
    """
    cosines = np.asarray(cosines, dtype=np.float64)
    if cosines.size < 2:
        raise ValueError(f"the estimate needs at least 2 canaries, got {cosines.size}")
    mean, spread, null = float(cosines.mean()), float(cosines.std(ddof=1)), 1 / math.sqrt(dim)
    lower = mean - float(norm.ppf(confidence)) * spread / math.sqrt(cosines.size)
    return {"epsilon_estimate": gaussian_epsilon((mean, null), (0.0, null), delta),
            "epsilon_lower": gaussian_epsilon((max(lower, 0.0), null), (0.0, null), delta),
            "confidence": confidence, "cosine_mean": mean, "cosine_std": spread,
            "null_std": null}


@dataclass
class OneShotAudit:
    """Result of :func:`one_shot_audit`.

    Attributes
    ----------
    federation : TrainedFederation
        Trained with the canary clients (the last ``canaries`` client ids).
    cosines : numpy.ndarray
        float64 ``(k,)``: each canary's cosine with the final model's change.
    unobserved : numpy.ndarray
        float64 ``(k,)``: fresh directions' cosines (the null, for a look at the fit).
    estimate : dict
        :func:`one_shot_epsilon`'s output.
    epsilon_theory : float or None
        The run's user-level epsilon (add or remove one client, outsider view: central,
        distributed or DP-FTRL); None when the configuration is not user-level DP (infinite
        for the canary).
    """

    federation: TrainedFederation
    cosines: np.ndarray
    unobserved: np.ndarray
    estimate: dict[str, float]
    epsilon_theory: float | None

    def summary(self) -> dict[str, Any]:
        """Plain data: the view, the canaries, the estimate and its lower limit, the
        theoretical epsilon of the same unit (inf where the mechanism gives the client
        none), and a warning where the lower limit exceeds it."""
        theory = self.epsilon_theory if self.epsilon_theory is not None else math.inf
        out: dict[str, Any] = {
            "view": "outsider", "unit": "client", "canaries": len(self.cosines),
            **self.estimate,
            "unobserved_cosine_std": float(self.unobserved.std(ddof=1)),
            "epsilon_theory": theory,
            "exceeds_theory": self.estimate["epsilon_lower"] > theory,
        }
        if out["exceeds_theory"]:
            out["warning"] = (
                f"LIKELY DP BUG: the one-run user-level estimate exceeds the theoretical "
                f"user-level epsilon at {100 * self.estimate['confidence']:.4g}% confidence")
        return out


def one_shot_audit(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    canaries: int = 32,
    seed: int = 0,
    confidence: float = 0.95,
    plain_aggregation: bool = False,
) -> OneShotAudit:
    """Train ``config`` once with ``canaries`` extra canary clients; estimate user-level
    epsilon from the final model (:func:`one_shot_epsilon`).

    The federation has ``data.num_clients + canaries`` clients (the canaries are the last
    ids; their partitions are trained on and then replaced by their directions), sampled,
    clipped, noised and aggregated as the configuration says; its theoretical epsilon is
    that federation's.

    Parameters
    ----------
    config : ExperimentConfig
    x, y : numpy.ndarray
        Training examples and labels.
    test : (numpy.ndarray, numpy.ndarray)
    num_classes : int
    canaries : int, default 32
        k >= 2.
    seed : int
        Seed of the directions (and, through the config, of the run).
    confidence : float, default 0.95
        Of the estimate's lower limit (:func:`one_shot_epsilon`).
    plain_aggregation : bool
        See :func:`attacks.federation.build_federation`.
    """
    if canaries < 2:
        raise ValueError(f"audit.one_shot_canaries must be >= 2, got {canaries}")
    real = config.data.num_clients
    audited = dataclasses.replace(config, data=dataclasses.replace(
        config.data, num_clients=real + canaries))
    fed = build_federation(audited, x, y, test=test, num_classes=num_classes,
                           plain_aggregation=plain_aggregation)
    server = fed.server
    dim = server.weights.numel()
    directions = canary_directions(dim, 2 * canaries, derive_seed(seed, _ONE_SHOT_STREAM))
    inserted, fresh = directions[:canaries], directions[canaries:]
    stage = CanaryUpdates({real + i: u for i, u in enumerate(inserted)},
                          scale=config.privacy.clip_norm)
    pipeline = Pipeline([stage, *server.pipeline.stages])
    server.pipeline = server.engine.pipeline = pipeline
    initial = server.weights.double().clone()
    fed.history = server.fit(config.federation.rounds)
    change = (server.weights.double() - initial).numpy()
    scale = max(float(np.linalg.norm(change)), 1e-300)
    cosines, unobserved = inserted @ change / scale, fresh @ change / scale
    delta = config.privacy.delta
    estimate = one_shot_epsilon(cosines, dim, delta, confidence)
    theory = fed.epsilon if config.privacy.user_level else None
    return OneShotAudit(fed, cosines, unobserved, estimate, theory)
