"""Empirical epsilon: canary auditing in one training run (Steinke, Nasr & Jagielski 2023).

``m`` canaries (out-of-distribution inputs with random labels) are drawn; each is inserted
into one client's data independently with probability 1/2; the federation is trained once;
each canary is scored (minus its loss under the final model: outsider view). The attacker
guesses IN for the ``k_plus`` highest scores, OUT for the ``k_minus`` lowest and abstains on
the rest. If the training is epsilon-DP for each canary, the number of correct guesses among
``r`` guesses is stochastically dominated by ``Binomial(r, e^eps / (1 + e^eps))``
(Steinke et al., Theorem 3.1), so every epsilon for which observing that many correct guesses
has probability below ``beta`` is rejected: the largest rejected epsilon is a lower bound
holding with confidence ``1 - beta``. The best split ``(k_plus, k_minus)`` is chosen from a
small grid, with ``beta`` divided among the grid's tests (Bonferroni), so the bound stays
valid. ``delta`` is handled by spending ``m * delta`` of ``beta`` (a conservative union
bound over the canaries' delta events).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom

from attacks.federation import TrainedFederation, predict_logits, train_federation
from attacks.membership import loss_scores
from privfed.config import ExperimentConfig
from privfed.federated import derive_seed

__all__ = ["epsilon_lower_bound", "make_canaries", "CanaryAudit", "canary_audit",
           "format_confidence"]

_CANARY_STREAM = 202
# Fractions of the canaries guessed on each side; a small grid (Bonferroni-corrected).
_GUESS_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)


def _one_split_bound(correct: int, guesses: int, beta: float) -> float:
    """Largest eps with ``P[Binomial(guesses, p(eps)) >= correct] <= beta`` (0 if none)."""
    if guesses == 0 or correct == 0:
        return 0.0

    def tail(eps: float) -> float:
        p = 1.0 / (1.0 + math.exp(-eps))
        return float(binom.sf(correct - 1, guesses, p)) - beta

    if tail(0.0) >= 0:
        return 0.0
    high = 1.0
    while tail(high) < 0 and high < 60:
        high *= 2
    if tail(high) < 0:
        return high
    return float(brentq(tail, 0.0, high, xtol=1e-6))


def epsilon_lower_bound(
    scores: np.ndarray, included: np.ndarray, *, beta: float = 0.05, delta: float = 0.0
) -> dict[str, Any]:
    """One-run lower bound on epsilon from canary scores (higher score = guess IN).

    Parameters
    ----------
    scores : numpy.ndarray
        One score per canary.
    included : numpy.ndarray
        Bool, whether each canary was actually inserted (each with probability 1/2).
    beta : float
        1 - confidence.
    delta : float
        The mechanism's delta; ``m * delta`` is taken from ``beta``.

    Returns
    -------
    dict
        ``epsilon_lower`` and the chosen guesses: ``guesses``, ``correct``, ``k_plus``,
        ``k_minus``; with a ``note`` (and bound 0) when ``m * delta >= beta`` leaves no
        confidence to spend.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    best: dict[str, Any] = {"epsilon_lower": 0.0, "guesses": 0, "correct": 0, "k_plus": 0,
                            "k_minus": 0}
    budget = beta - m * delta
    if budget <= 0:
        best["note"] = (f"vacuous: m * delta = {m * delta:g} >= beta = {beta}; use fewer "
                        f"canaries or a smaller delta")
        return best
    per_test = budget / len(_GUESS_FRACTIONS)
    order = np.argsort(-scores, kind="mergesort")
    for frac in _GUESS_FRACTIONS:
        k = max(1, int(frac * m))
        plus, minus = order[:k], order[m - k:]
        correct = int(included[plus].sum() + (~included[minus]).sum())
        eps = _one_split_bound(correct, 2 * k, per_test)
        if eps > best["epsilon_lower"]:
            best = {"epsilon_lower": eps, "guesses": 2 * k, "correct": correct,
                    "k_plus": k, "k_minus": k}
    return best


