"""The outsider's membership experiment: a target federation, reference models, LiRA.

The target federation trains with the configuration on a random half of the candidate pool;
each reference federation trains by the same pipeline on its own subset. Every unit (the
target, each reference model) draws its randomness from the seed and its own index only, so
an audit can save each unit when it finishes and resume from there with the same result
(:mod:`attacks.runner`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from attacks.federation import (
    TrainedFederation,
    build_federation,
    predict_logits,
    train_federation,
)
from attacks.membership import (
    MembershipResult,
    evaluate_membership,
    lira_scores,
    logit_confidence,
    loss_scores,
)
from privfed.config import ExperimentConfig
from privfed.federated import derive_seed

__all__ = ["MembershipExperiment", "draw_membership", "membership_experiment",
           "outsider_attacks", "reference_confidence", "train_target"]

_REFERENCE_STREAM = 101


@dataclass
class MembershipExperiment:
    """A target federation, its candidates and the outsider-view attack results.

    Attributes
    ----------
    target : TrainedFederation
    members : numpy.ndarray
        Bool mask over the candidate pool: in the target's training data.
    results : dict of str to MembershipResult
        "loss", "lira_offline", "lira_online".
    """

    target: TrainedFederation
    members: np.ndarray
    results: dict[str, MembershipResult]


def membership_experiment(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    num_reference: int = 16,
    seed: int = 0,
    attach: Callable[[TrainedFederation], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> MembershipExperiment:
    """Train a target federation on a random half of ``x`` and attack it from its final model.

    The target uses ``config`` exactly (privacy and secure aggregation included). Each of the
    ``num_reference`` reference federations is trained by the same pipeline on another
    subset, chosen so that every candidate is IN exactly half of them (Carlini et al.'s
    design); the offline attack uses, per candidate, only the references that never saw it.
    References skip the cryptography (``plain_aggregation``), which does not change the
    trained model. Every draw is a function of ``seed`` and the model's index
    (:func:`draw_membership`, :func:`reference_confidence`), so each model can be trained on
    its own, in any order.

    Parameters
    ----------
    config : ExperimentConfig
    x, y : numpy.ndarray
        The candidate pool: the attacker's population, of which the target trains on half.
    test : (numpy.ndarray, numpy.ndarray)
        Evaluation data for the federations' servers.
    num_classes : int
    num_reference : int
        Even number of reference models R.
    seed : int
        Seed of the membership draws and of the reference federations.
    attach : callable, optional
        Called with the built, untrained target (e.g. to attach views to its server).
    progress : callable, optional
        Called with a short message after each trained model.
    """
    say = progress or (lambda _message: None)
    members, ref_in = draw_membership(len(y), num_reference, seed)
    target = train_target(config, x, y, members, test=test, num_classes=num_classes,
                          attach=attach)
    say("membership: target trained")
    ref_conf = np.empty((num_reference, len(y)))
    for r in range(num_reference):
        ref_conf[r] = reference_confidence(config, x, y, ref_in[r], test=test,
                                           num_classes=num_classes, seed=seed, index=r)
        say(f"membership: reference model {r + 1}/{num_reference} trained")
    results = outsider_attacks(predict_logits(target, x), y, members, ref_conf, ref_in)
    return MembershipExperiment(target, members, results)


def draw_membership(n: int, num_reference: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Who is IN the target's training data, and IN each reference model's.

    Parameters
    ----------
    n : int
        Size of the candidate pool.
    num_reference : int
        Even number of reference models R >= 2.
    seed : int

    Returns
    -------
    members : numpy.ndarray
        ``(n,)`` bool, a random half of the pool.
    reference_in : numpy.ndarray
        ``(R, n)`` bool; each candidate is IN exactly R/2 references.
    """
    if num_reference < 2 or num_reference % 2:
        raise ValueError(f"num_reference must be an even number >= 2, got {num_reference}")
    rng = np.random.default_rng(derive_seed(seed, _REFERENCE_STREAM))
    members = np.zeros(n, dtype=bool)
    members[rng.permutation(n)[: n // 2]] = True
    reference_in = np.argsort(rng.random((num_reference, n)), axis=0) < num_reference // 2
    return members, reference_in


def train_target(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    members: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    attach: Callable[[TrainedFederation], None] | None = None,
) -> TrainedFederation:
    """Train ``config`` exactly (its seed, privacy, secure aggregation) on ``x[members]``.

    Parameters
    ----------
    config : ExperimentConfig
    x, y : numpy.ndarray
        The candidate pool.
    members : numpy.ndarray
        Bool mask of the target's training examples.
    test : (numpy.ndarray, numpy.ndarray)
    num_classes : int
    attach : callable, optional
        Called with the built, untrained target (e.g. to attach views to its server).
    """
    target = build_federation(config, x[members], y[members], test=test,
                              num_classes=num_classes)
    if attach is not None:
        attach(target)
    target.history = target.server.fit(config.federation.rounds)
    return target


def reference_confidence(
    config: ExperimentConfig,
    x: np.ndarray,
    y: np.ndarray,
    included: np.ndarray,
    *,
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    seed: int,
    index: int,
) -> np.ndarray:
    """Train reference model ``index`` on ``x[included]``; its confidences on all of ``x``.

    Its seed is derived from ``(seed, index)`` alone, so it is the same model whether or
    not the others were trained before it.

    Returns
    -------
    numpy.ndarray
        ``(len(x),)`` logit-scaled confidences (:func:`logit_confidence`).
    """
    ref = train_federation(config, x[included], y[included], test=test,
                           num_classes=num_classes, plain_aggregation=True,
                           seed=derive_seed(seed, _REFERENCE_STREAM, index))
    return logit_confidence(predict_logits(ref, x), y)


def outsider_attacks(
    logits: np.ndarray,
    y: np.ndarray,
    members: np.ndarray,
    reference_conf: np.ndarray,
    reference_in: np.ndarray,
) -> dict[str, MembershipResult]:
    """Loss threshold, LiRA offline and LiRA online against the target's final model.

    Parameters
    ----------
    logits : numpy.ndarray
        ``(N, classes)`` the target model's logits on the candidates.
    y : numpy.ndarray
        The candidates' labels.
    members : numpy.ndarray
        ``(N,)`` bool ground truth.
    reference_conf, reference_in : numpy.ndarray
        ``(R, N)`` the reference models' confidences and training masks.

    Returns
    -------
    dict of str to MembershipResult
        "loss", "lira_offline", "lira_online".
    """
    conf = logit_confidence(logits, y)
    labels = members.astype(np.int64)
    return {
        "loss": evaluate_membership(labels, loss_scores(logits, y), attack="loss threshold"),
        "lira_offline": evaluate_membership(
            labels, lira_scores(conf, reference_conf, reference_in, online=False),
            attack="LiRA offline"),
        "lira_online": evaluate_membership(
            labels, lira_scores(conf, reference_conf, reference_in, online=True),
            attack="LiRA online"),
    }