def make_canaries(
    shape: tuple[int, ...], num_classes: int, m: int, *, center: float, scale: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` out-of-distribution canaries: Gaussian noise ``center + scale * N(0, 1)`` per
    feature, with random labels (in high dimension they are nearly orthogonal to each other,
    so a model that trains on one barely generalises to another)."""
    rng = np.random.default_rng(seed)
    x = (center + scale * rng.standard_normal(size=(m, *shape))).astype(np.float32)
    y = rng.integers(0, num_classes, size=m).astype(np.int64)
    return x, y


@dataclass
class CanaryAudit:
    """Result of :func:`canary_audit`.

    Attributes
    ----------
    federation : TrainedFederation
    included : numpy.ndarray
        Which canaries were inserted.
    scores : numpy.ndarray
    bound : dict
        Output of :func:`epsilon_lower_bound`.
    epsilon_theory : float or None
        The mechanism's epsilon for the canaries' client (None: non-private, i.e. infinite).
    beta : float
        1 - confidence of the bound (the ``beta`` given to :func:`epsilon_lower_bound`).
    """

    federation: TrainedFederation
    included: np.ndarray
    scores: np.ndarray
    bound: dict[str, Any]
    epsilon_theory: float | None
    beta: float = 0.05

    @property
    def confidence(self) -> float:
        """Confidence ``1 - beta`` of the lower bound."""
        return 1.0 - self.beta

    @property
    def violation(self) -> bool:
        """Whether the measured lower bound exceeds the theoretical epsilon (a DP bug)."""
        return self.epsilon_theory is not None and self.bound["epsilon_lower"] > \
            self.epsilon_theory

    def summary(self) -> dict[str, object]:
        """Plain-data report, with a loud flag on a violation.

        Returns
        -------
        dict
            The bound's fields, ``confidence`` (``1 - beta``), ``epsilon_theory`` (inf when
            non-private), ``violation`` and, on a violation, a ``warning`` text.
        """
        out: dict[str, object] = {
            "view": "outsider",
            "canaries": len(self.scores),
            "inserted": int(self.included.sum()),
            **self.bound,
            "confidence": self.confidence,
            "epsilon_theory": self.epsilon_theory if self.epsilon_theory is not None
            else math.inf,
            "violation": self.violation,
        }
        if self.violation:
            out["warning"] = (
                "LIKELY DP BUG: the empirical lower bound on epsilon exceeds the theoretical "
                f"epsilon at {format_confidence(self.confidence)} confidence"
            )
        return out


def canary_audit(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    num_canaries: int = 200,
    client: int = 0,
    seed: int = 0,
    beta: float = 0.05,
    plain_aggregation: bool = False,
) -> CanaryAudit:
    """Insert canaries into client ``client``'s data, train ``config`` once, bound epsilon.

    The theoretical epsilon compared with the bound is the one for inserting records into
    that client: its record-level epsilon under local DP, and under user-level DP the
    epsilon for changing the data of a client that takes part either way (replace-one), since
    every canary sits in the same client.

    Parameters
    ----------
    config : ExperimentConfig
        Trained as is (privacy and secure aggregation included).
    x, y : numpy.ndarray
        The federation's ordinary training data.
    test : (numpy.ndarray, numpy.ndarray)
    num_classes : int
    num_canaries : int
        m; each is inserted with probability 1/2.
    client : int
        The client whose data receives the canaries.
    seed : int
    beta : float
        1 - confidence of the bound.
    plain_aggregation : bool
        Skip the secure aggregation (the canaries are scored on the final model, which it
        does not change); see :func:`~attacks.federation.build_federation`.
    """
    rng = np.random.default_rng(derive_seed(seed, _CANARY_STREAM))
    cx, cy = make_canaries(tuple(x.shape[1:]), num_classes, num_canaries,
                           center=float(x.mean()), scale=2.0 * float(x.std()),
                           seed=derive_seed(seed, _CANARY_STREAM, 1))
    included = rng.random(num_canaries) < 0.5
    fed = train_federation(config, x, y, test=test, num_classes=num_classes,
                           extra={client: (cx[included], cy[included])},
                           plain_aggregation=plain_aggregation)
    scores = loss_scores(predict_logits(fed, cx), cy)
    delta = config.privacy.delta if config.privacy.mechanism != "none" else 0.0
    bound = epsilon_lower_bound(scores, included, beta=beta, delta=delta)
    eps = fed.client_epsilon(client) if config.privacy.mechanism != "none" else None
    return CanaryAudit(fed, included, scores, bound, eps, beta=beta)


def format_confidence(confidence: float) -> str:
    """A confidence as a percentage: ``0.95`` -> ``"95%"``, ``0.999`` -> ``"99.9%"``.

    Parameters
    ----------
    confidence : float
        In [0, 1].

    Returns
    -------
    str
    """
    return f"{100 * confidence:.4g}%"
